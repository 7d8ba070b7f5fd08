"""torch prosody backend: the compiled CPU paths equal the torch paths (used on CUDA).

On CPU (with numba) :func:`_shs_candidates` runs :func:`_shs_rows` (the octave-scale
spline in O(n), a tridiagonal solve per frame, instead of the dense 513 x 513 product),
:func:`_hnr_acf` reads 4 direct lag sums instead of a 1280-point FFT pair,
:func:`_harmonic_peaks` searches each frame in one compiled loop, and the formants use
:func:`_levinson_rows` and a compiled Francis QR (:func:`_hqr`) instead of LAPACK per
11 x 11 companion matrix. Each must give the torch path's values up to
float32 (HNR, SHS) or float64 (formants) rounding; the harmonic peaks bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.interpolate import CubicSpline

from atrisk.extractors.prosody import torch_backend as pt

SR = 16000

pytestmark = pytest.mark.skipif(not pt._HAVE_NUMBA, reason="numba not installed: "
                                "only the torch path exists")


def _spline(y: np.ndarray) -> np.ndarray:
    # one column of a block of 3 (the other two: garbage that must not leak in)
    n = y.size
    cols = np.random.default_rng(0).random((n, 3)).astype(np.float32)
    cols[:, 1] = y
    out, d2, m2 = np.zeros((n, 3)), np.zeros((n, 3)), np.zeros((n, 3))
    pt._natural_spline_cols(cols, 3, *pt._spline_tables(), d2, m2, out)
    return out[:, 1]


def test_spline_reproduces_a_straight_line_and_scipys_natural_spline():
    knots, grid, *_ = pt._shs_axis()
    # a natural cubic spline through points of a line is that line (M = 0): y = 2 k - 3
    # on the knots gives 2 g - 3 on the grid, also beyond the last knot
    line = (2 * knots - 3).astype(np.float32)
    np.testing.assert_allclose(_spline(line), 2 * grid - 3, rtol=0, atol=1e-5)
    assert grid[-1] > knots[-1]  # the last grid point is extrapolated
    # random data: the dense spline matrix of the torch path (scipy CubicSpline)
    y = np.random.default_rng(3).random(knots.size).astype(np.float32) ** 3
    want = CubicSpline(knots, y.astype(np.float64), bc_type="natural")(grid)
    np.testing.assert_allclose(_spline(y), want, rtol=0, atol=1e-12 * np.abs(want).max())


def _speech_like_spectra() -> torch.Tensor:
    """Spectra of 60 ms frames: a gliding harmonic voice, then noise, silence, a click."""
    rng = np.random.default_rng(5)
    t = np.arange(SR) / SR
    phase = 2 * np.pi * np.cumsum(np.linspace(110.0, 260.0, t.size)) / SR
    voice = sum(0.4 / h * np.sin(h * phase) for h in range(1, 9))
    voice = voice + 1e-3 * rng.standard_normal(voice.size)
    x = np.concatenate([voice, 0.05 * rng.standard_normal(SR // 2), np.zeros(SR // 2)])
    x[-SR // 8] = 0.9
    x = torch.from_numpy(x.astype(np.float32))[None]
    n_frames = (x.shape[-1] - pt.WIN_LONG) // pt.HOP + 1
    return pt._gauss_mag(pt._gauss_window(pt._frames(x, pt.WIN_LONG, n_frames)))


def test_cpu_candidates_equal_the_torch_path(monkeypatch):
    mag = _speech_like_spectra()
    got_f, got_v = pt._shs_candidates(mag)  # CPU: compiled path
    monkeypatch.setattr(pt, "_HAVE_NUMBA", False)
    want_f, want_v = pt._shs_candidates(mag)  # the torch path, as on CUDA
    assert got_f.shape == want_f.shape == (1, mag.shape[1], pt.SHS_CANDIDATES)
    # the same slots filled, the same candidates, the best first
    assert torch.equal(got_f > 0, want_f > 0)
    np.testing.assert_allclose(got_f.numpy(), want_f.numpy(), rtol=5e-5)
    np.testing.assert_allclose(got_v.numpy(), want_v.numpy(), rtol=0, atol=1e-5)
    # voiced frames of the glide: the best candidate follows 110 -> 260 Hz
    f0 = got_f[0, 10:80, 0].numpy()
    assert (f0 > 100).all() and (f0 < 280).all() and f0[-1] > f0[0]
    assert (got_v[0, 10:80, 0] > pt.SHS_VOICING_CUTOFF).all()
    # silent frames (all-zero spectra): no candidate
    silent = (mag[0].amax(-1) == 0).numpy()
    assert silent.any() and (got_f[0, silent].numpy() == 0).all()


def test_cpu_candidates_of_flat_and_single_peak_rows_equal_the_torch_path(monkeypatch):
    # an all-zero row (no maximum), a rising row (one maximum: everything from bin 3 on
    # is zeroed) and a row with one narrow peak at bin 30 (~470 Hz, with harmonics)
    mag = torch.zeros(1, 3, pt.SHS_POINTS)
    mag[0, 1] = torch.linspace(0, 1, pt.SHS_POINTS)
    mag[0, 2, 30::30] = 1.0
    got = pt._shs_candidates(mag)
    monkeypatch.setattr(pt, "_HAVE_NUMBA", False)
    want = pt._shs_candidates(mag)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=5e-5, atol=1e-6)
    assert (got[0][0, 0] == 0).all()  # no candidate without a maximum
    # harmonics of 468.75 Hz (bins 30, 60, ...): the best candidate is near it
    assert got[0][0, 2, 0].item() == pytest.approx(30 * SR / pt.SHS_NFFT, rel=0.02)


def test_hnr_lag_sums_equal_the_fft_path_and_a_direct_computation(monkeypatch):
    rng = np.random.default_rng(11)
    t = np.arange(pt.WIN_LONG) / SR
    rows, periods = [], []
    for f0, noise in ((155.0, 0.0), (155.2, 0.05), (154.8, 0.3), (155.1, 1.0)):
        x = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 6))
        rows.append(x + noise * rng.standard_normal(t.size))
        periods.append(SR / f0)
    gw = pt._gauss_window(torch.tensor(np.array(rows), dtype=torch.float32))
    period = torch.tensor(periods, dtype=torch.float32)
    got = pt._hnr_acf(gw, period).numpy()
    # by hand: normalised linear ACF at the rounded period +- 1, the best, in dB
    g = gw.numpy().astype(np.float64)
    want = []
    for row, p in zip(g, periods, strict=True):
        lag = round(p)
        r = max((row[: -k] * row[k:]).sum() for k in (lag - 1, lag, lag + 1)) / (row @ row)
        r = min(max(r, 1e-4), 1 - 1e-4)
        want.append(10 * math.log10(r / (1 - r)))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
    assert got[0] > got[1] > got[2] > got[3]  # HNR falls with the noise
    monkeypatch.setattr(pt, "_HAVE_NUMBA", False)
    np.testing.assert_allclose(got, pt._hnr_acf(gw, period).numpy(), rtol=0, atol=1e-3)


def _lpc_filters(n: int = 200) -> torch.Tensor:
    """Prediction-error filters of order 11 from random AR(4) signals and noise."""
    rng = np.random.default_rng(2)
    acfs = []
    for k in range(n):
        e = rng.standard_normal(400)
        if k % 4:  # a resonant AR(4) process: two formant-like pole pairs
            x = np.zeros_like(e)
            c = np.convolve([1, -1.6, 0.9], [1, 0.5, 0.7])
            for i in range(4, x.size):
                x[i] = e[i] - c[1] * x[i - 1] - c[2] * x[i - 2] - c[3] * x[i - 3] - c[4] * x[i - 4]
            e = x[180:]
        acfs.append([(e[: e.size - j] * e[j:]).sum() for j in range(12)])
    acf = np.array(acfs)
    a = np.empty_like(acf)
    pt._levinson_rows(acf, a)
    np.testing.assert_allclose(a, pt._levinson(torch.from_numpy(acf)).numpy(), rtol=0,
                               atol=1e-9)
    return torch.from_numpy(a)


def test_compiled_roots_equal_lapack():
    a = _lpc_filters()
    got = pt._lpc_formants(a).numpy()  # CPU: compiled QR
    want = pt._lpc_formants_lapack(a, pt.LPC_RATE).numpy()
    assert np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-9)
    assert np.isfinite(got).all(axis=1).mean() > 0.5  # most rows have 3 formants
    # (hand-made roots through this path: test_prosody_torch_formants.py)


def test_roots_fall_back_to_lapack_where_the_qr_does_not_converge(monkeypatch):
    # the compiled QR reports non-convergence through ``failed``: those rows (here all,
    # a stand-in for the rare non-converging polynomial) are computed by LAPACK
    a = _lpc_filters(8)

    def never_converges(rows, rate, out, failed):
        out[:] = -1.0
        failed[:] = True

    monkeypatch.setattr(pt, "_lpc_formant_rows", never_converges)
    np.testing.assert_array_equal(pt._lpc_formants(a).numpy(),
                                  pt._lpc_formants_lapack(a, pt.LPC_RATE).numpy())


def test_compiled_harmonic_peaks_equal_the_torch_path_bit_for_bit(monkeypatch):
    mag = _speech_like_spectra()[0]
    rng = np.random.default_rng(4)
    # F0 per frame: on exact bins (ties between the two nearest peaks), off-bin, low, high
    f0 = torch.tensor(rng.choice([125.0, 93.75, 131.3, 57.1, 212.0, 480.0], mag.shape[0]),
                      dtype=torch.float32)
    flat = mag.clone()
    flat[::7, 40:60] = 0.25  # plateaus: no strict maximum there
    for spec in (mag, flat):
        for n_harm, n_bins in ((100, 420), (3, 60), (40, None)):
            got = pt._harmonic_peaks(spec, f0, n_harm, n_bins)
            with monkeypatch.context() as mp:
                mp.setattr(pt, "_HAVE_NUMBA", False)
                want = pt._harmonic_peaks(spec, f0, n_harm, n_bins)
            for g, w in zip(got, want, strict=True):
                assert g.dtype == w.dtype and torch.equal(g, w)
    # the glide's frames find their first harmonics (found: a positive magnitude)
    pk, _, freq_i, dup = pt._harmonic_peaks(mag, f0, 3, None)
    voiced = mag.amax(-1) > 1.0
    assert (pk[voiced, 0] > 0).float().mean() > 0.5
    assert not dup[:, 0].any()  # the first harmonic is never a duplicate


def test_blocked_cpu_transforms_equal_whole_batch_ones():
    # _gauss_mag, _frame_rms and the LPC input of _formants run in blocks of MAG_BLOCK
    # frames on CPU (fewer fresh temporaries): bit for bit the one-batch values
    rng = np.random.default_rng(8)
    x = torch.from_numpy((0.1 * rng.standard_normal((2, 6 * SR))).astype(np.float32))
    n_frames = (x.shape[-1] - pt.WIN_LONG) // pt.HOP + 1
    assert n_frames > 2 * pt.MAG_BLOCK
    gw = pt._gauss_window(pt._frames(x, pt.WIN_LONG, n_frames))
    assert torch.equal(pt._gauss_mag(gw), torch.fft.rfft(gw, n=pt.SHS_NFFT).abs())
    assert torch.equal(pt._frame_rms(gw), gw.pow(2).mean(-1).sqrt())
    select = torch.ones(2, n_frames, dtype=torch.bool)
    select[1, ::3] = False
    frames = pt._frames(x, pt.WIN_SHORT, n_frames)[select]
    acf = pt._lpc_acf(frames, pt._hamming(pt.WIN_SHORT, torch.device("cpu")).double())
    a = np.empty_like(acf.numpy())
    pt._levinson_rows(acf.numpy(), a)
    want = pt._lpc_formants(torch.from_numpy(a)).float()
    got = pt._formants(x, n_frames, select)
    assert got.shape == (int(select.sum()), 6)
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got.nan_to_num(), want.nan_to_num())


def test_torch_paths_alone_still_give_the_pinned_functionals(monkeypatch):
    # without the compiled CPU paths (as on CUDA: dense spline product, FFT HNR, LAPACK
    # roots, torch peak searches) the pinned signal's 88 values are still those pinned
    # before the speed work
    from tests.extractors.prosody.test_prosody_torch_pinned import PINNED, pinned_signal

    monkeypatch.setattr(pt, "_HAVE_NUMBA", False)
    got = pt.TorchProsody(device="cpu").functionals([pinned_signal()], SR)[0][0]
    want = np.array([PINNED[k] for k in pt.FEATURE_NAMES])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
