"""The torch prosody backend's 88 functionals of a fixed synthetic signal, pinned.

The values were computed by the backend before its speed work (commit 6893642, one
thread, CPU); the speed changes must not move them (tolerance 1e-5 relative, NaN
pattern equal). A change that is meant to alter the outputs updates them here, with
the reason in its commit message. Re-pinned since: the 19 values of spectral flux, the
spectral slopes, the formant amplitudes and the segment lengths, when those were made
to follow openSMILE's cSpectral, cHarmonics and cFunctionalSegments (issue 8).
"""

from __future__ import annotations

import numpy as np
import pytest

from atrisk.extractors.prosody.torch_backend import FEATURE_NAMES, TorchProsody

PINNED = {
    'F0semitoneFrom27.5Hz_sma3nz_amean': 32.807255076037514,
    'F0semitoneFrom27.5Hz_sma3nz_stddevNorm': 0.07665232379520835,
    'F0semitoneFrom27.5Hz_sma3nz_percentile20.0': 30.122085571289062,
    'F0semitoneFrom27.5Hz_sma3nz_percentile50.0': 32.471802393595375,
    'F0semitoneFrom27.5Hz_sma3nz_percentile80.0': 35.36193110148112,
    'F0semitoneFrom27.5Hz_sma3nz_pctlrange0-2': 5.239845530192056,
    'F0semitoneFrom27.5Hz_sma3nz_meanRisingSlope': 4.228998916317718,
    'F0semitoneFrom27.5Hz_sma3nz_stddevRisingSlope': 2.4653726663071236,
    'F0semitoneFrom27.5Hz_sma3nz_meanFallingSlope': 1.7792447408040364,
    'F0semitoneFrom27.5Hz_sma3nz_stddevFallingSlope': 0.0,
    'loudness_sma3_amean': 0.9343459168120936,
    'loudness_sma3_stddevNorm': 0.49244459030904797,
    'loudness_sma3_percentile20.0': 0.19871491690476736,
    'loudness_sma3_percentile50.0': 1.1043170094490051,
    'loudness_sma3_percentile80.0': 1.3158735434214275,
    'loudness_sma3_pctlrange0-2': 1.1171586265166602,
    'loudness_sma3_meanRisingSlope': 1.1320307270301306,
    'loudness_sma3_stddevRisingSlope': 0.46293726566724475,
    'loudness_sma3_meanFallingSlope': 2.2257235948166816,
    'loudness_sma3_stddevFallingSlope': 0.10463175138616876,
    'spectralFlux_sma3_amean': 0.09932233984354974,
    'spectralFlux_sma3_stddevNorm': 0.6781675514760855,
    'mfcc1_sma3_amean': 35.279495551334165,
    'mfcc1_sma3_stddevNorm': 0.693187625939424,
    'mfcc2_sma3_amean': 22.347056450842196,
    'mfcc2_sma3_stddevNorm': 0.6365269490997258,
    'mfcc3_sma3_amean': -11.548800738635638,
    'mfcc3_sma3_stddevNorm': -1.0020424893703934,
    'mfcc4_sma3_amean': -16.808465137572952,
    'mfcc4_sma3_stddevNorm': -0.5875823025453404,
    'jitterLocal_sma3nz_amean': 0.0012706292357744723,
    'jitterLocal_sma3nz_stddevNorm': 1.4278615466259084,
    'shimmerLocaldB_sma3nz_amean': 0.22290547592160856,
    'shimmerLocaldB_sma3nz_stddevNorm': 2.1941337261221583,
    'HNRdBACF_sma3nz_amean': 12.207234806277688,
    'HNRdBACF_sma3nz_stddevNorm': 0.13721211568277517,
    'logRelF0-H1-H2_sma3nz_amean': 3.53898677850763,
    'logRelF0-H1-H2_sma3nz_stddevNorm': 0.0682872943627588,
    'logRelF0-H1-A3_sma3nz_amean': 50.435813274648446,
    'logRelF0-H1-A3_sma3nz_stddevNorm': 0.10358765037812549,
    'F1frequency_sma3nz_amean': 670.5208282470703,
    'F1frequency_sma3nz_stddevNorm': 0.2847867636017048,
    'F1bandwidth_sma3nz_amean': 1424.969919310676,
    'F1bandwidth_sma3nz_stddevNorm': 0.16162223046395863,
    'F1amplitudeLogRelF0_sma3nz_amean': -61.11461999911618,
    'F1amplitudeLogRelF0_sma3nz_stddevNorm': -1.3475771899919051,
    'F2frequency_sma3nz_amean': 1787.7147571775647,
    'F2frequency_sma3nz_stddevNorm': 0.20383430105969533,
    'F2bandwidth_sma3nz_amean': 1101.9043714735242,
    'F2bandwidth_sma3nz_stddevNorm': 0.09449330479230046,
    'F2amplitudeLogRelF0_sma3nz_amean': -74.56273157357523,
    'F2amplitudeLogRelF0_sma3nz_stddevNorm': -0.9048601811622036,
    'F3frequency_sma3nz_amean': 3081.466246498956,
    'F3frequency_sma3nz_stddevNorm': 0.0866866739328972,
    'F3bandwidth_sma3nz_amean': 1117.195261478424,
    'F3bandwidth_sma3nz_stddevNorm': 0.18203085770105495,
    'F3amplitudeLogRelF0_sma3nz_amean': -88.02222533342315,
    'F3amplitudeLogRelF0_sma3nz_stddevNorm': -0.6676640818411023,
    'alphaRatioV_sma3nz_amean': -22.035796401815286,
    'alphaRatioV_sma3nz_stddevNorm': -0.5010929666762833,
    'hammarbergIndexV_sma3nz_amean': 48.30904210912478,
    'hammarbergIndexV_sma3nz_stddevNorm': 0.1358950586278444,
    'slopeV0-500_sma3nz_amean': 0.052328328917307466,
    'slopeV0-500_sma3nz_stddevNorm': 0.24020257050294028,
    'slopeV500-1500_sma3nz_amean': -0.05279296409167324,
    'slopeV500-1500_sma3nz_stddevNorm': -0.4152437097393678,
    'spectralFluxV_sma3nz_amean': 0.11649517704412525,
    'spectralFluxV_sma3nz_stddevNorm': 0.4538734724080837,
    'mfcc1V_sma3nz_amean': 47.65576372378403,
    'mfcc1V_sma3nz_stddevNorm': 0.16814452725430784,
    'mfcc2V_sma3nz_amean': 28.542926641595034,
    'mfcc2V_sma3nz_stddevNorm': 0.3167954996383162,
    'mfcc3V_sma3nz_amean': -14.303340309577633,
    'mfcc3V_sma3nz_stddevNorm': -0.8160393659297747,
    'mfcc4V_sma3nz_amean': -21.64481797695367,
    'mfcc4V_sma3nz_stddevNorm': -0.19327597181151565,
    'alphaRatioUV_sma3nz_amean': 5.82789891148791,
    'hammarbergIndexUV_sma3nz_amean': 0.49136182454265204,
    'slopeUV0-500_sma3nz_amean': 0.029971948980761942,
    'slopeUV500-1500_sma3nz_amean': 0.017926794854797607,
    'spectralFluxUV_sma3nz_amean': 0.03732876335328191,
    'loudnessPeaksPerSec': 0.8130081300813008,
    'VoicedSegmentsPerSec': 0.8130081300813008,
    'MeanVoicedSegmentLengthSec': 0.949999988079071,
    'StddevVoicedSegmentLengthSec': 0.02999999999999997,
    'MeanUnvoicedSegmentLength': 0.25999999046325684,
    'StddevUnvoicedSegmentLength': 0.0,
    'equivalentSoundLevel_dBp': -14.815514616726574,
}


def pinned_signal() -> np.ndarray:
    """2.5 s at 16 kHz: two voiced stretches (F0 gliding 140->180 Hz and 220->200 Hz).

    6 harmonics with falling amplitudes, each stretch followed by 0.3 s of silence;
    low white noise throughout.
    """
    sr = 16000
    rng = np.random.default_rng(7)
    parts = []
    for f_a, f_b, dur in ((140.0, 180.0, 1.0), (220.0, 200.0, 0.9)):
        t = np.arange(int(dur * sr)) / sr
        phase = 2 * np.pi * np.cumsum(np.linspace(f_a, f_b, t.size)) / sr
        env = np.sin(np.pi * t / dur) ** 0.5
        parts.append(env * sum(0.3 / h * np.sin(h * phase) for h in range(1, 7)))
        parts.append(np.zeros(int(0.3 * sr)))
    x = np.concatenate(parts)
    return (x + 2e-3 * rng.standard_normal(x.size)).astype(np.float32)


def test_functionals_of_a_fixed_signal_are_unchanged():
    got = TorchProsody(device="cpu").functionals([pinned_signal()], 16000)[0][0]
    want = np.array([PINNED[k] for k in FEATURE_NAMES], dtype=np.float64)
    assert list(PINNED) == FEATURE_NAMES
    assert np.isfinite(want).all()  # every functional is defined for this signal
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
    # and they are plausible: 2 voiced stretches in 2.5 s; F0 of 140-220 Hz is
    # 28.6-36.3 semitones above 27.5 Hz
    p = dict(zip(FEATURE_NAMES, got, strict=True))
    assert p["VoicedSegmentsPerSec"] == pytest.approx(2 / 2.5, rel=0.3)
    assert 28.0 < p["F0semitoneFrom27.5Hz_sma3nz_percentile20.0"] < \
        p["F0semitoneFrom27.5Hz_sma3nz_percentile80.0"] < 37.0

