"""Licence-clean prosody backend: eGeMAPSv02 functionals computed with torch.

:class:`TorchProsody` reproduces openSMILE's eGeMAPSv02 feature set
(Eyben et al. 2016) with torch/torchaudio only, batched, on CPU or CUDA, under
the same 88 column names as :class:`~atrisk.extractors.prosody.OpenSmileProsody`.
Frame sizes, windows, thresholds and the voiced-only selections follow the
openSMILE configuration files of eGeMAPSv02 (``egemaps/v02/*.conf.inc``):

* 20 ms Hamming frames (10 ms step) for loudness, MFCC 1-4, spectral flux, alpha
  ratio, Hammarberg index and the spectral slopes 0-500 / 500-1500 Hz; 60 ms frames
  for F0, HNR, jitter, shimmer and harmonic differences; LPC order 11 at 11 kHz
  for formants F1-F3.  Frames start at 0 (``frameCenterSpecial = left``); a
  signal of ``N`` samples has ``floor((N - 960) / 160) + 1`` frames at 16 kHz.
* F0 follows openSMILE's chain: subharmonic summation on an octave-scale spectrum
  (cPitchShs, 6 candidates in 55-1000 Hz), Viterbi smoothing with eGeMAPSv02's
  weights (cPitchSmootherViterbi) and the RMS threshold 0.001 (``volmerge``); jitter
  and shimmer by cPitchJitter's waveform-matching walk, H1-H2 / H1-A3 as cHarmonics
  computes them (see ``docs/prosody.md``).
* Contours are smoothed with a 3-frame moving average (``sma3``; ``sma3nz`` keeps
  zeros and averages only non-zero neighbours) before the functionals.

Undefined descriptors are NaN: an unvoiced or silent signal has NaN F0, jitter,
shimmer, HNR, formant and voiced-spectral functionals; a signal shorter than one
60 ms frame has every feature NaN.  Non-finite samples are set to 0, signals
at other rates are resampled to 16 kHz.

Example:
    >>> ex = TorchProsody(device="cpu")  # doctest: +SKIP
    >>> ex.process_file("recordings/s1/teacher.wav")["loudness_sma3_amean"]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torchaudio.functional as AF

from atrisk.config import ProsodyConfig
from atrisk.device import resolve_device
from atrisk.errors import ConfigError
from atrisk.extractors.prosody.base import ProsodyBackend
from atrisk.extractors.prosody.egemaps import (  # noqa: F401  (FEATURE_NAMES: public name here)
    FEATURE_NAMES,
    MFCC_NAMES,
    SPECTRAL_NAMES,
    VOICE_NAMES,
    functionals,
)
from atrisk.ingest.audio import mono_finite

log = logging.getLogger(__name__)

#: Rate every signal is resampled to before the descriptors (Hz).
RATE = 16000
HOP = 160  # 10 ms
WIN_SHORT = 320  # 20 ms Hamming (spectral descriptors)
WIN_LONG = 960  # 60 ms (pitch, voice quality)
NFFT_SHORT = 512
NFFT_LONG = 1280  # >= 960 + max lag (292): acf lags free of wrap-around
F0_MIN, F0_MAX = 55.0, 1000.0
#: RMS of the 60 ms frame below which a frame is unvoiced (eGeMAPS ``volmerge``).
VOICING_RMS = 1e-3
LPC_RATE = 11000
LPC_ORDER = 11
#: Samples of the 11 kHz LPC input frame (20 ms).
LPC_FRAME = WIN_SHORT * LPC_RATE // RATE
#: Constant factor mapping this backend's loudness to openSMILE's units, fitted once as
#: the median frame-wise ratio of openSMILE's to this backend's LLD on jfk.flac,
#: pyannote/sample.wav and speechbrain spk1_snt1.wav (a constant factor changes no rank
#: correlation).  Spectral flux needs none: it is computed as openSMILE's cSpectral.
LOUDNESS_SCALE = 0.067
#: openSMILE cSpectral's power floor of the log spectrum (``specFloor`` 1e-7, squared)
#: and the dB value of floored bins.
SPEC_FLOOR = 1e-14
LOG_SPEC_FLOOR = -140.0

# LLD rows of the per-frame descriptor matrix (name lists: atrisk.extractors.prosody.egemaps).
LLD_NAMES = ["loudness", "F0semitone", "energy", *SPECTRAL_NAMES, *MFCC_NAMES, *VOICE_NAMES]


# -- frame-level descriptors -------------------------------------------------------------


def _hamming(n: int, device: torch.device) -> torch.Tensor:
    k = torch.arange(n, device=device, dtype=torch.float32)
    return 0.54 - 0.46 * torch.cos(2 * math.pi * k / (n - 1))


def _gauss(n: int, device: torch.device, sigma: float = 0.4) -> torch.Tensor:
    k = torch.arange(n, device=device, dtype=torch.float32)
    half = (n - 1) / 2
    return torch.exp(-0.5 * ((k - half) / (sigma * half)) ** 2)


_CACHE: dict[tuple, Any] = {}


def _cached(key: tuple, make: Callable[[], Any]) -> Any:
    """Return the constant tensor ``make()`` built once per ``key`` (device, dtype, ...)."""
    t = _CACHE.get(key)
    if t is None:
        t = _CACHE[key] = make()
    return t


def _frames(x: torch.Tensor, size: int, n_frames: int) -> torch.Tensor:
    """Left-aligned frames ``(B, n_frames, size)`` (zero padded at the end)."""
    need = (n_frames - 1) * HOP + size
    if x.shape[-1] < need:
        x = torch.nn.functional.pad(x, (0, need - x.shape[-1]))
    return x.unfold(-1, size, HOP)[:, :n_frames]


def _band(freqs: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return (freqs >= lo) & (freqs <= hi)


def _equal_loudness(freq: torch.Tensor) -> torch.Tensor:
    """Hermansky's equal-loudness curve (as in HTK/PLP), ``freq`` in Hz."""
    fsq = freq * freq
    fsub = fsq / (fsq + 1.6e5)
    return fsub * fsub * ((fsq + 1.44e6) / (fsq + 9.61e6))


class _SpectralConsts:
    """Filter bank, DCT, windows and band slices of :func:`_spectral_llds` for one device.

    Built once per device (:func:`_spectral_consts`) instead of on every call; the
    frequency bands are contiguous runs of FFT bins, so they are kept as slices (views,
    no copies).
    """

    def __init__(self, dev: torch.device):
        self.window = _hamming(WIN_SHORT, dev)
        freqs = torch.fft.rfftfreq(NFFT_SHORT, 1.0 / RATE).to(dev)
        self.fb = AF.melscale_fbanks(NFFT_SHORT // 2 + 1, 20.0, 8000.0, 26, RATE, norm=None,
                                     mel_scale="htk").to(dev)
        # MFCC 1-4: HTK-style log mel energies, DCT-II, cepstral lifter 22.
        n = torch.arange(26, device=dev, dtype=torch.float32)
        i = torch.arange(1, 5, device=dev, dtype=torch.float32)[:, None]
        self.dct_t = (math.sqrt(2.0 / 26) * torch.cos(math.pi * i * (n + 0.5) / 26)).T
        self.lifter = 1 + 11.0 * torch.sin(math.pi * i[:, 0] / 22.0)
        # Loudness: equal-loudness weights of the mel band centres.
        mel_lo, mel_hi = 2595 * math.log10(1 + 20 / 700), 2595 * math.log10(1 + 8000 / 700)
        centres_mel = torch.linspace(mel_lo, mel_hi, 28, device=dev)[1:-1]
        self.loud_w = _equal_loudness(700 * (10 ** (centres_mel / 2595) - 1))

        def span(mask: torch.Tensor) -> slice:
            idx = torch.nonzero(mask)[:, 0]
            return slice(int(idx[0]), int(idx[-1]) + 1)

        self.low = span(_band(freqs, 50, 1000))
        self.high = span(_band(freqs, 1000, 5000) & (freqs > 1000))
        self.hmax_lo = span(_band(freqs, 0, 2000))
        self.hmax_hi = span(_band(freqs, 2000, 5000) & (freqs > 2000))
        # cSpectral's flux range 0-5000 Hz: the bins below 5000 Hz (bin 160 left out)
        self.flux = span(freqs < 5000)
        self.slope_lo = span(_band(freqs, 0, 500))
        self.slope_hi = span(_band(freqs, 500, 1500))
        self.n_log = max(self.slope_lo.stop, self.slope_hi.stop)  # bins needing log power
        # cSpectral's slope of a band: (Nind Sfy - Sf Sy) / (Nind Sff - Sf^2) over the
        # band's bins (both edge weights 1 for these bands) with Nind one less than the
        # number of bins, so not the least-squares slope: it depends on the band's level
        self.f_lo, self.f_hi = freqs[self.slope_lo], freqs[self.slope_hi]
        self.slope_terms = [_slope_terms(f) for f in (self.f_lo, self.f_hi)]


def _slope_terms(f: torch.Tensor) -> tuple[float, float, float]:
    """``(Nind, Sf, Nind Sff - Sf^2)`` of openSMILE's cSpectral band slope over bins ``f`` (Hz).

    ``Nind = idxR - idxL`` is one less than the number of bins (double sums, as
    openSMILE computes them).
    """
    fd = f.double()
    nind = float(fd.numel() - 1)
    sf = float(fd.sum())
    return nind, sf, nind * float((fd * fd).sum()) - sf * sf


def _band_slope(band_db: torch.Tensor, f: torch.Tensor, terms: tuple[float, float, float]
                ) -> torch.Tensor:
    """Slope (dB/Hz) of log power spectra ``band_db`` over bins ``f``, as openSMILE cSpectral.

    ``(Nind * sum(f y) - sum(f) * sum(y)) / (Nind * sum(f^2) - sum(f)^2)`` with ``Nind``
    one less than the number of bins (:func:`_slope_terms`): the least-squares slope
    plus a term proportional to the band's level, as openSMILE computes it.
    """
    nind, sf, den = terms
    return (nind * (band_db * f).sum(-1) - sf * band_db.sum(-1)) / den


def _spectral_consts(dev: torch.device) -> _SpectralConsts:
    return _cached(("spectral", str(dev)), lambda: _SpectralConsts(dev))


def _spectral_llds(x: torch.Tensor, n_frames: int) -> dict[str, torch.Tensor]:
    """Return loudness, energy, alpha ratio, Hammarberg, slopes, flux and MFCC 1-4."""
    c = _spectral_consts(x.device)
    fr = _frames(x, WIN_SHORT, n_frames)
    energy = (fr * fr).mean(-1)
    spec = torch.fft.rfft(fr * c.window, n=NFFT_SHORT)
    power = spec.real ** 2 + spec.imag ** 2
    tiny = 1e-12

    mel = power @ c.fb  # (B, T, 26)
    logmel = torch.log(torch.clamp(mel * 32768.0 ** 2, min=1.0))
    mfcc = (logmel @ c.dct_t) * c.lifter
    # Loudness: equal-loudness weighted mel bands, cube-root compressed, summed.
    loud = (torch.clamp(mel, min=0) * c.loud_w).pow(0.33).sum(-1)
    loud = loud * LOUDNESS_SCALE

    low = power[..., c.low].sum(-1)
    high = power[..., c.high].sum(-1)
    alpha = 10 * torch.log10((high + tiny) / (low + tiny))
    hmax_lo = power[..., c.hmax_lo].amax(-1)
    hmax_hi = power[..., c.hmax_hi].amax(-1)
    hammarberg = 10 * torch.log10((hmax_lo + tiny) / (hmax_hi + tiny))
    # cSpectral's log power spectrum: dB, floored at -140 dB (power <= 1e-14)
    p_log = power[..., : c.n_log]
    logp = torch.where(p_log > SPEC_FLOOR, 10 * torch.log10(p_log.clamp(min=SPEC_FLOOR)),
                       torch.full_like(p_log, LOG_SPEC_FLOOR))
    slope_lo = _band_slope(logp[..., c.slope_lo], c.f_lo, c.slope_terms[0])
    slope_hi = _band_slope(logp[..., c.slope_hi], c.f_hi, c.slope_terms[1])

    # cSpectral's flux: RMS over the bins below 5 kHz of the magnitude differences of
    # consecutive frames (the first frame 0)
    band = power[..., c.flux].sqrt()  # magnitudes
    flux = torch.zeros_like(energy)
    flux[:, 1:] = ((band[:, 1:] - band[:, :-1]) ** 2).mean(-1).sqrt()

    silent = energy <= 0
    alpha, hammarberg = alpha.masked_fill(silent, 0.0), hammarberg.masked_fill(silent, 0.0)
    slope_lo, slope_hi = slope_lo.masked_fill(silent, 0.0), slope_hi.masked_fill(silent, 0.0)
    out = {"loudness": loud, "energy": energy, "alphaRatio": alpha,
           "hammarbergIndex": hammarberg, "slope0-500": slope_lo, "slope500-1500": slope_hi,
           "spectralFlux": flux}
    for k, name in enumerate(MFCC_NAMES):
        out[name] = mfcc[..., k].masked_fill(silent, 0.0)
    return out


def _hnr_acf(gw: torch.Tensor, period: torch.Tensor) -> torch.Tensor:
    """HNR (dB) of voiced 60 ms frames from the ACF of the Gaussian-windowed frame ``gw``."""
    if gw.shape[0] == 0:  # no voiced frame: nothing to measure
        return torch.zeros(0, device=gw.device)
    if gw.device.type == "cpu" and _HAVE_NUMBA and gw.dtype == torch.float32:
        lag = torch.round(period).long().clamp(2, WIN_LONG - 2).numpy()
        out = np.empty(gw.shape[0], dtype=np.float32)
        _hnr_rows(np.ascontiguousarray(gw.numpy()), np.ascontiguousarray(lag), out)
        return torch.from_numpy(out)
    full = torch.fft.rfft(gw, n=NFFT_LONG)
    acf = torch.fft.irfft(full.real ** 2 + full.imag ** 2, n=NFFT_LONG)
    # ACF of the Gaussian-windowed frame at T0 (best of the 3 lags around it), not
    # divided by the window's ACF: openSMILE's HNRdBACF is not either (measured: dividing
    # lowers the agreement of HNRdBACF_sma3nz_amean from rho 0.94 to 0.83)
    norm = acf / torch.clamp(acf[..., :1], min=1e-20)
    lag = torch.round(period).long().clamp(2, WIN_LONG - 2)[..., None]
    r = norm.gather(-1, torch.cat([lag - 1, lag, lag + 1], -1)).amax(-1)
    r = r.clamp(1e-4, 1 - 1e-4)
    return 10 * torch.log10(r / (1 - r))


def _hnr_rows(gw: np.ndarray, lag: np.ndarray, out: np.ndarray) -> None:
    """:func:`_hnr_acf` on CPU: the 4 ACF values it reads, as direct float64 lag sums.

    ``gw`` ``(N, 960)`` float32 frames, ``lag`` ``(N,)`` the rounded periods (2..958);
    the normalised ACF at ``lag - 1``, ``lag``, ``lag + 1`` (the best of the three),
    clipped to ``[1e-4, 1 - 1e-4]``, as dB into ``out``.  The same values as the
    1280-point FFT pair of the torch path (no wrap-around: lags <= 320) up to its
    float32 rounding, at a small fraction of its cost.
    """
    n = gw.shape[1]
    for r in range(gw.shape[0]):
        x = gw[r]
        e0 = 0.0
        for i in range(n):
            e0 += np.float64(x[i]) * np.float64(x[i])
        lg = lag[r]
        a0 = 0.0
        a1 = 0.0
        a2 = 0.0
        for i in range(n - lg - 1):  # the three lags together, independent sums
            xi = np.float64(x[i])
            a0 += xi * np.float64(x[i + lg - 1])
            a1 += xi * np.float64(x[i + lg])
            a2 += xi * np.float64(x[i + lg + 1])
        i = n - lg - 1
        a0 += np.float64(x[i]) * np.float64(x[i + lg - 1])
        a1 += np.float64(x[i]) * np.float64(x[i + lg])
        a0 += np.float64(x[i + 1]) * np.float64(x[i + lg])
        best = max(a0, a1, a2) / max(e0, 1e-20)
        best = min(max(best, 1e-4), 1.0 - 1e-4)
        out[r] = 10.0 * math.log10(best / (1.0 - best))


#: Formant search range (Hz) and number of roots kept, as cFormantLpc in eGeMAPSv02.
FORMANT_MIN, FORMANT_MAX = 50.0, 5450.0


def _levinson(acf: torch.Tensor) -> torch.Tensor:
    """Prediction-error filter ``[1, a_1, ..., a_p]`` of ``A(z) = 1 + sum a_k z^-k``.

    Levinson-Durbin recursion on autocorrelations ``acf[..., 0..p]`` (float64),
    batched; an all-zero frame gives ``[1, 0, ..., 0]``.
    """
    p = acf.shape[-1] - 1
    a = torch.zeros_like(acf)
    a[..., 0] = 1.0
    err = acf[..., 0].clamp(min=1e-300)
    for i in range(1, p + 1):
        acc = (a[..., :i] * acf[..., 1:i + 1].flip(-1)).sum(-1)
        k = torch.where(err > 1e-300, -acc / err, torch.zeros_like(err))
        prev = a.clone()
        a[..., 1:i + 1] = prev[..., 1:i + 1] + k[..., None] * prev[..., :i].flip(-1)
        err = (err * (1 - k * k)).clamp(min=1e-300)
    return a


def _lpc_formants(a: torch.Tensor, rate: float = LPC_RATE) -> torch.Tensor:
    """F1-F3 frequency and bandwidth (Hz), ``(..., 6)``, from ``[1, a_1, ..., a_p]``.

    As openSMILE's cFormantLpc: the roots of ``z^p - a_1 z^(p-1) - ... - a_p`` (the
    prediction coefficients negated, as openSMILE builds the polynomial), reflected
    into the unit circle; those with a non-negative imaginary part and a frequency
    ``|angle| * rate / 2 pi`` in 50-5450 Hz, sorted by frequency; bandwidth
    ``-ln|r| * rate / pi``. NaN where fewer than three roots qualify.
    """
    if a.device.type == "cpu" and _HAVE_NUMBA:
        flat = np.ascontiguousarray(a.reshape(-1, a.shape[-1]).double().numpy())
        out = np.empty((flat.shape[0], 6))
        failed = np.zeros(flat.shape[0], dtype=np.bool_)
        _lpc_formant_rows(flat, float(rate), out, failed)
        if failed.any():  # the compiled QR did not converge: LAPACK for those rows
            out[failed] = _lpc_formants_lapack(torch.from_numpy(flat[failed]), rate).numpy()
        return torch.from_numpy(out).reshape(*a.shape[:-1], 6)
    return _lpc_formants_lapack(a, rate)


def _lpc_formants_lapack(a: torch.Tensor, rate: float) -> torch.Tensor:
    """:func:`_lpc_formants` by ``torch.linalg.eigvals`` (LAPACK) of the companion matrices."""
    dev, p = a.device, a.shape[-1] - 1
    # roots = eigenvalues of the companion matrix
    comp = torch.zeros(*a.shape[:-1], p, p, dtype=torch.float64, device=dev)
    comp[..., 0, :] = a[..., 1:]
    comp[..., 1:, :-1] = torch.eye(p - 1, dtype=torch.float64, device=dev)
    roots = torch.linalg.eigvals(comp.cpu()).to(dev)
    mag = roots.abs()
    mag = torch.where(mag > 1, 1 / mag, mag)  # into the unit circle
    freq = torch.angle(roots).abs() * rate / (2 * math.pi)
    bw = -torch.log(torch.clamp(mag, min=1e-12)) * rate / math.pi
    ok = (roots.imag >= 0) & (freq >= FORMANT_MIN) & (freq <= FORMANT_MAX)
    freq = torch.where(ok, freq, torch.full_like(freq, float("inf")))
    order = freq.argsort(-1)
    freq_s = freq.gather(-1, order)[..., :3]
    bw_s = bw.gather(-1, order)[..., :3]
    valid = torch.isfinite(freq_s)
    nan = torch.full_like(freq_s, float("nan"))
    freq_s = torch.where(valid, freq_s, nan)
    bw_s = torch.where(valid, bw_s, nan)
    return torch.stack([freq_s, bw_s], -1).reshape(*freq_s.shape[:-1], 6)


def _levinson_rows(acf: np.ndarray, a: np.ndarray) -> None:
    """:func:`_levinson` of rows ``acf`` ``(N, p + 1)`` into ``a`` (float64, compiled).

    The same recursion per frame (the torch version is a dozen small whole-batch
    operations per order).
    """
    p = a.shape[1] - 1
    prev = np.zeros(p + 1)
    for r in range(acf.shape[0]):
        c = acf[r]
        ar = a[r]
        ar[:] = 0.0
        ar[0] = 1.0
        err = max(c[0], 1e-300)
        for i in range(1, p + 1):
            acc = 0.0
            for j in range(i):
                acc += ar[j] * c[i - j]
            k = -acc / err if err > 1e-300 else 0.0
            for j in range(i + 1):
                prev[j] = ar[j]
            for j in range(1, i + 1):
                ar[j] = prev[j] + k * prev[i - j]
            err = max(err * (1.0 - k * k), 1e-300)


def _balance(a: np.ndarray) -> None:
    """Balance a square matrix in place by powers of 2 (EISPACK ``balanc``, no permutation).

    Row and column norms are equalised by diagonal similarity transforms (exact in
    binary), which keeps the eigenvalues and improves their accuracy, as LAPACK's
    ``geev`` does before its QR iteration.
    """
    n = a.shape[0]
    done = False
    while not done:
        done = True
        for i in range(n):
            c = 0.0
            r = 0.0
            for j in range(n):
                if j != i:
                    c += abs(a[j, i])
                    r += abs(a[i, j])
            if c != 0.0 and r != 0.0:
                g = r / 2.0
                f = 1.0
                s = c + r
                while c < g:
                    f *= 2.0
                    c *= 4.0
                g = r * 2.0
                while c > g:
                    f /= 2.0
                    c /= 4.0
                if (c + r) / f < 0.95 * s:
                    done = False
                    g = 1.0 / f
                    for j in range(n):
                        a[i, j] *= g
                    for j in range(n):
                        a[j, i] *= f


def _hqr(a: np.ndarray, wr: np.ndarray, wi: np.ndarray) -> bool:
    """Eigenvalues ``wr + i wi`` of an upper Hessenberg matrix (destroyed), Francis QR.

    The double-shift QR iteration of EISPACK's ``hqr`` (as in Numerical Recipes):
    deflation at negligible subdiagonal elements, an exceptional shift every 10
    iterations of one eigenvalue (EISPACK: at 10 and 20 only, and gives up at 30, which
    11 of 46,506 LPC polynomials of real speech needed). Real eigenvalues have
    ``wi == 0`` exactly; complex ones come in conjugate pairs. Returns False when an
    eigenvalue needs more than 60 iterations (the caller falls back to LAPACK).
    """
    n = a.shape[0]
    anorm = 0.0
    for i in range(n):
        for j in range(max(i - 1, 0), n):
            anorm += abs(a[i, j])
    nn = n - 1
    t = 0.0
    while nn >= 0:
        its = 0
        while True:
            ll = nn
            while ll >= 1:  # a negligible subdiagonal element splits the matrix
                s = abs(a[ll - 1, ll - 1]) + abs(a[ll, ll])
                if s == 0.0:
                    s = anorm
                if abs(a[ll, ll - 1]) + s == s:
                    a[ll, ll - 1] = 0.0
                    break
                ll -= 1
            x = a[nn, nn]
            if ll == nn:  # one real root
                wr[nn] = x + t
                wi[nn] = 0.0
                nn -= 1
                break
            y = a[nn - 1, nn - 1]
            w = a[nn, nn - 1] * a[nn - 1, nn]
            if ll == nn - 1:  # two roots of the trailing 2 x 2 block
                p = 0.5 * (y - x)
                q = p * p + w
                z = math.sqrt(abs(q))
                x += t
                if q >= 0.0:
                    z = p + (z if p >= 0.0 else -z)
                    wr[nn - 1] = wr[nn] = x + z
                    if z != 0.0:
                        wr[nn] = x - w / z
                    wi[nn - 1] = wi[nn] = 0.0
                else:
                    wr[nn - 1] = wr[nn] = x + p
                    wi[nn - 1] = -z
                    wi[nn] = z
                nn -= 2
                break
            if its == 60:
                return False
            if its > 0 and its % 10 == 0:  # exceptional shift
                t += x
                for i in range(nn + 1):
                    a[i, i] -= x
                s = abs(a[nn, nn - 1]) + abs(a[nn - 1, nn - 2])
                x = y = 0.75 * s
                w = -0.4375 * s * s
            its += 1
            m = nn - 2
            while m >= ll:  # two consecutive small subdiagonal elements
                z = a[m, m]
                r = x - z
                s = y - z
                p = (r * s - w) / a[m + 1, m] + a[m, m + 1]
                q = a[m + 1, m + 1] - z - r - s
                r = a[m + 2, m + 1]
                s = abs(p) + abs(q) + abs(r)
                p /= s
                q /= s
                r /= s
                if m == ll:
                    break
                u = abs(a[m, m - 1]) * (abs(q) + abs(r))
                v = abs(p) * (abs(a[m - 1, m - 1]) + abs(z) + abs(a[m + 1, m + 1]))
                if u + v == v:
                    break
                m -= 1
            for i in range(m + 2, nn + 1):
                a[i, i - 2] = 0.0
                if i != m + 2:
                    a[i, i - 3] = 0.0
            for k in range(m, nn):  # double QR step on rows ll..nn, columns m..nn
                if k != m:
                    p = a[k, k - 1]
                    q = a[k + 1, k - 1]
                    r = a[k + 2, k - 1] if k != nn - 1 else 0.0
                    x = abs(p) + abs(q) + abs(r)
                    if x != 0.0:
                        p /= x
                        q /= x
                        r /= x
                s = math.sqrt(p * p + q * q + r * r)
                if p < 0.0:
                    s = -s
                if s != 0.0:
                    if k == m:
                        if ll != m:
                            a[k, k - 1] = -a[k, k - 1]
                    else:
                        a[k, k - 1] = -s * x
                    p += s
                    x = p / s
                    y = q / s
                    z = r / s
                    q /= p
                    r /= p
                    for j in range(k, nn + 1):
                        p = a[k, j] + q * a[k + 1, j]
                        if k != nn - 1:
                            p += r * a[k + 2, j]
                            a[k + 2, j] -= p * z
                        a[k + 1, j] -= p * y
                        a[k, j] -= p * x
                    for i in range(ll, min(nn, k + 3) + 1):
                        p = x * a[i, k] + y * a[i, k + 1]
                        if k != nn - 1:
                            p += z * a[i, k + 2]
                            a[i, k + 2] -= p * r
                        a[i, k + 1] -= p * q
                        a[i, k] -= p
            if ll >= nn - 1:
                break
    return True


def _lpc_formant_rows(a: np.ndarray, rate: float, out: np.ndarray, failed: np.ndarray
                      ) -> None:
    """:func:`_lpc_formants` of rows ``a`` ``(N, p + 1)`` into ``out`` ``(N, 6)`` (compiled).

    The companion matrix's eigenvalues by :func:`_balance` + :func:`_hqr` per row;
    ``failed[r]`` is set (and ``out[r]`` left undefined) where the QR did not converge.
    """
    n_rows = a.shape[0]
    p = a.shape[1] - 1
    comp = np.zeros((p, p))
    wr = np.zeros(p)
    wi = np.zeros(p)
    fq = np.zeros(p)
    bw = np.zeros(p)
    for r in range(n_rows):
        comp[:, :] = 0.0
        for j in range(p):
            comp[0, j] = a[r, j + 1]
        for i in range(1, p):
            comp[i, i - 1] = 1.0
        _balance(comp)
        if not _hqr(comp, wr, wi):
            failed[r] = True
            continue
        n_ok = 0
        for i in range(p):
            if wi[i] < 0.0:
                continue
            f = abs(math.atan2(wi[i], wr[i])) * rate / (2.0 * math.pi)
            if f < FORMANT_MIN or f > FORMANT_MAX:
                continue
            mag = math.hypot(wr[i], wi[i])
            if mag > 1.0:  # into the unit circle
                mag = 1.0 / mag
            b = -math.log(max(mag, 1e-12)) * rate / math.pi
            c = n_ok  # insertion by frequency
            while c > 0 and fq[c - 1] > f:
                fq[c] = fq[c - 1]
                bw[c] = bw[c - 1]
                c -= 1
            fq[c] = f
            bw[c] = b
            n_ok += 1
        for i in range(3):
            out[r, 2 * i] = fq[i] if i < n_ok else math.nan
            out[r, 2 * i + 1] = bw[i] if i < n_ok else math.nan


def _lpc_acf(frames: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """ACF (lags 0..11, float64) of the 11 kHz LPC input of 20 ms frames ``(N, 320)``.

    See :func:`_formants` for the chain (openSMILE cTransformFFT -> cSpecResample).
    """
    frames = frames.double() * win
    # openSMILE's cTransformFFT zero pads the 320 samples symmetrically to 512
    pad = (NFFT_SHORT - WIN_SHORT) // 2
    spec = torch.fft.rfft(torch.nn.functional.pad(frames, (pad, pad)), n=NFFT_SHORT)
    # cSpecResample: an inverse DFT of 352 = 512 * 11000 / 16000 points over DFT bins
    # 0..109 (min(512, 220) / 2: band limited to 3.4 kHz), DC not halved (hence 2 * DC
    # for irfft), of which the first 220 samples (20 ms at 11 kHz) are kept
    n_dft = NFFT_SHORT * LPC_RATE // RATE
    n = LPC_FRAME
    z = torch.zeros(spec.shape[0], n_dft // 2 + 1, dtype=spec.dtype, device=frames.device)
    z[:, 0] = 2 * spec[:, 0]
    z[:, 1:n // 2] = spec[:, 1:n // 2]
    y = torch.fft.irfft(z, n=n_dft)[:, :n] * (n_dft / NFFT_SHORT)
    return torch.stack([(y[..., : n - k] * y[..., k:]).sum(-1) for k in range(LPC_ORDER + 1)],
                       -1)


def _formants(x: torch.Tensor, n_frames: int, select: torch.Tensor) -> torch.Tensor:
    """F1-F3 frequency and bandwidth (Hz) of the ``select``-ed frames, ``(n_selected, 6)``.

    Follows openSMILE's eGeMAPSv02 chain (cTransformFFT -> cSpecResample -> cLpc ->
    cFormantLpc), checked against its intermediate levels: the Hamming-windowed
    20 ms frame zero padded symmetrically to 512 points, its DFT bins 0-109
    evaluated as a ``352 = 512 * 11000 / 16000``-point inverse DFT of which the first
    220 samples are kept (so the LPC sees 6 ms of padding and the first 14 ms of the
    frame, band limited to 3.4 kHz), autocorrelation LPC of order 11
    (Levinson-Durbin), roots of the polynomial
    ``z^11 - a_1 z^10 - ... - a_11`` -- openSMILE negates the prediction
    coefficients ``a_k`` of ``A(z) = 1 + sum a_k z^-k`` when it builds the polynomial,
    and its formant values are those roots, so this backend uses them too --
    reflected into the unit circle; roots with a non-negative imaginary part and a
    frequency in 50-5450 Hz, sorted by frequency, give F1-F3 (bandwidth
    ``-ln|r| * fs / pi``). NaN where fewer formants are found.
    """
    dev = x.device
    if not bool(select.any()):
        return torch.zeros(0, 6, device=dev)
    win = _cached(("hamming64", str(dev)), lambda: _hamming(WIN_SHORT, dev).double())
    frames = _frames(x, WIN_SHORT, n_frames)[select]
    # on CPU in blocks of frames (the same values; no 50 MB of fresh temporaries)
    block = MAG_BLOCK if dev.type == "cpu" else max(1, frames.shape[0])
    acf = torch.cat([_lpc_acf(frames[i:i + block], win)
                     for i in range(0, frames.shape[0], block)])
    if dev.type == "cpu" and _HAVE_NUMBA:  # Levinson per frame, compiled
        a = np.empty_like(acf.numpy())
        _levinson_rows(np.ascontiguousarray(acf.numpy()), a)
        return _lpc_formants(torch.from_numpy(a)).float()
    return _lpc_formants(_levinson(acf)).float()


def _harmonic_peaks(spec: torch.Tensor, f0: torch.Tensor, n_harm: int, n_bins: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Peaks of harmonics 1..``n_harm`` of ``f0`` in magnitude spectra ``(N, bins)``.

    As openSMILE's cHarmonics: harmonic ``h`` is the spectral peak nearest the bin of
    ``h * f0`` (right before left at equal distance) within ``(h -/+ 0.5) * f0``, at
    or above the bin of ``f0 / 2``; a bin equal to the previous harmonic's is a
    duplicate and dropped.

    Args:
        spec: Magnitude spectra, one row per frame.
        f0: F0 (Hz) per row.
        n_harm: Harmonics to find.
        n_bins: Only peaks below this bin are searched (the caller's harmonics of
            interest lie below it; bounds the work).

    Returns:
        ``(magnitude, interpolated magnitude, interpolated frequency, duplicate)``,
        each ``(N, n_harm)``; the first three are 0 where no peak was found (or the
        harmonic is a duplicate).
    """
    dev = spec.device
    nb = spec.shape[-1]
    m = nb if n_bins is None else max(2, min(nb, n_bins))
    bin_hz = RATE / ((nb - 1) * 2)
    if (dev.type == "cpu" and _HAVE_NUMBA and spec.dtype == torch.float32
            and f0.dtype == torch.float32 and spec.dim() == 2):
        outs = (np.empty((spec.shape[0], n_harm), dtype=np.float32) for _ in range(3))
        mag, mag_i, freq_i = outs
        dup = np.empty((spec.shape[0], n_harm), dtype=np.bool_)
        _harmonic_peak_rows(np.ascontiguousarray(spec.numpy()),
                            np.ascontiguousarray(f0.numpy()), m, np.float32(bin_hz),
                            mag, mag_i, freq_i, dup)
        return (torch.from_numpy(mag), torch.from_numpy(mag_i), torch.from_numpy(freq_i),
                torch.from_numpy(dup))
    sp = spec[..., : min(nb, m + 1)]  # one more bin: the right neighbour of bin m - 1
    left = torch.nn.functional.pad(sp, (1, 0), value=-1.0)[..., :-1]
    right = torch.nn.functional.pad(sp, (0, 1), value=-1.0)[..., 1:]
    peak = ((sp > left) & (sp > right))[..., :m]
    peak[..., 0] = spec[..., 0] > spec[..., 1]
    idx = torch.arange(m, device=dev, dtype=torch.int32).expand_as(peak)
    big = torch.full_like(idx, m + 1)
    # nearest peak at or right of / at or left of every bin
    right_pk = torch.where(peak, idx, big).flip(-1).cummin(-1).values.flip(-1)
    left_pk = torch.where(peak, idx, -big).cummax(-1).values
    h = torch.arange(1, n_harm + 1, device=dev, dtype=spec.dtype)
    f = f0[:, None] * h  # expected frequencies
    cand = torch.round(f / bin_hz).long()
    lower = torch.round((f - 0.5 * f0[:, None]) / bin_hz).long()
    upper = torch.round((f + 0.5 * f0[:, None]) / bin_hz).long()
    in_range = cand < m
    c = cand.clamp(max=m - 1)
    r = right_pk.gather(-1, c).long()
    lft = left_pk.gather(-1, c).long()
    r_ok = (r < m) & ((r == c) | (r <= upper))
    l_ok = lft >= lower
    # the search visits c, c+1, c-1, c+2, c-2, ...: the right peak wins a tie
    take_r = r_ok & (~l_ok | (r - c <= c - lft))
    pbin = torch.where(take_r, r, lft)
    found = (r_ok | l_ok) & in_range
    first = torch.round(0.5 * f0 / bin_hz).long()[:, None]
    found = found & (pbin >= first) & (pbin < nb - 1)
    pbin = torch.where(found, pbin, c)
    dup = torch.zeros_like(found)
    dup[..., 1:] = pbin[..., 1:] == pbin[..., :-1]
    found = found & ~dup
    pc = pbin.clamp(1, nb - 2)
    y1, y2, y3 = (spec.gather(-1, pc + o) for o in (-1, 0, 1))
    den = y1 - 2 * y2 + y3
    delta = torch.where(den.abs() > 0, 0.5 * (y1 - y3) / den, torch.zeros_like(den))
    zero = torch.zeros_like(y2)
    mag = torch.where(found, y2, zero)
    mag_i = torch.where(found, y2 - 0.25 * (y1 - y3) * delta, zero)
    freq_i = torch.where(found, (pc + delta) * bin_hz, zero)
    return mag, mag_i, freq_i, dup


def _harmonic_peak_rows(spec: np.ndarray, f0: np.ndarray, m: int, bin_hz: np.float32,
                        mag: np.ndarray, mag_i: np.ndarray, freq_i: np.ndarray,
                        dup: np.ndarray) -> None:
    """:func:`_harmonic_peaks` per frame (CPU, compiled), into ``(N, n_harm)`` outputs.

    The same comparisons, float32 arithmetic and half-to-even rounding as the torch
    version (which runs on CUDA).
    """
    n_rows, nb = spec.shape
    n_harm = mag.shape[1]
    span = min(nb, m + 1)
    right_pk = np.zeros(m, dtype=np.int64)
    left_pk = np.zeros(m, dtype=np.int64)
    zero = np.float32(0.0)
    half = np.float32(0.5)
    for r in range(n_rows):
        sp = spec[r]
        nxt = m + 1  # nearest maximum at or right of k (m + 1: none)
        for k in range(m - 1, -1, -1):
            if k == 0:
                pk = sp[0] > sp[1]
            else:
                right = sp[k + 1] if k + 1 < span else np.float32(-1.0)
                pk = sp[k] > sp[k - 1] and sp[k] > right
            if pk:
                nxt = k
            right_pk[k] = nxt
        prv = -(m + 1)
        for k in range(m):
            if right_pk[k] == k:
                prv = k
            left_pk[k] = prv
        f0r = f0[r]
        first = np.rint(half * f0r / bin_hz)
        prev_bin = -1
        for h in range(n_harm):
            f = f0r * np.float32(h + 1)
            cand = np.int64(np.rint(f / bin_hz))
            lower = np.int64(np.rint((f - half * f0r) / bin_hz))
            upper = np.int64(np.rint((f + half * f0r) / bin_hz))
            c = min(cand, m - 1)
            rb = right_pk[c]
            lb = left_pk[c]
            r_ok = rb < m and (rb == c or rb <= upper)
            l_ok = lb >= lower
            take_r = r_ok and (not l_ok or rb - c <= c - lb)
            pbin = rb if take_r else lb
            found = (r_ok or l_ok) and cand < m
            found = found and pbin >= first and pbin < nb - 1
            if not found:
                pbin = c
            is_dup = h > 0 and pbin == prev_bin
            prev_bin = pbin
            found = found and not is_dup
            dup[r, h] = is_dup
            pc = min(max(pbin, 1), nb - 2)
            y1, y2, y3 = sp[pc - 1], sp[pc], sp[pc + 1]
            den = y1 - np.float32(2.0) * y2 + y3
            delta = half * (y1 - y3) / den if abs(den) > zero else zero
            if found:
                mag[r, h] = y2
                mag_i[r, h] = y2 - np.float32(0.25) * (y1 - y3) * delta
                freq_i[r, h] = (np.float32(pc) + delta) * bin_hz
            else:
                mag[r, h] = zero
                mag_i[r, h] = zero
                freq_i[r, h] = zero


def _harmonics(mag: torch.Tensor, f0: torch.Tensor, formants: torch.Tensor
               ) -> dict[str, torch.Tensor]:
    """F1-F3 amplitudes, H1-H2 and H1-A3 (dB) of voiced 60 ms frames (openSMILE cHarmonics).

    One harmonic search (:func:`_harmonic_peaks`) on the Gaussian-windowed 1024-point
    magnitude spectrum serves all five descriptors.  A harmonic's level is its
    parabolically interpolated peak value relative to the raw magnitude of the F0
    harmonic (``20 log10``; -200 dB where not found, -201 dB for a duplicate or
    without F0 harmonic, 0 for the F0 harmonic itself).

    * ``F{i}amplitudeLogRelF0`` (``FormantAmplitudeByMaxHarmonicLogRelF0``): the level
      of the strongest harmonic whose interpolated frequency lies within 0.8-1.2
      times the formant frequency; 0 (undefined) when no harmonic lies there.
      Checked frame by frame against openSMILE's gemapsv01b_harmonics level given
      its F0 and formants.
    * ``logRelF0-H1-H2`` / ``-H1-A3``: openSMILE indexes its harmonic list from
      0 = F0, so "H1" and "H2" are the harmonics at 2 F0 and 3 F0: H1-H2 is their
      level difference and H1-A3 the 2 F0 level minus A3, the level of the strongest
      harmonic (of the first 100) within 0.8-1.2 x F3 (the F3 amplitude's
      harmonic; ``level(2 F0) - 201`` where there is none), clipped to +-201 dB.

    Args:
        mag: ``(n, 513)`` magnitude spectra (:func:`_gauss_mag`) of the voiced frames.
        f0: ``(n,)`` F0 in Hz (> 0).
        formants: ``(n, 6)`` F1-F3 frequency and bandwidth (NaN where none).

    Returns:
        ``{name: (n,) tensor}`` for the three formant amplitudes, ``logRelF0-H1-H2``
        and ``logRelF0-H1-A3``.
    """
    names = [f"F{i + 1}amplitudeLogRelF0" for i in range(3)]
    if mag.shape[0] == 0:
        empty = torch.zeros(0, device=mag.device)
        return {k: empty for k in (*names, "logRelF0-H1-H2", "logRelF0-H1-A3")}
    fq = torch.nan_to_num(formants[..., 0::2], nan=0.0).clamp(min=0.0)
    fmax = float(fq.amax())
    f0_min, f0_max = float(f0.min()), float(f0.max())
    # every harmonic whose peak may lie within 1.2 x the highest formant (at most 100),
    # and at least the harmonics at 2 F0 and 3 F0
    n_harm = int(min(100, max(3, math.ceil(1.2 * fmax / f0_min + 0.5) + 1)))
    bin_hz = RATE / SHS_NFFT
    n_bins = math.ceil(max(1.2 * fmax + f0_max, 3.5 * f0_max) / bin_hz) + 2
    pk, pk_i, freq_i, dup = _harmonic_peaks(mag, f0, n_harm, n_bins)
    h1 = pk[..., :1]
    rel = 20 * (torch.log10(pk_i.clamp(min=1e-30)) - torch.log10(h1.clamp(min=1e-30)))
    rel = torch.where(pk_i > 0, rel.clamp(min=-200.0), torch.full_like(rel, -200.0))
    rel = torch.where(dup | (h1 <= 0), torch.full_like(rel, -201.0), rel)
    rel[..., 0] = 0.0  # H1 relative to itself (openSMILE sets it, not interpolated)
    out = {}
    zero = torch.zeros_like(f0)
    for i, name in enumerate(names):
        fi = fq[..., i : i + 1]
        near = (freq_i >= 0.8 * fi) & (freq_i <= 1.2 * fi) & (pk > 0)
        pick = torch.where(near, pk, torch.full_like(pk, -1.0)).argmax(-1, keepdim=True)
        level = rel.gather(-1, pick)[..., 0]
        any_near = near.any(-1)
        out[name] = torch.where(any_near, level, zero)
    # openSMILE parses "H1" and "H2" as harmonic indices 1 and 2 of its 0-based list,
    # i.e. the 2nd and 3rd harmonics (measured: 0.3 sin(f0) + 0.15 sin(2 f0) +
    # 0.1 sin(3 f0) gives "H1-H2" = 20 log10(0.15 / 0.1) = 3.5 dB)
    h_a = rel[:, 1]
    out["logRelF0-H1-H2"] = (h_a - rel[:, 2]).clamp(-201, 201)
    a3 = torch.where(any_near, h_a - level, h_a - 201.0)  # any_near, level: of F3
    out["logRelF0-H1-A3"] = a3.clamp(-201, 201)
    return out



# -- pitch: subharmonic summation + Viterbi smoothing (openSMILE cPitchShs chain) ---------

#: FFT size of the 60 ms pitch frames: openSMILE zero-pads 960 samples to 1024.
SHS_NFFT = 1024
#: Points of the octave-scale spectrum (as many as FFT bins: ``nPointsTarget = 0``).
SHS_POINTS = SHS_NFFT // 2 + 1
SHS_MIN_F = 25.0
SHS_HARMONICS = 15
SHS_COMPRESSION = 0.85
SHS_CANDIDATES = 6
#: Voicing probability above which a candidate counts as voiced (``voicingCutoff``).
SHS_VOICING_CUTOFF = 0.7
# Viterbi weights of eGeMAPSv02 (wTvvd is overwritten by wTvv inside openSMILE's
# setWeights, so the delta-continuity weight in effect is 10, not the configured 5).
VIT_LOCAL, VIT_TVV, VIT_TVVD, VIT_TVUV, VIT_THR, VIT_RANGE = 2.0, 10.0, 10.0, 10.0, 4.0, 1.0
#: Cost of an unvoiced-to-unvoiced transition: openSMILE's ``i == j == n-1`` test is never
#: true, so the fall-back cost 1.0 applies instead of ``wTuu`` (0).
VIT_UU = 1.0
VIT_EMPTY = 999.0  # transition into or out of an empty candidate slot

_SHS_CACHE: dict[str, tuple[torch.Tensor, ...]] = {}


def _shs_axis() -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int], float, float]:
    """Knots (log2 Hz of the FFT bins), octave grid, auditory weights, SHS shifts, grid start/step.

    The natural cubic spline through the knots maps a 513-bin magnitude spectrum onto
    the 513-point octave grid from 25 Hz (openSMILE cSpecScale); bin 0's knot is
    extrapolated linearly from bins 1 and 2.
    """
    df = RATE / SHS_NFFT
    max_f = df * SHS_POINTS  # openSMILE: maxF = deltaF * nMag
    knots = np.log2(np.maximum(np.arange(SHS_POINTS), 1) * df)
    knots[0] = 2 * knots[1] - knots[2]
    lo, hi = math.log2(SHS_MIN_F), math.log2(max_f)
    grid = np.linspace(lo, hi, SHS_POINTS)
    ppo = SHS_POINTS / math.log2(max_f / SHS_MIN_F)  # points per octave
    atan_s = ppo * math.log2(65.0 / 50.0) - 1.0
    audw = 0.5 + np.arctan(3.0 * (np.arange(SHS_POINTS) + 1 - atan_s) / ppo) / math.pi
    shifts = [int(math.floor(np.float32(ppo) * math.log2(h)))
              for h in range(2, SHS_HARMONICS + 1)]
    step = (hi - lo) / (SHS_POINTS - 1)
    return knots, grid, audw, shifts, lo, step


def _shs_tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list[int],
                                                float, float]:
    """Spline matrix (linear bins -> octave scale), auditory weights, SHS shifts, grid."""
    key = str(device)
    if key not in _SHS_CACHE:
        from scipy.interpolate import CubicSpline  # only here: a one-off table

        knots, grid, audw, shifts, lo, step = _shs_axis()
        spline = CubicSpline(knots, np.eye(SHS_POINTS), bc_type="natural")(grid)
        _SHS_CACHE[key] = (torch.tensor(spline.T, dtype=torch.float32, device=device),
                           torch.tensor(audw, dtype=torch.float32, device=device),
                           shifts, lo, step)
    return _SHS_CACHE[key]


def _spline_tables() -> tuple[np.ndarray, ...]:
    """Tables of the O(n) natural-spline evaluation of :func:`_shs_rows` (float64).

    Returns ``(inv_h, lower, cp, inv_piv, interval, weights)``: ``1 / h_i`` of the knot
    spacings; the Thomas factorisation of the natural spline's tridiagonal system for
    the inner second derivatives ``M_1..M_{n-2}`` (``h_{i-1} M_{i-1} + 2 (h_{i-1} + h_i)
    M_i + h_i M_{i+1} = 6 (d_i - d_{i-1})``, ``d_i`` the slope of interval ``i``; its
    sub-diagonal divided by the pivots, the eliminated super-diagonal and the inverse
    pivots, shared by every frame); and per grid point its knot interval ``j`` and the
    weights ``(A, B, C, D)`` of ``S = A y_j + B y_{j+1} + C M_j + D M_{j+1}`` (the last
    interval's cubic beyond the last knot, as scipy's ``CubicSpline`` extrapolates).
    """
    key = ("spline-tables",)
    if key in _CACHE:
        return _CACHE[key]
    knots, grid, *_ = _shs_axis()
    n = knots.size
    h = np.diff(knots)
    lower = np.zeros(n)
    cp = np.zeros(n)
    inv_piv = np.zeros(n)
    for i in range(1, n - 1):  # row i of the system, unknown M_i
        lower[i] = h[i - 1] if i > 1 else 0.0
        piv = 2.0 * (h[i - 1] + h[i]) - lower[i] * cp[i - 1]
        inv_piv[i] = 1.0 / piv
        cp[i] = h[i] / piv if i < n - 2 else 0.0
    lower *= inv_piv  # forward sweep: M_i = rhs_i / piv_i - (lower_i / piv_i) M_{i-1}
    j = np.clip(np.searchsorted(knots, grid, side="right") - 1, 0, n - 2)
    hj = h[j]
    a = (knots[j + 1] - grid) / hj
    b = 1.0 - a
    weights = np.stack([a, b, (a ** 3 - a) * hj * hj / 6.0, (b ** 3 - b) * hj * hj / 6.0], -1)
    _CACHE[key] = (1.0 / h, lower, cp, inv_piv, j.astype(np.int64),
                   np.ascontiguousarray(weights))
    return _CACHE[key]


def _spec_enhance(mag: torch.Tensor) -> torch.Tensor:
    """Zero bins 3 or more bins away from both neighbouring spectral maxima.

    openSMILE's SHS peak enhancement (only between two maxima).
    """
    n = mag.shape[-1]
    left = torch.ones_like(mag, dtype=torch.bool)
    right = torch.ones_like(mag, dtype=torch.bool)
    left[..., 1:] = mag[..., 1:] > mag[..., :-1]
    right[..., :-1] = mag[..., :-1] >= mag[..., 1:]
    peak = left & right
    peak[..., 0] = mag[..., 0] > mag[..., 1]
    peak[..., -1] = mag[..., -1] > mag[..., -2]
    # zero where no maximum lies within 2 bins but maxima lie on both sides
    lead = peak.shape[:-1]
    pk = peak.reshape(-1, 1, n).float()
    near = torch.nn.functional.max_pool1d(pk, 5, stride=1, padding=2).reshape(*lead, n) > 0
    idx = torch.arange(n, device=mag.device)
    first = peak.float().argmax(-1, keepdim=True)
    last = n - 1 - peak.flip(-1).float().argmax(-1, keepdim=True)
    zero = ~near & (idx > first) & (idx < last)
    # a single maximum: openSMILE reads posmax[1] (= 0) and zeroes every bin from 3 on
    single = (peak.sum(-1, keepdim=True) == 1) & (idx >= 3)
    return mag.masked_fill(zero | single, 0.0)


def _smooth3(mag: torch.Tensor) -> torch.Tensor:
    """Smooth SHS spectra as openSMILE: ``(m[k-1] + 2 m[k] + m[k+1]) / 4`` (last bin kept)."""
    sm = mag.clone()
    prev = torch.nn.functional.pad(mag[..., :-2], (1, 0))
    sm[..., :-1] = (prev + 2 * mag[..., :-1] + mag[..., 1:]) / 4
    return sm


def _enhance_smooth_row(m: np.ndarray, peak: np.ndarray, e: np.ndarray, o: np.ndarray
                        ) -> None:
    """:func:`_spec_enhance` then :func:`_smooth3` of one float32 row ``m`` into ``o``.

    ``peak`` (uint8, 4 longer than ``m``) and ``e`` (float32, as ``m``) are scratch rows.
    Written without branches in the inner loops (they vectorise); the same comparisons
    and float32 arithmetic as the torch version.
    """
    n = m.shape[0]
    two = np.float32(2.0)
    four = np.float32(4.0)
    # peak[k + 2]: m[k] is a maximum (2 zeros of padding each side)
    peak[0] = peak[1] = peak[n + 2] = peak[n + 3] = 0
    peak[2] = m[0] > m[1]
    for k in range(1, n - 1):
        peak[k + 2] = (m[k] > m[k - 1]) & (m[k] >= m[k + 1])
    peak[n + 1] = m[n - 1] > m[n - 2]
    n_pk = 0
    for k in range(n):
        n_pk += peak[k + 2]
    first = 0  # as argmax of an all-False row: first = 0, last = n - 1
    last = n - 1
    if n_pk > 0:
        while not peak[first + 2]:
            first += 1
        while not peak[last + 2]:
            last -= 1
    if n_pk == 1:  # a single maximum: openSMILE zeroes every bin from 3 on
        for k in range(n):
            e[k] = m[k] if k < 3 else np.float32(0.0)
    else:  # zero bins with no maximum within 2 bins, strictly between first and last
        for k in range(n):
            near = (peak[k] | peak[k + 1] | peak[k + 2] | peak[k + 3] | peak[k + 4]) != 0
            e[k] = m[k] if (near or k <= first or k >= last) else np.float32(0.0)
    o[0] = (np.float32(0.0) + two * e[0] + e[1]) / four
    for k in range(1, n - 1):
        o[k] = (e[k - 1] + two * e[k] + e[k + 1]) / four
    o[n - 1] = e[n - 1]


def _enhance_smooth_rows(mag: np.ndarray, out: np.ndarray) -> None:
    """:func:`_spec_enhance` then :func:`_smooth3` of float32 rows ``(R, n)`` into ``out``.

    The same comparisons and float32 arithmetic in one pass per row (compiled with
    numba: on CPU this replaces about twenty whole-array torch passes).
    """
    n = mag.shape[1]
    peak = np.zeros(n + 4, dtype=np.uint8)
    e = np.zeros(n, dtype=np.float32)
    for r in range(mag.shape[0]):
        _enhance_smooth_row(mag[r], peak, e, out[r])


def _enhance_smooth(mag: torch.Tensor) -> torch.Tensor:
    """Peak enhancement and smoothing of SHS spectra ``(..., n)`` (numba on CPU, else torch)."""
    if mag.device.type != "cpu" or not _HAVE_NUMBA or mag.dtype != torch.float32:
        return _smooth3(_spec_enhance(mag))
    flat = np.ascontiguousarray(mag.reshape(-1, mag.shape[-1]).numpy())
    out = np.empty_like(flat)
    _enhance_smooth_rows(flat, out)
    return torch.from_numpy(out).reshape(mag.shape)


def _gauss_window(fr: torch.Tensor) -> torch.Tensor:
    """60 ms frames ``(..., 960)`` times openSMILE's Gaussian window (sigma 0.4)."""
    return fr * _cached(("gauss", WIN_LONG, str(fr.device)), lambda: _gauss(WIN_LONG, fr.device))


#: Frames per block of :func:`_gauss_mag`'s transforms on CPU (about 1 MB of spectra).
MAG_BLOCK = 256


def _gauss_mag(gw: torch.Tensor) -> torch.Tensor:
    """Magnitude spectrum ``(..., 513)`` of Gaussian-windowed 60 ms frames.

    Zero padded to 1024 points (openSMILE's cTransformFFT); shared by the pitch
    candidates and the harmonics.  On CPU the frames are transformed in blocks of
    :data:`MAG_BLOCK` into one output tensor: the same values, but the complex
    spectra of a long signal are never held at once (a fresh 25 MB buffer per 60 s
    costs about as many page faults as the transform itself).
    """
    if gw.device.type != "cpu" or gw.dim() != 3 or gw.shape[1] <= MAG_BLOCK:
        return torch.fft.rfft(gw, n=SHS_NFFT).abs()
    out = torch.empty(*gw.shape[:-1], SHS_POINTS, dtype=gw.dtype)
    for b in range(gw.shape[0]):
        for t in range(0, gw.shape[1], MAG_BLOCK):
            torch.abs(torch.fft.rfft(gw[b, t:t + MAG_BLOCK], n=SHS_NFFT),
                      out=out[b, t:t + MAG_BLOCK])
    return out


def _frame_rms(gw: torch.Tensor) -> torch.Tensor:
    """RMS ``(B, T)`` of windowed frames ``(B, T, n)`` (in blocks on CPU, same values)."""
    if gw.device.type != "cpu" or gw.shape[1] <= MAG_BLOCK:
        return gw.pow(2).mean(-1).sqrt()
    out = torch.empty(gw.shape[:-1], dtype=gw.dtype)
    for b in range(gw.shape[0]):
        for t in range(0, gw.shape[1], MAG_BLOCK):
            torch.sqrt(gw[b, t:t + MAG_BLOCK].pow(2).mean(-1), out=out[b, t:t + MAG_BLOCK])
    return out


def _shs_candidates(mag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pitch candidates of 60 ms frames by subharmonic summation (openSMILE cPitchShs).

    The Gaussian-windowed frame's magnitude spectrum is peak-enhanced, smoothed,
    spline-interpolated onto an octave (log2) frequency axis from 25 Hz and weighted by
    an auditory sensitivity curve (cSpecScale); shifted copies of it at harmonics
    2..15 are added with weights 0.85^(h-1) (cPitchShs).  The 6 highest peaks of the
    sum are the candidates; a candidate's voicing is ``1 - mean(sum) / peak``.

    Args:
        mag: ``(..., 513)`` magnitude spectra of the frames (:func:`_gauss_mag`).

    Returns:
        ``(freq, voicing)``, each ``(..., 6)``: candidates in 55-1000 Hz, the best
        scoring first; empty slots have frequency and voicing 0.
    """
    if mag.device.type == "cpu" and _HAVE_NUMBA and mag.dtype == torch.float32:
        return _shs_candidates_cpu(mag)
    dev = mag.device
    spline, audw, shifts, lo, step = _shs_tables(dev)
    # in place on fresh tensors (the same values as out-of-place ops, fewer passes):
    # the auditory weights are > 0, so weighting then clipping at 0 keeps only oct_ > 0
    oct_ = (_enhance_smooth(mag) @ spline).mul_(audw).clamp_(min=0.0)
    n = oct_.shape[-1]
    padded = torch.nn.functional.pad(oct_, (0, max(shifts)))
    ss = oct_  # the shifted copies are read from ``padded``
    w = SHS_COMPRESSION
    for s in shifts:
        ss.add_(padded[..., s:s + n], alpha=w)
        w *= SHS_COMPRESSION
    ss = ss.div_(SHS_HARMONICS).clamp_(min=0.0)
    ss_mean = ss.mean(-1, keepdim=True)
    is_peak = torch.zeros_like(ss, dtype=torch.bool)
    is_peak[..., 1:-1] = (ss[..., :-2] < ss[..., 1:-1]) & (ss[..., 1:-1] > ss[..., 2:])
    score = ss.masked_fill(~is_peak, -1.0)
    top, pos = score.topk(SHS_CANDIDATES, dim=-1)
    found = top > 0
    pos = pos.clamp(1, n - 2)
    y0 = ss.gather(-1, pos - 1)
    y1 = ss.gather(-1, pos)
    y2 = ss.gather(-1, pos + 1)
    den = y0 - 2 * y1 + y2
    off = torch.where(den.abs() > 0, 0.5 * (y0 - y2) / den, torch.zeros_like(den))
    sc = y1 - 0.25 * (y0 - y2) * off
    freq = torch.exp2(lo + (pos.to(ss.dtype) + off) * step)
    voice = torch.where((sc > 0) & (sc > ss_mean), 1 - ss_mean / sc.clamp(min=1e-30),
                        torch.zeros_like(sc))
    valid = found & (freq >= F0_MIN) & (freq <= F0_MAX)
    # compact the valid candidates to the front (order kept), then the best score first
    order = torch.sort((~valid).to(torch.int8), dim=-1, stable=True).indices
    freq, voice, sc, valid = (t.gather(-1, order) for t in (freq, voice, sc, valid))
    best = torch.where(valid, sc, torch.full_like(sc, -math.inf)).argmax(-1, keepdim=True)
    k = torch.arange(SHS_CANDIDATES, device=dev)
    swap = torch.where(k == 0, best, torch.where(k == best, torch.zeros_like(best), k))
    freq, voice, valid = (t.gather(-1, swap) for t in (freq, voice, valid))
    zero = torch.zeros_like(freq)
    return torch.where(valid, freq, zero), torch.where(valid, voice, zero)


def _natural_spline_cols(y: np.ndarray, nb: int, inv_h: np.ndarray, lower: np.ndarray,
                         cp: np.ndarray, inv_piv: np.ndarray, interval: np.ndarray,
                         weights: np.ndarray, d2: np.ndarray, m2: np.ndarray, out: np.ndarray
                         ) -> None:
    """Natural cubic splines through ``(knots, y[:, c])`` at the grid points, O(n) (float64).

    Columns ``0..nb-1`` of ``y`` ``(n_knots, B)`` are splined together (the recursions
    then run across the columns, which hides their latency, and each grid point reads
    contiguous knot rows); the tables are those of :func:`_spline_tables`; ``d2`` and
    ``m2`` are float64 scratch arrays shaped as ``y``; the values are written to
    ``out`` ``(n_grid, B)``.
    """
    n = y.shape[0]
    # second derivatives M (M_0 = M_{n-1} = 0) by the Thomas algorithm; the right-hand
    # sides first, so that the recursion itself is one multiply-add per step
    for i in range(n - 1):
        for c in range(nb):
            d2[i, c] = (np.float64(y[i + 1, c]) - np.float64(y[i, c])) * inv_h[i]
    for i in range(1, n - 1):
        for c in range(nb):
            d2[i - 1, c] = 6.0 * (d2[i, c] - d2[i - 1, c]) * inv_piv[i]
    for c in range(nb):
        m2[0, c] = 0.0
        m2[n - 1, c] = 0.0
    for i in range(1, n - 1):
        for c in range(nb):
            m2[i, c] = d2[i - 1, c] - lower[i] * m2[i - 1, c]
    for i in range(n - 3, 0, -1):
        for c in range(nb):
            m2[i, c] -= cp[i] * m2[i + 1, c]
    for g in range(out.shape[0]):
        j = interval[g]
        w0, w1, w2, w3 = weights[g, 0], weights[g, 1], weights[g, 2], weights[g, 3]
        for c in range(nb):
            out[g, c] = (w0 * y[j, c] + w1 * y[j + 1, c] + w2 * m2[j, c]
                         + w3 * m2[j + 1, c])


def _shs_rows(mag: np.ndarray, inv_h: np.ndarray, lower: np.ndarray, cp: np.ndarray,
              inv_piv: np.ndarray, interval: np.ndarray, weights: np.ndarray,
              audw: np.ndarray, shifts: np.ndarray, hw: np.ndarray, lo: np.float32,
              step: np.float32, freq: np.ndarray, voice: np.ndarray) -> None:
    """SHS pitch candidates of float32 magnitude rows ``(R, 513)`` (CPU path, numba).

    Per row, in cache: peak enhancement + smoothing (:func:`_enhance_smooth_row`); the
    natural cubic spline onto the octave grid in O(n) (:func:`_natural_spline_cols`, 8
    frames at a time) -- the tridiagonal solve for the second derivatives with the
    shared factorisation of :func:`_spline_tables`, then each grid point from its two
    knots (float64, the same spline as the dense matrix of :func:`_shs_tables`);
    auditory weighting and clipping; the subharmonic sum (float32, harmonic weights
    ``hw``); the 6 highest peaks with parabolic interpolation, compacted and the best
    scoring first as in :func:`_shs_candidates`.  Writes ``freq`` and ``voice``
    ``(R, 6)`` (0 in empty slots).
    """
    n_rows, n = mag.shape
    n_c = freq.shape[1]
    peak = np.zeros(n + 4, dtype=np.uint8)
    e = np.zeros(n, dtype=np.float32)
    blk = 8  # frames splined together
    yb = np.zeros((n, blk), dtype=np.float32)
    m2 = np.zeros((n, blk))
    d2 = np.zeros((n, blk))
    sp = np.zeros((n, blk))
    oct_ = np.zeros(n, dtype=np.float32)
    ss = np.zeros(n, dtype=np.float32)
    top_v = np.zeros(n_c, dtype=np.float32)
    top_k = np.zeros(n_c, dtype=np.int64)
    f_c = np.zeros(n_c, dtype=np.float32)
    v_c = np.zeros(n_c, dtype=np.float32)
    s_c = np.zeros(n_c, dtype=np.float32)
    zero = np.float32(0.0)
    n_h = np.float32(shifts.shape[0] + 1)
    for r in range(n_rows):
        c = r % blk
        if c == 0:  # enhance, smooth and spline the next block of frames
            nb = min(blk, n_rows - r)
            for b in range(nb):
                _enhance_smooth_row(mag[r + b], peak, e, oct_)
                for k in range(n):
                    yb[k, b] = oct_[k]
            _natural_spline_cols(yb, nb, inv_h, lower, cp, inv_piv, interval, weights, d2,
                                 m2, sp)
        for g in range(n):
            o = np.float32(sp[g, c]) * audw[g]
            oct_[g] = o if o > zero else zero
        for k in range(n):
            ss[k] = oct_[k]
        for h in range(shifts.shape[0]):
            wh = hw[h]
            src = oct_[shifts[h]:]  # a view: non-negative indices, the loop vectorises
            for k in range(n - shifts[h]):
                ss[k] += wh * src[k]
        total = 0.0
        for k in range(n):
            v = ss[k] / n_h
            ss[k] = v if v > zero else zero
            total += ss[k]
        mean = np.float32(total / n)
        # the n_c highest strict local maxima (all > 0), highest first
        n_found = 0
        for k in range(1, n - 1):
            v = ss[k]
            if ss[k - 1] < v and v > ss[k + 1]:
                if n_found < n_c:
                    n_found += 1
                elif v <= top_v[n_c - 1]:
                    continue
                c = n_found - 1
                while c > 0 and top_v[c - 1] < v:
                    top_v[c] = top_v[c - 1]
                    top_k[c] = top_k[c - 1]
                    c -= 1
                top_v[c] = v
                top_k[c] = k
        n_valid = 0
        best = 0
        for c in range(n_found):
            k = top_k[c]
            y0, y1, y2 = ss[k - 1], ss[k], ss[k + 1]
            den = y0 - np.float32(2.0) * y1 + y2
            off = np.float32(0.5) * (y0 - y2) / den if den != zero else zero
            sc = y1 - np.float32(0.25) * (y0 - y2) * off
            f = np.float32(2.0) ** (lo + (np.float32(k) + off) * step)
            if f < F0_MIN or f > F0_MAX:
                continue
            if sc > zero and sc > mean:
                v_c[n_valid] = np.float32(1.0) - mean / max(sc, np.float32(1e-30))
            else:
                v_c[n_valid] = zero
            f_c[n_valid] = f
            s_c[n_valid] = sc
            if n_valid == 0 or sc > s_c[best]:  # the first best, as argmax
                best = n_valid
            n_valid += 1
        for c in range(n_c):
            freq[r, c] = zero
            voice[r, c] = zero
        for c in range(n_valid):
            dst = 0 if c == best else (best if c == 0 else c)
            freq[r, dst] = f_c[c]
            voice[r, dst] = v_c[c]


def _shs_candidates_cpu(mag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_shs_candidates` on CPU: one compiled pass per frame (:func:`_shs_rows`).

    The same candidates as the torch path up to float32 rounding (the spline is
    evaluated in O(n) instead of as a dense 513 x 513 float32 product).
    """
    def make() -> tuple:
        _, _, audw, shifts, lo, step = _shs_axis()
        hw = np.empty(len(shifts), dtype=np.float32)  # 0.85^(h-1), as the torch path's alpha
        w = SHS_COMPRESSION
        for i in range(len(shifts)):
            hw[i] = w
            w *= SHS_COMPRESSION
        return (*_spline_tables(), audw.astype(np.float32), np.array(shifts, dtype=np.int64),
                hw, np.float32(lo), np.float32(step))

    tables = _cached(("shs-cpu",), make)
    flat = np.ascontiguousarray(mag.reshape(-1, mag.shape[-1]).numpy())
    freq = np.empty((flat.shape[0], SHS_CANDIDATES), dtype=np.float32)
    voice = np.empty_like(freq)
    _shs_rows(flat, *tables, freq, voice)
    shape = (*mag.shape[:-1], SHS_CANDIDATES)
    return torch.from_numpy(freq).reshape(shape), torch.from_numpy(voice).reshape(shape)


def _range_weight(f: np.ndarray) -> np.ndarray:
    """Pitch range cost built into openSMILE: 0 in 100-350 Hz, rising outside."""
    return np.select([f <= 0, f < 100, f < 350, f < 600],
                     [2.0, 1.0 - f / 100.0, 0.0, (f - 350.0) / 250.0], 1.2)


def _viterbi_costs(freq: np.ndarray, voice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local ``(T, 7)`` and transition ``(T, 7, 7)`` costs of openSMILE's pitch smoother.

    States 0-5 are the candidates, 6 is unvoiced; ``trans[t, i, j]`` is the cost of
    going from state ``j`` at ``t - 1`` to state ``i`` at ``t``.
    """
    n_t, k = freq.shape
    pv = np.clip(voice, 0.01, 1.0)
    local = np.empty((n_t, k + 1))
    local[:, :k] = ((-np.log(pv) + np.where(pv < SHS_VOICING_CUTOFF, VIT_THR, 0.0))
                    * VIT_LOCAL + _range_weight(freq) * VIT_RANGE)
    local[:, k] = VIT_LOCAL * VIT_THR * (voice >= SHS_VOICING_CUTOFF).any(-1)
    trans = np.empty((n_t, k + 1, k + 1))
    trans[:, :k, k] = VIT_TVUV
    trans[:, k, :k] = VIT_TVUV
    trans[:, k, k] = VIT_UU
    if n_t > 1:
        f1 = freq[1:, :, None]  # current state i
        f0 = freq[:-1, None, :]  # previous state j
        ok = (f1 > 0) & (f0 > 0)
        r = np.log(np.where(ok, f1, 1.0) / np.where(ok, f0, 1.0))
        # openSMILE keeps the last log-ratio it computed in one member variable: within
        # row i it is the ratio of the nearest valid (i, j') with j' < j, else 0
        jj = np.arange(k)
        last = np.where(ok, jj, -1)
        last = np.maximum.accumulate(last, axis=-1)
        last = np.concatenate([np.full(last.shape[:-1] + (1,), -1), last[..., :-1]], -1)
        prev_r = np.where(last >= 0, np.take_along_axis(r, np.maximum(last, 0), -1), 0.0)
        trans[1:, :k, :k] = np.where(ok, VIT_TVV * np.abs(r) + VIT_TVVD * np.abs(r - prev_r),
                                     VIT_EMPTY)
    return local, trans


def _viterbi_path(local: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Minimum-cost state sequence ``(T,)`` through ``local``/``trans`` costs."""
    n_t, n_s = local.shape
    back = np.zeros((n_t, n_s), dtype=np.int64)
    cost = local[0].copy()
    new = np.empty(n_s)
    for t in range(1, n_t):
        for i in range(n_s):
            best, best_v = 0, trans[t, i, 0] + cost[0]
            for j in range(1, n_s):
                v = trans[t, i, j] + cost[j]
                if v < best_v:  # first minimum, as argmin
                    best, best_v = j, v
            back[t, i] = best
            new[i] = best_v + local[t, i]
        cost[:] = new
    path = np.empty(n_t, dtype=np.int64)
    path[-1] = int(cost.argmin())
    for t in range(n_t - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def _pitch_shs_viterbi(mag: torch.Tensor) -> torch.Tensor:
    """F0 (Hz, 0 = unvoiced) of ``(B, T, 513)`` frame spectra: SHS candidates + Viterbi.

    Reproduces openSMILE's cPitchShs + cPitchSmootherViterbi (eGeMAPSv02 weights); the
    smoother decides over the whole signal, where openSMILE decides within a 40-frame
    look-ahead buffer (the two agree when the best paths merge within 40 frames).
    """
    freq, voice = _shs_candidates(mag)
    f_np = freq.double().cpu().numpy()
    v_np = voice.double().cpu().numpy()
    out = np.zeros(f_np.shape[:2])
    k = f_np.shape[-1]
    for b in range(f_np.shape[0]):
        local, trans = _viterbi_costs(f_np[b], v_np[b])
        path = _viterbi_path(local, trans)
        voiced = path < k
        out[b, voiced] = f_np[b, np.nonzero(voiced)[0], path[voiced]]
    return torch.from_numpy(out).to(mag.device, torch.float32)


def _quad_peak(y0: float, y1: float, y2: float) -> tuple[float, float]:
    """Offset (-1..1) and value of the vertex of the parabola through 3 equidistant points."""
    den = y0 - 2.0 * y1 + y2
    if den == 0.0:
        return 0.0, y1
    off = 0.5 * (y0 - y2) / den
    return off, y1 - 0.25 * (y0 - y2) * off


def _pearson(x: np.ndarray, a: int, b: int, n: int) -> float:
    sx = sy = sxx = syy = sxy = 0.0
    for i in range(n):
        u, v = x[a + i], x[b + i]
        sx += u
        sy += v
    mx, my = sx / n, sy / n
    for i in range(n):
        u, v = x[a + i] - mx, x[b + i] - my
        sxy += u * v
        sxx += u * u
        syy += v * v
    if sxx <= 0.0 or syy <= 0.0:
        return 0.0
    return sxy / math.sqrt(sxx * syy)


def _ptp(x: np.ndarray, a: int, n: int) -> float:
    hi = lo = x[a + 1]
    for i in range(a + 1, a + n - 1):
        hi = max(hi, x[i])
        lo = min(lo, x[i])
    return hi - lo


def _jitter_shimmer_walk(x: np.ndarray, f0: np.ndarray) -> np.ndarray:
    """Local jitter and shimmer (dB) per 10 ms frame, as openSMILE's cPitchJitter.

    A waveform-matching walk over the signal: in each voiced frame, consecutive pitch
    periods are found by maximising the normalised cross-correlation of adjacent
    waveform stretches over lengths within +-10 % of the frame's period; periods whose
    correlation exceeds 0.5 count.  Jitter is the mean absolute difference of
    consecutive periods (carried over from the previous voiced frame) over the mean
    period; shimmer is ``20 log10(1 + mean |A_i - A_i+1| / mean A)`` with ``A`` the
    peak-to-peak amplitude of a period.  A voiced frame without a new period repeats
    the previous values; unvoiced frames are 0 and reset the state.

    Args:
        x: float64 samples at 16 kHz (zero padded to cover the last frame).
        f0: F0 (Hz) per frame, 0 where unvoiced.

    Returns:
        ``(frames, 2)``: jitter (ratio, at most 1) and shimmer (dB).
    """
    n_frames = f0.shape[0]
    out = np.zeros((n_frames, 2))
    last_idx = 0
    last_mis = 0
    last_t0 = 0.0
    last_jit = 0.0
    last_shim = 0.0
    cc = np.zeros(64)
    n_x = x.shape[0]
    for t in range(n_frames):
        start_v = t * HOP
        to_read0 = HOP + last_mis
        to_read = to_read0
        f = f0[t]
        t0f = t0min = t0max = 0
        if f > 0.0:
            tf = RATE / f
            t0f = int(round(tf))
            t0min = int(math.floor(0.9 * tf))
            t0max = int(math.ceil(1.1 * tf))
            to_read = max(to_read, 2 * t0max + 2)
        max_read = last_mis + WIN_LONG
        to_read = min(to_read, max_read)
        if start_v - last_mis != last_idx:
            last_idx = start_v
            to_read = min(to_read, WIN_LONG)
        n_t = min(to_read, n_x - last_idx)
        if f > 0.0 and n_t > 0:
            base = last_idx
            start = 0
            last_period = 0
            n_per = 0
            n_loc = 0
            sum_per = sum_diff = sum_amp = sum_ad = 0.0
            n_lag = t0max - t0min + 1
            if cc.shape[0] < n_lag:
                cc = np.zeros(n_lag)
            while start < n_t - 2 * t0max - 1:
                for k in range(n_lag):
                    lag = t0min + k
                    cc[k] = _pearson(x, base + start, base + start + lag, lag)
                best = -1
                best_v = 0.0
                for k in range(1, n_lag - 2):
                    if cc[k - 1] < cc[k] and cc[k] > cc[k + 1] and (best < 0 or cc[k] > best_v):
                        best, best_v = k, cc[k]
                if best < 0:
                    start += t0f
                else:
                    pp = t0min + best
                    os_ = start
                    start += pp
                    a0 = _ptp(x, base + os_, pp)
                    a1 = _ptp(x, base + start, pp)
                    off, cci = _quad_peak(cc[best - 1], cc[best], cc[best + 1])
                    if cci > 0.5:
                        period = abs(t0min + best + off) / RATE
                        sum_per += period
                        n_per += 1
                        if last_t0 > 0.0:
                            sum_diff += abs(last_t0 - period)
                            n_loc += 1
                        last_t0 = period
                        sum_amp += 0.5 * (a0 + a1)
                        sum_ad += abs(a0 - a1)
                if start < to_read0 - 1:
                    last_period = start
            last_mis = to_read0 - last_period
            if n_per > 0 and n_loc > 0:
                last_jit = (sum_diff / n_loc) / (sum_per / n_per)
            if n_per > 0:
                last_shim = sum_ad / sum_amp if sum_amp > 0.0 else 0.0
            if n_per == 0 or n_loc > 0:
                last_jit = min(last_jit, 1.0)
                out[t, 0] = last_jit
            last_shim = min(last_shim, 1.0)
            out[t, 1] = 20.0 * math.log10(last_shim + 1.0)
        else:
            last_period = to_read0
            last_mis = 0
            last_t0 = 0.0
            last_jit = 0.0
            last_shim = 0.0
        last_idx += last_period
    return out


try:  # numba ships with librosa (a dependency); without it these loops run as Python
    from numba import njit

    _HAVE_NUMBA = True
    _enhance_smooth_row = njit(cache=True)(_enhance_smooth_row)
    _enhance_smooth_rows = njit(cache=True)(_enhance_smooth_rows)
    _natural_spline_cols = njit(cache=True)(_natural_spline_cols)
    _levinson_rows = njit(cache=True)(_levinson_rows)
    _hnr_rows = njit(cache=True)(_hnr_rows)
    _harmonic_peak_rows = njit(cache=True)(_harmonic_peak_rows)
    _balance = njit(cache=True)(_balance)
    _hqr = njit(cache=True)(_hqr)
    _lpc_formant_rows = njit(cache=True)(_lpc_formant_rows)
    _shs_rows = njit(cache=True)(_shs_rows)
    _viterbi_path = njit(cache=True)(_viterbi_path)
    _quad_peak = njit(cache=True)(_quad_peak)
    _pearson = njit(cache=True)(_pearson)
    _ptp = njit(cache=True)(_ptp)
    _jitter_shimmer_walk = njit(cache=True)(_jitter_shimmer_walk)
except ImportError:  # pragma: no cover
    _HAVE_NUMBA = False


def frame_llds(x: torch.Tensor, n_frames: int) -> dict[str, torch.Tensor]:
    """Return the eGeMAPS low-level descriptors of a batch of 16 kHz signals.

    Args:
        x: ``(batch, samples)`` float32 signals at 16 kHz (zero padded to one length).
        n_frames: Number of 10 ms frames to compute (at least 1).

    Returns:
        ``{name: (batch, n_frames) tensor}`` for :data:`LLD_NAMES`; voice descriptors
        (F0 in semitones, jitter, shimmer, HNR, harmonics, formants) are 0 on unvoiced
        frames, as in openSMILE's voiced selections.
    """
    out = _spectral_llds(x, n_frames)
    gw = _gauss_window(_frames(x, WIN_LONG, n_frames))
    mag = _gauss_mag(gw)  # one spectrum for the pitch candidates and the harmonics
    f0 = _pitch_shs_viterbi(mag)
    rms = _frame_rms(gw)
    voiced = (f0 > 0) & (rms >= VOICING_RMS)  # eGeMAPS volmerge
    f0 = torch.where(voiced, f0, torch.ones_like(f0))
    period = RATE / f0
    # openSMILE F0finalLog: semitones above 27.5 Hz, 1 for 0 < F0 <= 29.136 Hz
    semi = torch.where(f0 > 29.136, 12 * torch.log2(f0 / 27.5), torch.ones_like(f0))
    out["F0semitone"] = torch.where(voiced, semi, torch.zeros_like(f0))
    f0_np = torch.where(voiced, f0, torch.zeros_like(f0)).double().cpu().numpy()
    x_np = x.double().cpu().numpy()
    walk = np.stack([_jitter_shimmer_walk(np.pad(x_np[b], (0, WIN_LONG)), f0_np[b])
                     for b in range(x_np.shape[0])])
    walk_t = torch.from_numpy(walk).to(x.device, torch.float32)
    jit, shim = walk_t[..., 0], walk_t[..., 1]
    # formants and harmonics only where they are used: the voiced frames
    formants = _formants(x, n_frames, voiced)
    harm = _harmonics(mag[voiced], f0[voiced], formants)
    harm["HNRdBACF"] = _hnr_acf(gw[voiced], period[voiced])
    for i in range(3):
        harm[f"F{i + 1}frequency"] = formants[..., 2 * i]
        harm[f"F{i + 1}bandwidth"] = formants[..., 2 * i + 1]
    vals = {"jitterLocal": jit, "shimmerLocaldB": shim}
    for name, flat in harm.items():
        full = torch.zeros_like(f0)
        full[voiced] = torch.nan_to_num(flat.to(full.dtype))
        vals[name] = full
    zero = torch.zeros_like(f0)
    for name in VOICE_NAMES:
        out[name] = torch.where(voiced, torch.nan_to_num(vals[name]), zero)
    return out


# -- extractor ---------------------------------------------------------------------------


class TorchProsody(ProsodyBackend):
    """eGeMAPSv02 functionals computed with torch (licence-clean, batched, CPU or CUDA).

    Args:
        config: Prosody section (defaults when ``None``); ``backend`` must be ``"torch"``
            or ``"opensmile"`` (the feature set must be eGeMAPSv02, the level functionals).
        sample_rate: Rate (Hz) files are decoded to by :meth:`process_file`.
        device: ``"auto"`` or ``None`` (CUDA when available, else CPU), ``"cpu"`` or
            ``"cuda[:i]"`` (``atrisk extract`` passes its ``--device``).
        batch_size: Signals processed together (padded to the longest of the batch);
            ``None``: 1 on CPU (measured fastest there), 32 on CUDA.
        max_batch_seconds: Cap on the padded audio of one batch (seconds), bounding memory.

    Raises:
        ConfigError: When the feature set is not eGeMAPSv02, the level is not
            functionals, or the device is unusable.
    """

    name = "torch"

    def __init__(self, config: ProsodyConfig | None = None, sample_rate: int = 16000,
                 device: str | torch.device | None = None, batch_size: int | None = None,
                 max_batch_seconds: float = 1200.0):
        self.config = config or ProsodyConfig()
        if self.config.feature_set != "eGeMAPSv02":
            raise ConfigError(
                f"the torch prosody backend computes eGeMAPSv02 only, got "
                f"{self.config.feature_set!r}")
        if getattr(self.config, "feature_level", "functionals") != "functionals":
            raise ConfigError("the torch prosody backend writes functionals only "
                              "(prosody.feature_level='functionals')")
        self.sample_rate = int(sample_rate)
        self.device = resolve_device(device)
        if batch_size is None:  # CPU: one signal at a time is faster (cache); GPU: batches
            batch_size = 1 if self.device.type == "cpu" else 32
        self.batch_size = max(1, int(batch_size))
        self.max_batch_seconds = float(max_batch_seconds)

    def __repr__(self) -> str:
        return (f"TorchProsody(sample_rate={self.sample_rate}, "
                f"device={str(self.device)!r}, batch_size={self.batch_size})")

    @property
    def feature_names(self) -> list[str]:
        """The 88 eGeMAPSv02 column names, as openSMILE names them."""
        return list(FEATURE_NAMES)

    @property
    def backend_name(self) -> str:
        """Backend id recorded with the table, e.g. ``torch-eGeMAPSv02-2.5.1``."""
        return f"torch-eGeMAPSv02-{torch.__version__.split('+')[0]}"

    # -- processing ------------------------------------------------------------------

    def _prepare(self, signal: np.ndarray, sample_rate: int) -> torch.Tensor:
        x = mono_finite(signal, sample_rate)
        t = torch.from_numpy(np.ascontiguousarray(x))
        if int(sample_rate) != RATE and t.numel():
            t = AF.resample(t, int(sample_rate), RATE)
        return t

    def functionals(self, signals: Sequence[np.ndarray], sample_rate: int
                    ) -> tuple[np.ndarray, list[str | None]]:
        """Return the functionals of several signals, computed in batches, and the failures.

        Args:
            signals: 1-D (or ``(channels, samples)``) arrays, all at ``sample_rate``.
            sample_rate: Their rate (Hz); other rates than 16 kHz are resampled.

        Returns:
            ``(len(signals), 88)`` float64 array in :attr:`feature_names` order (a
            signal shorter than one 60 ms frame gives a row of NaN) and, per signal, why
            the functionals failed (``None`` when they did not).

        Raises:
            ValueError: When ``sample_rate`` is below 1000 Hz or a signal has more
                than 2 axes.
        """
        xs = [self._prepare(s, sample_rate) for s in signals]
        out = np.full((len(xs), len(FEATURE_NAMES)), np.nan)
        reasons: list[str | None] = [None] * len(xs)
        order = sorted(range(len(xs)), key=lambda i: xs[i].numel())
        batch: list[int] = []
        for i in order + [None]:
            if i is not None and xs[i].numel() < WIN_LONG:
                continue  # NaN row: too short for one frame
            flush = i is None or (batch and (
                len(batch) >= self.batch_size
                or xs[i].numel() * (len(batch) + 1) > self.max_batch_seconds * RATE))
            if flush and batch:
                self._run_batch([xs[j] for j in batch], out, batch, reasons)
                batch = []
            if i is not None:
                batch.append(i)
        return out, reasons

    def _run_batch(self, xs: list[torch.Tensor], out: np.ndarray, rows: list[int],
                   reasons: list[str | None]) -> None:
        longest = max(x.numel() for x in xs)
        x = torch.zeros(len(xs), longest)
        for k, s in enumerate(xs):
            x[k, : s.numel()] = s
        n_frames = [(s.numel() - WIN_LONG) // HOP + 2 for s in xs]
        with torch.inference_mode():
            llds = frame_llds(x.to(self.device), max(n_frames))
            arrays = {k: v.float().cpu().numpy() for k, v in llds.items()}
        for k, row in enumerate(rows):
            one = {name: a[k, : n_frames[k]] for name, a in arrays.items()}
            try:
                out[row] = functionals(one)
            except Exception as exc:  # one bad signal must not stop a batch
                reasons[row] = f"torch prosody failed: {type(exc).__name__}: {exc}"
                log.warning("%s; features set to NaN", reasons[row])
