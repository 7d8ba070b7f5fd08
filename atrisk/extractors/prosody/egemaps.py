"""eGeMAPSv02's 88 functionals computed in numpy from per-frame contours.

Shared by both prosody backends (no torch here, so the openSMILE backend does not load
it): :func:`functionals` takes the torch backend's raw descriptors (smoothed and masked
here, NaN where undefined); :func:`opensmile_functionals` takes openSMILE's own
contours (the frames its functionals read, already smoothed) and reproduces
openSMILE's functionals arithmetic, so that
:class:`~atrisk.extractors.prosody.OpenSmileProsody` can stream hours-long tracks in
bounded memory (``process_stream``).  Both go through :func:`contour_functionals`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math

import numpy as np

#: The 88 eGeMAPSv02 functionals, in openSMILE's order.
FEATURE_NAMES: list[str] = (
    [f"F0semitoneFrom27.5Hz_sma3nz_{f}" for f in (
        "amean", "stddevNorm", "percentile20.0", "percentile50.0", "percentile80.0",
        "pctlrange0-2", "meanRisingSlope", "stddevRisingSlope", "meanFallingSlope",
        "stddevFallingSlope")]
    + [f"loudness_sma3_{f}" for f in (
        "amean", "stddevNorm", "percentile20.0", "percentile50.0", "percentile80.0",
        "pctlrange0-2", "meanRisingSlope", "stddevRisingSlope", "meanFallingSlope",
        "stddevFallingSlope")]
    + [f"{n}_sma3_{f}" for n in ("spectralFlux", "mfcc1", "mfcc2", "mfcc3", "mfcc4")
       for f in ("amean", "stddevNorm")]
    + [f"{n}_sma3nz_{f}" for n in (
        "jitterLocal", "shimmerLocaldB", "HNRdBACF", "logRelF0-H1-H2", "logRelF0-H1-A3",
        "F1frequency", "F1bandwidth", "F1amplitudeLogRelF0",
        "F2frequency", "F2bandwidth", "F2amplitudeLogRelF0",
        "F3frequency", "F3bandwidth", "F3amplitudeLogRelF0",
        "alphaRatioV", "hammarbergIndexV", "slopeV0-500", "slopeV500-1500", "spectralFluxV",
        "mfcc1V", "mfcc2V", "mfcc3V", "mfcc4V") for f in ("amean", "stddevNorm")]
    + [f"{n}_sma3nz_amean" for n in (
        "alphaRatioUV", "hammarbergIndexUV", "slopeUV0-500", "slopeUV500-1500",
        "spectralFluxUV")]
    + ["loudnessPeaksPerSec", "VoicedSegmentsPerSec", "MeanVoicedSegmentLengthSec",
       "StddevVoicedSegmentLengthSec", "MeanUnvoicedSegmentLength",
       "StddevUnvoicedSegmentLength", "equivalentSoundLevel_dBp"]
)

# Descriptor names of the contours.
SPECTRAL_NAMES = ["alphaRatio", "hammarbergIndex", "slope0-500", "slope500-1500", "spectralFlux"]
MFCC_NAMES = ["mfcc1", "mfcc2", "mfcc3", "mfcc4"]
VOICE_NAMES = ["jitterLocal", "shimmerLocaldB", "HNRdBACF", "logRelF0-H1-H2", "logRelF0-H1-A3",
          "F1frequency", "F1bandwidth", "F1amplitudeLogRelF0",
          "F2frequency", "F2bandwidth", "F2amplitudeLogRelF0",
          "F3frequency", "F3bandwidth", "F3amplitudeLogRelF0"]


# -- functionals (per signal) -----------------------------------------------------


def _sma3(v: np.ndarray, nz: bool) -> np.ndarray:
    """3-frame moving average; with ``nz`` zeros stay zero and are not averaged in."""
    if v.size == 0:
        return v
    if nz:
        w = (v != 0).astype(np.float64)
    else:
        w = np.ones_like(v, dtype=np.float64)
    vp = np.zeros(v.size + 2)  # zero padded by one frame each side
    vp[1:-1] = v * w
    wp = np.zeros(v.size + 2)
    wp[1:-1] = w
    s = vp[:-2] + vp[1:-1] + vp[2:]
    c = wp[:-2] + wp[1:-1] + wp[2:]
    out = np.divide(s, c, out=np.zeros_like(s), where=c > 0)
    if nz:
        out[v == 0] = 0.0
    return out


def _mean_stdnorm(v: np.ndarray) -> tuple[float, float]:
    if v.size == 0:
        return math.nan, math.nan
    m = float(v.mean())
    sd = float(v.std())
    return m, (sd / m if m != 0 else math.nan)  # openSMILE: signed mean


def _peaks2_extrema(v: np.ndarray, rel: float = 0.1, exact: bool = False) -> list[list]:
    """Return the turning points ``[index, value, is_max]`` openSMILE's Peaks2 keeps.

    All strict local extrema of ``v[2:-2]``; then extrema whose rise/fall from the
    previous one is below ``rel`` times the contour's range are dropped or merged
    (openSMILE's steps 2a/2b), and runs of maxima (minima) with no minimum (maximum)
    in between are reduced to the highest (lowest).  With ``exact`` the threshold and
    the differences are float32 (openSMILE's ``FLOAT_DMEM``) as in openSMILE.
    """
    n = v.size
    sub = (lambda a, b: _f32(a - b)) if exact else (lambda a, b: a - b)
    if exact and n:
        thr = _f32(np.float32(rel) * (np.float32(v.max()) - np.float32(v.min())))
    else:
        thr = rel * float(v.max() - v.min()) if n else 0.0
    d = np.diff(v)
    i = np.arange(2, n - 2)
    is_max = (d[i - 1] > 0) & (d[i] < 0)
    is_min = (d[i - 1] < 0) & (d[i] > 0)
    pts = [[int(k), float(v[k]), bool(m)] for k, m, lo in zip(i, is_max, is_min, strict=True)
           if m or lo]
    # step 2a: minimum rise before a maximum
    alive = [True] * len(pts)
    last_val = last_min = last_max = float(v[0]) if n else 0.0
    min_flag = False
    last_max_i = -1
    for k, (_, y, mx) in enumerate(pts):
        if mx:
            if abs(sub(y, last_val)) < thr:
                if sub(y, last_min) < thr:
                    alive[k] = False
                else:
                    if y > last_max * 1.05:
                        if last_max_i >= 0:
                            alive[last_max_i] = False
                        last_max, last_max_i = y, k
                    elif min_flag:
                        last_max, last_max_i = y, k
                    else:
                        alive[k] = False
                    min_flag = False
            else:
                min_flag = False
                last_max, last_max_i = y, k
        elif not abs(sub(y, last_val)) < thr:
            min_flag = True
            last_min = y
        last_val = y
    pts = [p for p, a in zip(pts, alive, strict=True) if a]
    # step 2b: minimum fall before a minimum
    kept, last_max = [], float(v[0]) if n else 0.0
    for p in pts:
        if p[2]:
            last_max = p[1]
        elif sub(last_max, p[1]) < thr:
            continue
        kept.append(p)
    # step 3: alternate maxima and minima (keep the extreme one of a run)
    out: list[list] = []
    for p in kept:
        if out and out[-1][2] == p[2]:
            if (p[1] > out[-1][1]) if p[2] else (p[1] < out[-1][1]):
                out[-1] = p
        else:
            out.append(p)
    return out


def _slopes(v: np.ndarray, exact: bool = False) -> tuple[float, float, float, float, int]:
    """Mean/std rising and falling slopes (units per second) and the number of peaks.

    openSMILE's cFunctionalPeaks2 (relThresh 0.1): a slope joins consecutive turning
    points (the first from the contour's first value); the last turning point is also
    joined to the contour's last value (signed, and left out of the standard deviation,
    as openSMILE does); a contour without turning points has one slope
    ``(v[-1] - v[0]) / len(v)``.  With ``exact`` every step is float32 and the sums are
    sequential, as openSMILE computes them.
    """
    n = v.size
    f = _f32 if exact else float
    t = f(_PERIOD)
    pts = _peaks2_extrema(v, exact=exact)
    rise: list[float] = []
    fall: list[float] = []
    last = {True: (float(v[0]), 0), False: (float(v[0]), 0)}
    for x, y, mx in pts:
        last[mx] = (y, x)
        (ymax, xmax), (ymin, xmin) = last[True], last[False]
        dx = xmax - xmin if mx else xmin - xmax
        if dx > 0:
            (rise if mx else fall).append(f(f(ymax - ymin) / f(dx * t)))
    n_rise, n_fall = len(rise), len(fall)
    if pts:
        x_end, y_end, mx = pts[-1]
        if n - 1 - x_end > 0:
            extra = f(f(float(v[-1]) - y_end) / f((n - 1 - x_end) * t))
            (fall if mx else rise).append(extra)
        if exact:
            mr, mf = _seq_mean32(rise), _seq_mean32(fall)
            sr = _seq_std32(rise[:n_rise], mr, len(rise))
            sf = _seq_std32(fall[:n_fall], mf, len(fall))
        else:
            mr = float(np.mean(rise)) if rise else 0.0
            mf = float(np.mean(fall)) if fall else 0.0
            sr = math.sqrt(sum((s - mr) ** 2 for s in rise[:n_rise]) / max(len(rise), 1))
            sf = math.sqrt(sum((s - mf) ** 2 for s in fall[:n_fall]) / max(len(fall), 1))
    else:
        s = f(f(float(v[-1]) - float(v[0])) / n)
        mr, mf = (s, 0.0) if s > 0 else (0.0, s if s < 0 else 0.0)
        sr = sf = 0.0
    peaks = sum(1 for p in pts if p[2])
    return mr, sr, mf, sf, peaks


def _seq_mean32(x: list[float]) -> float:
    """Mean of ``x`` summed in float32 in order (openSMILE's Peaks2); 0 when empty."""
    acc = np.float32(0.0)
    for v in x:
        acc = acc + np.float32(v)
    return float(acc / np.float32(len(x))) if len(x) > 1 else float(acc)


def _seq_std32(x: list[float], mean: float, count: int) -> float:
    """Std of ``x`` about ``mean`` over ``count`` values, float32 in order (Peaks2)."""
    acc, m = np.float32(0.0), np.float32(mean)
    for v in x:
        d = np.float32(v) - m
        acc = acc + d * d
    if count > 1:
        acc = acc / np.float32(count)
    return _f32(math.sqrt(acc)) if acc > 0 else 0.0


#: The contours eGeMAPSv02's functionals read, as openSMILE names their frames: the
#: smoothed F0 (zeros unvoiced), loudness, spectral flux and MFCC 1-4 (``_sma3``), the
#: voice-quality/formant contours (``_sma3nz``, zeros unvoiced), the voiced-only and
#: unvoiced-only spectral contours (masked, then smoothed) and the frame energy.
CONTOUR_NAMES: list[str] = (
    ["F0semitoneFrom27.5Hz_sma3nz", "loudness_sma3"]
    + [f"{n}_sma3" for n in ("spectralFlux", *MFCC_NAMES)]
    + [f"{n}_sma3nz" for n in VOICE_NAMES]
    + [f"{n}_sma3nz" for n in (
        "alphaRatioV", "hammarbergIndexV", "slopeV0-500", "slopeV500-1500", "spectralFluxV",
        "mfcc1V", "mfcc2V", "mfcc3V", "mfcc4V")]
    + [f"{n}_sma3nz" for n in (
        "alphaRatioUV", "hammarbergIndexUV", "slopeUV0-500", "slopeUV500-1500",
        "spectralFluxUV")]
    + ["pcm_SQUAREDenergy"]
)
_PERIOD = 0.01  # frame period (s): the 10 ms hop
#: cFunctionalSegments as eGeMAPSv02 configures it (defaults ``segMinLng = 3``,
#: ``pauseMinLng = 2``; ``maxNumSeg = 1000``: later segments are not counted).
_SEG_MIN, _PAUSE_MIN, _MAX_SEGS = 3, 2, 1000


def _c_logf() -> object | None:
    """Return the C library's float ``logf`` (openSMILE's ``std::log(float)``), or None."""
    try:
        libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        logf = libm.logf
    except (OSError, AttributeError):
        return None
    logf.restype, logf.argtypes = ctypes.c_float, [ctypes.c_float]
    return logf


_LOGF = _c_logf()
#: openSMILE's dBp factor, ``(FLOAT_DMEM)(10 / ln 10)``, and its log floor (-120 dB).
_DB_FACTOR = np.float32(10.0 / math.log(10.0))
_LOG_FLOOR = 1e-12


def _dbp(x: float) -> float:
    """Return openSMILE's cVectorOperation ``dBp`` of a float32 value, in float32.

    ``factor * logf(x)`` with ``x`` floored at 1e-12; ``logf`` from the C library as in
    openSMILE (numpy's float32 log, which can differ by one ulp, where there is none).
    """
    x = np.float32(x if x > _LOG_FLOOR else _LOG_FLOOR)
    log = np.float32(_LOGF(x)) if _LOGF is not None else np.log(x)
    return float(_DB_FACTOR * log)


def _f32(x: float) -> float:
    """``x`` rounded to float32 (openSMILE's ``FLOAT_DMEM``), as a Python float."""
    return float(np.float32(x))


#: The formant amplitudes: openSMILE's cHarmonics writes -201 dB for them on frames
#: without F0, and eGeMAPSv02 masks only the formant frequencies and bandwidths by
#: voicing (``formantsNz``), not the harmonics level; so those -201 dB frames are
#: non-zero in the ``sma3nz`` contour the functionals read (they smooth into the
#: voiced frames next to them and enter amean and stddevNorm).
_FORMANT_AMPLITUDES = ("F1amplitudeLogRelF0", "F2amplitudeLogRelF0", "F3amplitudeLogRelF0")
_NO_F0_DB = -201.0


def _contours(llds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return the :data:`CONTOUR_NAMES` contours of raw descriptors (smoothed, masked)."""
    c: dict[str, np.ndarray] = {
        "F0semitoneFrom27.5Hz_sma3nz": _sma3(llds["F0semitone"].astype(np.float64), nz=True),
        "loudness_sma3": _sma3(llds["loudness"].astype(np.float64), nz=False),
        "pcm_SQUAREDenergy": llds["energy"].astype(np.float64)}
    for name in ("spectralFlux", *MFCC_NAMES):
        c[f"{name}_sma3"] = _sma3(llds[name].astype(np.float64), nz=False)
    voiced_raw = llds["F0semitone"] != 0
    for name in VOICE_NAMES:
        raw = llds[name].astype(np.float64)
        if name in _FORMANT_AMPLITUDES:  # cHarmonics' value without F0, not masked
            raw = np.where(voiced_raw, raw, _NO_F0_DB)
        c[f"{name}_sma3nz"] = _sma3(raw, nz=True)
    for name in (*SPECTRAL_NAMES, *MFCC_NAMES):
        short = name.replace("slope", "slopeV") if name.startswith("slope") else f"{name}V"
        raw = np.where(voiced_raw, llds[name], 0.0).astype(np.float64)
        c[f"{short}_sma3nz"] = _sma3(raw, nz=True)
        if name in SPECTRAL_NAMES:
            short_uv = name.replace("slope", "slopeUV") if name.startswith("slope") \
                else f"{name}UV"
            raw = np.where(~voiced_raw, llds[name], 0.0).astype(np.float64)
            c[f"{short_uv}_sma3nz"] = _sma3(raw, nz=True)
    return c


def functionals(llds: dict[str, np.ndarray]) -> np.ndarray:
    """Return the 88 eGeMAPSv02 functionals of one signal's descriptors.

    Args:
        llds: ``{name: (frames,) array}`` for :data:`LLD_NAMES` (unsmoothed), with
            at least one frame.

    Returns:
        float64 array in :data:`FEATURE_NAMES` order; NaN where undefined (e.g. F0
        functionals when no frame is voiced).
    """
    return contour_functionals(_contours(llds))


def opensmile_functionals(contours: dict[str, np.ndarray]) -> np.ndarray:
    """Return openSMILE's 88 eGeMAPSv02 functionals of its own contours, frame by frame.

    The arithmetic of openSMILE 3's cFunctionals components as eGeMAPSv02 configures
    them (``FLOAT_DMEM`` = float32 where openSMILE uses it, double where it does): means
    summed in double, moments about the float32 mean, linearly interpolated percentiles,
    Peaks2 turning points and slopes, the NonX/EqX segments of F0 (at most 1000 counted,
    as openSMILE), 0 for functionals of no frame; every output rounded to float32.  The
    result equals openSMILE's functionals of the same track (see
    ``docs/results/opensmile_stream_agreement.md``); undefined values are 0 (-120 dB for
    the sound level of silence) as openSMILE writes them (the caller maps them to NaN).

    Args:
        contours: ``{name: (frames,) float32 array}`` for :data:`CONTOUR_NAMES`, the
            frames openSMILE's functionals read, at least one frame.

    Returns:
        float64 array in :data:`FEATURE_NAMES` order.
    """
    return contour_functionals(contours, exact=True)


def _moments(v: np.ndarray, exact: bool) -> tuple[float, float]:
    """Mean and stddev/mean (signed) of ``v``; openSMILE's cFunctionalMoments if ``exact``."""
    if not exact:
        return _mean_stdnorm(v)
    if v.size == 0:  # openSMILE: functionals of no frame are 0
        return 0.0, 0.0
    mean = _f32(np.sum(v, dtype=np.float64) / v.size)
    d = v.astype(np.float64) - mean
    m2 = float(np.dot(d, d)) / v.size
    return mean, (_f32(math.sqrt(m2) / (mean if mean != 0 else 1.0)) if m2 > 0 else 0.0)


def _percentiles(v: np.ndarray, exact: bool) -> tuple[float, float, float, float]:
    """Percentiles 20/50/80 and the 20-80 range; openSMILE's arithmetic if ``exact``."""
    if not exact:
        p20, p50, p80 = np.percentile(v, [20, 50, 80])
        return float(p20), float(p50), float(p80), float(p80 - p20)
    s = np.sort(v.astype(np.float32))
    out = []
    for p in (0.2, 0.5, 0.8):  # cFunctionalPercentiles::getInterpPctl
        idx = p * (s.size - 1)
        i1, i2 = min(math.floor(idx), s.size - 1), min(math.ceil(idx), s.size - 1)
        if i1 == i2:
            out.append(float(s[i1]))
        else:
            w2, w1 = np.float32(i2 - idx), np.float32(idx - i1)
            out.append(float(s[i1] * w2 + s[i2] * w1))
    return out[0], out[1], out[2], _f32(abs(out[2] - out[0]))


def _opensmile_segments(active: np.ndarray) -> list[int]:
    """Segment lengths (frames) of cFunctionalSegments' NonX algorithm over ``active``.

    A segment starts after :data:`_SEG_MIN` active frames and ends after
    :data:`_PAUSE_MIN` inactive ones; its length is counted from its first to its last
    active frame (one less than the frames it spans, as openSMILE counts); only the
    first :data:`_MAX_SEGS` are kept.  EqX is NonX of the inverted mask.
    """
    lengths: list[int] = []
    start, state, n_on, n_off = 0, 0, 0, 0
    for i, on in enumerate(active.tolist()):
        if on:
            if state == 1:
                n_off = 0
                n_on += 1
                if n_on >= _SEG_MIN:
                    n_on, state = 0, 2
            elif state == 0:
                n_on, start, state = n_on + 1, i, 1
            else:
                n_off = 0
        elif state == 2:
            n_on, n_off = 0, n_off + 1
            if n_off >= _PAUSE_MIN:
                state = 0
                if len(lengths) < _MAX_SEGS:
                    lengths.append(i - n_off - start)
                n_off = 0
        elif state == 1:
            n_off += 1
            if n_off >= _PAUSE_MIN:
                state, n_off, n_on = 0, 0, 0
    if state == 2 and len(lengths) < _MAX_SEGS:
        lengths.append(active.size - (n_off + 1) - start)
    return lengths


def _segment_stats(lengths: list[int], n: int) -> tuple[float, float, float]:
    """Segments per second, mean and stddev of their length (s), in openSMILE's float32."""
    t = np.float32(_PERIOD)
    k = len(lengths)
    mean = np.float32(sum(lengths))
    if k > 1:
        mean = mean / np.float32(k)
    dev = np.float32(0.0)
    for length in lengths:
        d = np.float32(length) - mean
        dev = dev + d * d
    if k > 1:
        dev = np.float32(math.sqrt(dev / np.float32(k)))
    else:
        dev = np.float32(0.0)
    return float(np.float32(k) / (t * np.float32(n))), float(mean * t), float(dev * t)


def contour_functionals(c: dict[str, np.ndarray], exact: bool = False) -> np.ndarray:
    """Return the 88 eGeMAPSv02 functionals of smoothed contours (:data:`CONTOUR_NAMES`).

    Args:
        c: ``{name: (frames,) array}``, at least one frame.
        exact: openSMILE's arithmetic and conventions (:func:`opensmile_functionals`);
            else float64 with NaN where undefined (this backend's convention).

    Returns:
        float64 array in :data:`FEATURE_NAMES` order.
    """
    undefined = 0.0 if exact else math.nan
    n = c["loudness_sma3"].size
    dur = n * _PERIOD
    res: dict[str, float] = {}
    f0 = c["F0semitoneFrom27.5Hz_sma3nz"]
    voiced = f0 != 0
    for name, v in (("F0semitoneFrom27.5Hz_sma3nz", f0[voiced]),
                    ("loudness_sma3", c["loudness_sma3"])):
        if v.size == 0:
            for f in ("amean", "stddevNorm", "percentile20.0", "percentile50.0",
                      "percentile80.0", "pctlrange0-2", "meanRisingSlope",
                      "stddevRisingSlope", "meanFallingSlope", "stddevFallingSlope"):
                res[f"{name}_{f}"] = undefined
            continue
        m, sn = _moments(v, exact)
        p20, p50, p80, prange = _percentiles(v, exact)
        mr, sr, mf, sf, npk = _slopes(v, exact)
        res.update({f"{name}_amean": m, f"{name}_stddevNorm": sn,
                    f"{name}_percentile20.0": p20, f"{name}_percentile50.0": p50,
                    f"{name}_percentile80.0": p80, f"{name}_pctlrange0-2": prange,
                    f"{name}_meanRisingSlope": mr, f"{name}_stddevRisingSlope": sr,
                    f"{name}_meanFallingSlope": mf, f"{name}_stddevFallingSlope": sf})
        if name == "loudness_sma3":
            res["loudnessPeaksPerSec"] = (_f32(npk / (np.float32(n) * np.float32(_PERIOD)))
                                          if exact else npk / dur)
    if "loudnessPeaksPerSec" not in res:
        res["loudnessPeaksPerSec"] = undefined
    for name in ("spectralFlux", *MFCC_NAMES):
        res[f"{name}_sma3_amean"], res[f"{name}_sma3_stddevNorm"] = _moments(
            c[f"{name}_sma3"], exact)
    for name in VOICE_NAMES:
        v = c[f"{name}_sma3nz"]
        # without a voiced frame only the formant amplitudes' -201 dB frames would be
        # left: voice functionals are undefined (openSMILE's 0, mapped to NaN by callers)
        v = v[v != 0] if exact or voiced.any() else v[:0]
        res[f"{name}_sma3nz_amean"], res[f"{name}_sma3nz_stddevNorm"] = _moments(v, exact)
    for name in (*SPECTRAL_NAMES, *MFCC_NAMES):
        short = name.replace("slope", "slopeV") if name.startswith("slope") else f"{name}V"
        v = c[f"{short}_sma3nz"]
        res[f"{short}_sma3nz_amean"], res[f"{short}_sma3nz_stddevNorm"] = _moments(
            v[v != 0], exact)
        if name in SPECTRAL_NAMES:
            short_uv = name.replace("slope", "slopeUV") if name.startswith("slope") \
                else f"{name}UV"
            v = c[f"{short_uv}_sma3nz"]
            v = v[v != 0]
            res[f"{short_uv}_sma3nz_amean"] = (_moments(v, True)[0] if exact else
                                               float(v.mean()) if v.size else math.nan)
    # cFunctionalSegments' rules (hysteresis, at most 1,000 segments) in both modes
    v_lengths, u_lengths = _opensmile_segments(voiced), _opensmile_segments(~voiced)
    (res["VoicedSegmentsPerSec"], res["MeanVoicedSegmentLengthSec"],
     res["StddevVoicedSegmentLengthSec"]) = _segment_stats(v_lengths, f0.size)
    _, res["MeanUnvoicedSegmentLength"], res["StddevUnvoicedSegmentLength"] = \
        _segment_stats(u_lengths, f0.size)
    if not exact:  # no segment: length statistics undefined (openSMILE writes 0)
        for lengths, names in ((v_lengths, ("MeanVoicedSegmentLengthSec",
                                            "StddevVoicedSegmentLengthSec")),
                               (u_lengths, ("MeanUnvoicedSegmentLength",
                                            "StddevUnvoicedSegmentLength"))):
            if not lengths:
                res.update(dict.fromkeys(names, math.nan))
    energy = c["pcm_SQUAREDenergy"]
    if exact:  # cFunctionalMeans (double sum, float32 mean), then cVectorOperation dBp
        res["equivalentSoundLevel_dBp"] = _dbp(_moments(energy, True)[0])
    else:
        e = float(energy.astype(np.float64).mean())
        res["equivalentSoundLevel_dBp"] = 10 * math.log10(e) if e > 0 else math.nan
    return np.array([res[k] for k in FEATURE_NAMES], dtype=np.float64)
