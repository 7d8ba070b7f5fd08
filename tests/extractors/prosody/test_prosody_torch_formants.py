"""torch prosody backend: formant chain (resampling, LPC, roots) and formant amplitudes,
and the cached spectral constants, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from atrisk.extractors.prosody import torch_backend as pt

SR = 16000
LPC_SR = 11000


def pair(freq: float, bw: float, rate: float = LPC_SR) -> np.ndarray:
    """Quadratic ``z^2 - 2 r cos(t) z + r^2`` with its roots at ``freq`` / ``bw`` (Hz)."""
    r = math.exp(-math.pi * bw / rate)
    t = 2 * math.pi * freq / rate
    return np.array([1.0, -2 * r * math.cos(t), r * r])


def filter_from_poly(poly: np.ndarray) -> torch.Tensor:
    """``[1, a_1, ..., a_p]`` whose openSMILE polynomial ``z^p - a_1 z^(p-1) - ...`` is ``poly``."""
    return torch.tensor(np.concatenate([[1.0], -poly[1:]]), dtype=torch.float64)


def test_lpc_formants_are_the_roots_of_the_negated_polynomial():
    # z^11 - a_1 z^10 - ... = (700 Hz / 60 Hz pair)(2500 / 150)(1200 / 90)(5480 / 100)
    # (z - 0.5) (z + 0.9) (z - 0.2): three pairs in range (sorted by frequency), one pair
    # above 5450 Hz and three real roots (0 Hz, 5500 Hz, 0 Hz) that do not count.
    poly = np.array([1.0])
    for p in (pair(700, 60), pair(2500, 150), pair(1200, 90), pair(5480, 100),
              np.array([1.0, -0.5]), np.array([1.0, 0.9]), np.array([1.0, -0.2])):
        poly = np.convolve(poly, p)
    assert poly.size == 12  # order 11, as eGeMAPS
    got = pt._lpc_formants(filter_from_poly(poly)).numpy()
    np.testing.assert_allclose(got, [700, 60, 1200, 90, 2500, 150], rtol=1e-6)


def test_lpc_formants_reflect_roots_into_the_unit_circle_and_nan_when_missing():
    # a root pair outside the unit circle (|r| = 1.05) counts with bandwidth ln(1.05) fs / pi;
    # only two pairs in range: F3 is NaN.
    r, t = 1.05, 2 * math.pi * 1000 / LPC_SR
    outside = np.array([1.0, -2 * r * math.cos(t), r * r])
    poly = np.convolve(np.convolve(outside, pair(300, 80)), np.array([1.0, -0.1]))
    got = pt._lpc_formants(filter_from_poly(poly)).numpy()
    np.testing.assert_allclose(got[:4], [300, 80, 1000, math.log(1.05) * LPC_SR / math.pi],
                               rtol=1e-6)
    assert np.isnan(got[4:]).all()


def test_levinson_on_an_ar1_autocorrelation():
    # r_k = rho^k is the autocorrelation of an AR(1) process: A(z) = 1 - rho z^-1
    rho = 0.8
    acf = torch.tensor([rho ** k for k in range(12)], dtype=torch.float64)
    np.testing.assert_allclose(pt._levinson(acf).numpy(), [1, -rho] + [0] * 10, atol=1e-12)
    np.testing.assert_array_equal(pt._levinson(torch.zeros(12, dtype=torch.float64)).numpy(),
                                  [1] + [0] * 11)


def test_resampled_lpc_frame_is_the_padded_windowed_frame_at_11khz():
    # openSMILE's cTransformFFT pads the 320 samples symmetrically (96 zeros each side)
    # to 512; cSpecResample evaluates DFT bins 0..109 as a 352-point inverse DFT and
    # keeps 220 samples: for a 1 kHz tone that is the padded, Hamming-windowed tone at
    # 11 kHz (sample i at 16 kHz position 16 i / 11 - 96 of the frame) plus the frame's
    # DC / 512 (the DC bin is not halved). Checked against openSMILE's own
    # gemapsv01b_outpR level on speech while writing this (max rel. error 5e-5).
    n = pt.WIN_SHORT
    x = np.sin(2 * np.pi * 1000 * np.arange(n) / SR)
    w = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(n) / (n - 1))
    spec = np.fft.rfft(np.pad(x * w, (96, 96)))
    z = np.zeros(177, complex)
    z[0], z[1:110] = 2 * spec[0], spec[1:110]
    y = np.fft.irfft(z, 352)[:220] * 352 / 512
    i = np.arange(75, 220)  # past the window's onset at i = 66
    s = i * SR / LPC_SR - 96
    expect = ((0.54 - 0.46 * np.cos(2 * np.pi * s / (n - 1))) * np.sin(2 * np.pi * 1000 * s / SR)
              + (x * w).sum() / 512)
    assert np.abs(y[75:] - expect).max() < 0.03
    assert np.abs(y[:60]).max() < 0.05  # the padding
    # _formants runs exactly this chain: same LPC roots as computed from y by numpy
    acf = np.array([(y[: 220 - k] * y[k:]).sum() for k in range(12)])
    ref = pt._lpc_formants(pt._levinson(torch.tensor(acf))).numpy()
    sig = torch.tensor(np.concatenate([x, np.zeros(960)]), dtype=torch.float32)[None]
    got = pt._formants(sig, 2, torch.tensor([[True, False]]))[0].numpy()
    np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(ref), rtol=1e-4)


def harmonic_frame(f0: float, amps: dict[int, float], base: float = 0.01) -> np.ndarray:
    """60 ms of harmonics ``h * f0`` (amplitude ``amps.get(h, base)``) below 4 kHz."""
    t = np.arange(pt.WIN_LONG) / SR
    hs = range(1, int(4000 // f0) + 1)
    return sum(amps.get(h, base) * np.cos(2 * np.pi * h * f0 * t) for h in hs)


def test_formant_amplitudes_are_the_strongest_harmonic_near_each_formant():
    # F0 = 125 Hz: harmonics on exact 15.625 Hz bins of the 1024-point spectrum, so the
    # peak and its parabolic interpolation are the harmonic's amplitude (times the
    # window's sum, which cancels against H1 = 1).
    # F1 = 500 Hz -> 400-600 Hz holds only h4 (amp 2): +6.02 dB;
    # F2 = 1500 Hz -> 1200-1800 Hz holds h10..h14, strongest h12 (0.5): -6.02 dB;
    # F3 = 2500 Hz -> 2000-3000 Hz holds h16..h24, strongest h20 (0.25): -12.04 dB.
    fr = harmonic_frame(125.0, {1: 1.0, 4: 2.0, 12: 0.5, 20: 0.25}, base=0.1)
    fr = torch.tensor(np.stack([fr, fr]), dtype=torch.float32)
    period = torch.full((2,), SR / 125.0)
    formants = torch.tensor([[500, 80, 1500, 90, 2500, 120],
                             [500, 80, 1500, 90, float("nan"), float("nan")]])
    out = pt._harmonics(pt._gauss_mag(pt._gauss_window(fr)), SR / period, formants)
    def db(v: float) -> float:
        return 20 * math.log10(v)

    np.testing.assert_allclose(out["F1amplitudeLogRelF0"].numpy(), [db(2)] * 2, atol=0.05)
    np.testing.assert_allclose(out["F2amplitudeLogRelF0"].numpy(), [db(0.5)] * 2, atol=0.05)
    np.testing.assert_allclose(out["F3amplitudeLogRelF0"][0].item(), db(0.25), atol=0.05)
    # no F3: its amplitude is 0 (undefined, dropped by the voiced functionals)
    assert out["F3amplitudeLogRelF0"][1].item() == 0.0
    # F1 at F0: the harmonic found is H1 itself, 0 dB exactly (openSMILE)
    fr1 = torch.tensor(harmonic_frame(250.0, {1: 1.0})[None], dtype=torch.float32)
    out1 = pt._harmonics(pt._gauss_mag(pt._gauss_window(fr1)), torch.tensor([250.0]),
                         torch.tensor([[260.0, 50, 750, 80, 2500, 100]]))
    assert out1["F1amplitudeLogRelF0"].item() == 0.0


def test_formant_amplitude_is_zero_without_a_harmonic_near_the_formant():
    # F0 = 250 Hz, F1 = 100 Hz: 80-120 Hz holds no harmonic -> 0
    fr = torch.tensor(harmonic_frame(250.0, {1: 1.0})[None], dtype=torch.float32)
    out = pt._harmonics(pt._gauss_mag(pt._gauss_window(fr)), torch.tensor([250.0]),
                        torch.tensor([[100.0, 50, 750, 80, 2500, 100]]))
    assert out["F1amplitudeLogRelF0"].item() == 0.0
    # 600-900 Hz holds h3 (amp 0.01 vs H1 = 1): -40 dB
    assert out["F2amplitudeLogRelF0"].item() == pytest.approx(-40.0, abs=0.1)


def test_spectral_band_slices_select_the_same_bins_as_the_band_masks():
    c = pt._spectral_consts(torch.device("cpu"))
    freqs = torch.fft.rfftfreq(pt.NFFT_SHORT, 1.0 / SR)
    bins = torch.arange(freqs.numel())
    for sl, mask in ((c.low, pt._band(freqs, 50, 1000)),
                     (c.high, pt._band(freqs, 1000, 5000) & (freqs > 1000)),
                     (c.hmax_lo, pt._band(freqs, 0, 2000)),
                     (c.hmax_hi, pt._band(freqs, 2000, 5000) & (freqs > 2000)),
                     # cSpectral's freqRange 0-5000: bins 0-159 (below 5000 Hz)
                     (c.flux, freqs < 5000),
                     (c.slope_lo, pt._band(freqs, 0, 500)),
                     (c.slope_hi, pt._band(freqs, 500, 1500))):
        assert bins[sl].tolist() == bins[mask].tolist()
    assert (c.flux.start, c.flux.stop) == (0, 160)  # 160 bins of 31.25 Hz
    # built once per device
    assert pt._spectral_consts(torch.device("cpu")) is c
    # 50-1000 Hz at 31.25 Hz bins: 62.5 ... 1000 Hz = bins 2..32
    assert (c.low.start, c.low.stop) == (2, 33)
