"""torch prosody backend: column names, hand-computed values, bad inputs, batching, CPU/CUDA."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import opensmile
import pandas as pd
import pytest
import soundfile as sf
import torch

from atrisk.config import ProsodyConfig
from atrisk.errors import ConfigError
from atrisk.extractors.prosody import load_prosody
from atrisk.extractors.prosody.egemaps import _contours, _mean_stdnorm, _slopes, _sma3, functionals
from atrisk.extractors.prosody.opensmile_backend import OpenSmileProsody
from atrisk.extractors.prosody.torch_backend import (
    FEATURE_NAMES,
    HOP,
    LLD_NAMES,
    WIN_LONG,
    TorchProsody,
    _band_slope,
    _frames,
    _gauss_mag,
    _gauss_window,
    _jitter_shimmer_walk,
    _shs_candidates,
    _slope_terms,
    _spectral_llds,
    _viterbi_costs,
    _viterbi_path,
    resolve_device,
)
from atrisk.ingest.audio import DecodedSession
from atrisk.records import Session, Utterance

SR = 16000
F0 = "F0semitoneFrom27.5Hz_sma3nz_amean"
ST_220 = 12 * math.log2(220 / 27.5)  # = 36.0 semitones above 27.5 Hz
VOICE_COLS = [c for c in FEATURE_NAMES if c.startswith(("F0", "jitter", "shimmer", "HNR",
                                                         "logRel", "F1", "F2", "F3"))]
SPEECH = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "speech"


def tone(freq: float = 220.0, seconds: float = 1.0, amp: float = 0.5, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def ex() -> TorchProsody:
    return TorchProsody(device="cpu")


def test_columns_are_opensmile_egemaps_names(ex):
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    assert ex.feature_names == list(smile.feature_names)
    assert len(FEATURE_NAMES) == 88


def test_smoothing_and_stddevnorm_by_hand():
    # sma3nz: zeros stay zero; non-zero frames average their non-zero neighbours only
    np.testing.assert_allclose(_sma3(np.array([0, 3, 6, 0, 9.0]), nz=True), [0, 4.5, 4.5, 0, 9])
    # sma3: edges average the two available frames
    np.testing.assert_allclose(_sma3(np.array([1, 2, 3.0]), nz=False), [1.5, 2, 2.5])
    # openSMILE's stddevNorm divides by the signed mean: std([-1, -3]) = 1, mean -2
    assert _mean_stdnorm(np.array([-1.0, -3.0])) == (-2.0, -0.5)


def test_shs_finds_a_missing_fundamental():
    # harmonics 2..7 of 120 Hz, no energy at 120 Hz: the subharmonic sum peaks at 120 Hz
    t = np.arange(SR) / SR
    x = sum(np.sin(2 * np.pi * 120 * h * t) / h for h in range(2, 8)).astype(np.float32)
    frames = _frames(torch.from_numpy(x)[None], 960, 20)
    freq, voice = _shs_candidates(_gauss_mag(_gauss_window(frames)))
    assert freq[0, 5:15, 0].numpy() == pytest.approx(120, rel=0.01)
    assert (voice[0, 5:15, 0] > 0.7).all()  # openSMILE's voicing cutoff


def test_viterbi_removes_an_isolated_octave_jump_and_fills_a_weak_frame():
    # 9 frames, candidates 200 and 100 Hz; frame 4 ranks 100 Hz first (an octave error)
    freq = np.tile([200.0, 100.0, 0, 0, 0, 0], (9, 1))
    voice = np.tile([0.9, 0.85, 0, 0, 0, 0], (9, 1))
    freq[4, :2], voice[4, :2] = [100.0, 200.0], [0.9, 0.85]
    # frame 6: both candidates below the 0.7 voicing cutoff. Staying voiced costs
    # (-ln 0.5 + 4) * 2 = 9.4; leaving and coming back costs two v/uv transitions, 20.
    voice[6, :2] = 0.5
    path = _viterbi_path(*_viterbi_costs(freq, voice))
    chosen = freq[np.arange(9), np.minimum(path, 5)]
    assert (path < 6).all()  # never the unvoiced state
    np.testing.assert_array_equal(chosen, 200.0)


def test_h1_h2_is_opensmiles_second_minus_third_harmonic(ex):
    # openSMILE's "H1-H2" compares the harmonics at 2 F0 and 3 F0 (measured on this
    # signal: 3.55 dB): 20 log10(0.15 / 0.1) = 3.52 dB, not H1 - H2 = 6.02 dB
    t = np.arange(SR) / SR
    x = sum(a * np.sin(2 * np.pi * 200 * h * t) for h, a in ((1, 0.3), (2, 0.15), (3, 0.1)))
    s = ex.process_signal(x.astype(np.float32), SR)
    assert s["logRelF0-H1-H2_sma3nz_amean"] == pytest.approx(20 * math.log10(1.5), abs=0.1)


def _pulse_train(periods, amps) -> np.ndarray:
    return np.concatenate([a * np.sin(np.pi * np.arange(p) / p) ** 3
                           * np.sin(2 * np.pi * np.arange(p) / p)
                           for p, a in zip(periods, amps, strict=True)])


def test_jitter_shimmer_walk_on_pulse_trains():
    # constant 100-sample periods, amplitudes alternating 1.0 / 0.8: no jitter; shimmer
    # 20 log10(1 + mean|A_i - A_i+1| / mean A) = 20 log10(1 + 0.2 / 0.9) = 1.743 dB
    x = _pulse_train([100] * 200, [1.0, 0.8] * 100)
    out = _jitter_shimmer_walk(np.pad(x, (0, 960)), np.full(100, 160.0))
    np.testing.assert_allclose(out[5:95, 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(out[5:95, 1], 20 * math.log10(1 + 0.2 / 0.9), atol=1e-3)
    # periods 100, 102, ..., 106, ..., 102 (steps of 2 samples, mean 103): where a frame
    # holds two new periods jitter = 2 / 103; never more; unvoiced frames are 0
    x = _pulse_train([100, 102, 104, 106, 104, 102] * 40, [1.0] * 240)
    f0 = np.full(100, 16000 / 103)
    f0[50] = 0.0
    out = _jitter_shimmer_walk(np.pad(x, (0, 960)), f0)
    assert out[5:95, 0].max() == pytest.approx(2 / 103, rel=0.03)
    assert out[50].tolist() == [0.0, 0.0]


def test_peaks2_slopes_by_hand():
    # one maximum at frame 3: rising slope (10 - 0) / 0.03 s; then openSMILE also joins
    # it to the last value, a signed "falling" slope (0 - 10) / 0.03 s; one peak
    v = np.array([0, 1, 2, 10, 2, 1, 0.0])
    mr, sr, mf, sf, peaks = _slopes(v)
    assert (mr, sr, sf, peaks) == (pytest.approx(1000 / 3), 0.0, 0.0, 1)
    assert mf == pytest.approx(-1000 / 3)
    # range 10 -> threshold 1: the minimum 3.1 right after the maximum 3.2 falls by less
    # than 1 and is dropped; the maximum stays (it rose 3.2 from the first value):
    # rising (3.2 - 0) / 0.04 s = 80, then to the last value (10 - 3.2) / 0.08 s = 85
    w = np.array([0, 1, 2, 3, 3.2, 3.1, 4, 5, 6, 7, 8, 9, 10.0])
    assert _slopes(w) == (pytest.approx(80), 0.0, pytest.approx(85), 0.0, 1)
    # no turning point at all: one slope (last - first) / n, per frame (openSMILE)
    assert _slopes(np.arange(11.0)) == (pytest.approx(10 / 11), 0.0, 0.0, 0.0, 0)


def test_pure_tone_values(ex):
    s = ex.process_signal(tone(), SR)
    assert s[F0] == pytest.approx(ST_220, abs=0.05)
    assert s["F0semitoneFrom27.5Hz_sma3nz_pctlrange0-2"] == pytest.approx(0, abs=0.05)
    # mean square of a sine of amplitude 0.5 is 0.125 -> 10 log10(0.125) = -9.03 dB
    assert s["equivalentSoundLevel_dBp"] == pytest.approx(10 * math.log10(0.125), abs=0.05)
    assert s["jitterLocal_sma3nz_amean"] < 0.01
    assert s["shimmerLocaldB_sma3nz_amean"] < 0.2
    assert s["HNRdBACF_sma3nz_amean"] > 10
    # 16000 samples -> (16000 - 960) // 160 + 2 = 96 frames (0.96 s), one voiced segment
    assert s["VoicedSegmentsPerSec"] == pytest.approx(1 / 0.96)
    assert s["MeanVoicedSegmentLengthSec"] > 0.9


def test_hnr_falls_with_noise(ex):
    # sine power 0.125; noise powers 0.001 and 0.01 -> SNR 21 dB and 11 dB
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, SR).astype(np.float32)
    hnr = [ex.process_signal(tone() + np.float32(sd) * noise, SR)["HNRdBACF_sma3nz_amean"]
           for sd in (0.0, math.sqrt(0.001), 0.1)]
    assert hnr[0] > hnr[1] > hnr[2] > 5


def test_silence_gives_nan_voice_and_zero_loudness(ex):
    s = ex.process_signal(np.zeros(2 * SR, np.float32), SR)
    assert s[VOICE_COLS].isna().all()
    assert s["loudness_sma3_amean"] == 0.0
    assert math.isnan(s["equivalentSoundLevel_dBp"])  # log of zero energy is undefined
    assert s["VoicedSegmentsPerSec"] == 0.0
    # 32000 samples -> (32000 - 960) // 160 + 2 = 196 frames, one unvoiced segment; as
    # openSMILE's cFunctionalSegments counts it, first to last frame: 195 x 10 ms
    assert s["MeanUnvoicedSegmentLength"] == pytest.approx(1.95)
    assert s["StddevUnvoicedSegmentLength"] == 0.0


def test_white_noise_is_mostly_unvoiced(ex):
    rng = np.random.default_rng(0)
    s = ex.process_signal(rng.normal(0, 0.1, 2 * SR).astype(np.float32), SR)
    assert np.isnan(s[F0]) or s["MeanVoicedSegmentLengthSec"] < 0.05
    assert np.isfinite(s["alphaRatioUV_sma3nz_amean"])


@pytest.mark.parametrize("case", ["dc", "clipped", "8k", "nan"])
def test_bad_inputs_keep_the_tone_pitch(ex, case):
    x, sr = tone(), SR
    if case == "dc":
        x = x + np.float32(0.3)
    elif case == "clipped":
        x = np.clip(4 * x, -1, 1)
    elif case == "8k":
        x, sr = tone(sr=8000), 8000
    else:
        x = x.copy()
        x[4000:4010] = np.nan
    s = ex.process_signal(x, sr)
    assert s[F0] == pytest.approx(ST_220, abs=0.1)
    assert s.drop(VOICE_COLS).notna().sum() > 40


def test_nan_samples_equal_zeros(ex):
    x = tone()
    a, b = x.copy(), x.copy()
    a[100:200], b[100:200] = np.nan, 0.0
    np.testing.assert_array_equal(ex.process_signal(a, SR).to_numpy(),
                                  ex.process_signal(b, SR).to_numpy())


def test_short_signals(ex):
    # 0.1 s = 1600 samples -> 6 frames: defined values, no crash
    s = ex.process_signal(tone(seconds=0.1), SR)
    assert s["equivalentSoundLevel_dBp"] == pytest.approx(10 * math.log10(0.125), abs=0.1)
    # below one 60 ms frame: every feature NaN; an empty signal too
    assert ex.process_signal(tone(seconds=0.05), SR).isna().all()
    assert ex.process_signal(np.zeros(0, np.float32), SR).isna().all()


def test_invalid_arguments(ex):
    with pytest.raises(ValueError, match="sample_rate"):
        ex.process_signal(tone(), 500)
    with pytest.raises(ValueError, match="1-D"):
        ex.process_signal(np.zeros((2, 2, 2), np.float32), SR)


def test_batch_equals_single(ex):
    rng = np.random.default_rng(1)
    sigs = [tone(180, 0.7), tone(300, 1.3, 0.2) + rng.normal(0, 0.01, int(1.3 * SR)),
            np.zeros(SR, np.float32)]
    batched, reasons = TorchProsody(device="cpu", batch_size=3).functionals(sigs, SR)
    assert reasons == [None, None, None]
    for i, s in enumerate(sigs):
        np.testing.assert_allclose(batched[i], ex.process_signal(s, SR).to_numpy(),
                                   rtol=1e-4, atol=1e-5, equal_nan=True)


def test_segments_and_utterances_equal_the_cut_signals(ex):
    """Each per-segment row is process_signal of the track cut at its times (batched too)."""
    track = np.concatenate([tone(220, 1.0), np.zeros(SR, np.float32), tone(330, 1.0)])
    segs = [(0.0, 1.0), (0.5, 0.55), (2.5, 9.0), (4.0, 5.0), (1.0, 0.5), (math.nan, 1.0)]
    df, failures = ex.process_segments(track, SR, "s1", "student", segs)
    assert failures == {}  # NaN rows of undefined cuts are not failures
    assert df.index.names == ["session_id", "speaker", "start_s", "end_s"]
    pd.testing.assert_index_equal(df.index, pd.MultiIndex.from_tuples(
        [("s1", "student", a, b) for a, b in segs], names=["session_id", "speaker", "start_s",
                                                           "end_s"]))
    assert list(df.columns) == FEATURE_NAMES
    np.testing.assert_array_equal(df.iloc[0].to_numpy(), ex.process_signal(track[:SR], SR))
    np.testing.assert_array_equal(df.iloc[2].to_numpy(),
                                  ex.process_signal(track[40000:], SR))  # clipped to the end
    assert df[F0].iloc[0] == pytest.approx(ST_220, abs=0.05)
    # 0.05 s is shorter than one 60 ms frame; beyond the end, reversed, NaN time: NaN rows
    assert df.iloc[[1, 3, 4, 5]].isna().all().all()
    batched = TorchProsody(device="cpu", batch_size=4).process_segments(
        track, SR, "s1", "student", segs).frame
    np.testing.assert_allclose(batched.to_numpy(), df.to_numpy(), rtol=1e-4, atol=1e-5,
                               equal_nan=True)
    d = DecodedSession(_session("s1"), {"teacher": None, "student": track})
    utts = [Utterance("s1", "student", 2.5, 9.0, "three"),
            Utterance("s1", "teacher", 0.0, 1.0, "missing track: skipped"),
            Utterance("s1", "student", 0.0, 1.0, "one")]
    per_utt = ex.process_utterances([d], utts).frame
    assert list(per_utt.index) == [("s1", "student", 2.5, 9.0), ("s1", "student", 0.0, 1.0)]
    np.testing.assert_array_equal(per_utt.to_numpy(), df.iloc[[2, 0]].to_numpy())


def _session(sid: str) -> Session:
    return Session(session_id=sid, student_id="st", teacher_id="te",
                   start_time=datetime(2024, 1, 1, tzinfo=UTC), teacher_path=None,
                   student_path=None)


def test_sessions_files_and_backend_recorded(ex, tmp_path):
    decoded = [DecodedSession(_session("s1"), {"teacher": tone(), "student": None}),
               DecodedSession(_session("s2"), {"teacher": tone(150), "student": tone(300)})]
    df = ex.process_sessions(decoded).frame
    assert list(df.index) == [("s1", "teacher"), ("s2", "teacher"), ("s2", "student")]
    assert df.index.names == ["session_id", "track"]
    assert df.loc[("s2", "student"), F0] == pytest.approx(12 * math.log2(300 / 27.5), abs=0.1)
    assert ex.backend_name.startswith("torch-eGeMAPSv02-")
    path = tmp_path / "a.wav"
    sf.write(path, tone(), SR)
    one = ex.process_file(path)
    assert one.index.name == "file" and list(one.columns) == FEATURE_NAMES
    assert one.iloc[0][F0] == pytest.approx(ST_220, abs=0.05)


def test_config_factory_and_device():
    # the device is the run's --device, passed to the factory; not an output-changing setting
    assert "device" not in ProsodyConfig.model_fields
    cfg = ProsodyConfig(backend="torch")
    extractor = load_prosody(cfg, device="cpu")
    assert isinstance(extractor, TorchProsody)
    assert extractor.device == torch.device("cpu")
    assert load_prosody(cfg).device == resolve_device("auto")
    # openSMILE runs on the CPU: it takes the device and ignores it
    assert load_prosody(ProsodyConfig(), device="cpu").backend_name.startswith(
        "opensmile-")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="functionals"):
        TorchProsody(ProsodyConfig(backend="torch", feature_level="lld"))
    with pytest.raises(ConfigError, match="eGeMAPSv02"):
        TorchProsody(ProsodyConfig(backend="torch", feature_set="ComParE_2016"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            resolve_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_agree():
    rng = np.random.default_rng(2)
    sigs = [tone(), np.zeros(SR, np.float32), np.clip(4 * tone(150), -1, 1),
            (tone(200) + rng.normal(0, 0.05, SR)).astype(np.float32)]
    cpu = TorchProsody(device="cpu").functionals(sigs, SR)[0]
    gpu = TorchProsody(device="cuda").functionals(sigs, SR)[0]
    assert np.array_equal(np.isnan(cpu), np.isnan(gpu))
    # float32 FFTs differ in the last bits between devices; 1e-3 relative is stated in
    # docs/prosody.md
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-3, equal_nan=True)


@pytest.mark.realdata
@pytest.mark.skipif(not (SPEECH / "jfk.flac").exists(), reason="../shared/data/speech absent")
def test_jfk_close_to_opensmile(ex):
    from atrisk.ingest.audio import load_audio

    x = load_audio(SPEECH / "jfk.flac", SR)
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    ref = smile.process_signal(x, SR).iloc[0]
    got = ex.process_signal(x, SR)
    # Measured with the SHS + Viterbi pitch tracker: mean 37.461 vs 37.458 st, median
    # 37.858 vs 37.862 st, voiced segments 2.007 vs 2.011 /s, HNR 8.138 vs 8.144 dB.
    assert got[F0] == pytest.approx(ref[F0], abs=0.05)
    median = "F0semitoneFrom27.5Hz_sma3nz_percentile50.0"
    assert got[median] == pytest.approx(ref[median], abs=0.05)
    assert got["VoicedSegmentsPerSec"] == pytest.approx(ref["VoicedSegmentsPerSec"], rel=0.02)
    assert got["HNRdBACF_sma3nz_amean"] == pytest.approx(ref["HNRdBACF_sma3nz_amean"], abs=0.1)
    assert got["equivalentSoundLevel_dBp"] == pytest.approx(ref["equivalentSoundLevel_dBp"],
                                                            abs=0.01)
    for col in ("mfcc1_sma3_amean", "mfcc2_sma3_amean", "loudness_sma3_amean"):
        assert got[col] == pytest.approx(ref[col], rel=0.15)


def test_band_slope_is_opensmiles_formula_by_hand():
    # openSMILE's cSpectral: (Nind Sfy - Sf Sy) / (Nind Sff - Sf^2) with Nind = bins - 1.
    # Bins at 0, 1, 2 Hz: Nind 2, Sf 3, Sff 5 -> denominator 2 * 5 - 9 = 1
    f = torch.tensor([0.0, 1.0, 2.0])
    assert _slope_terms(f) == (2.0, 3.0, 1.0)
    # a flat spectrum at c dB gets (2 * 3c - 3 * 3c) / 1 = -3c, not 0: the level counts
    flat = torch.full((1, 3), 10.0)
    assert _band_slope(flat, f, _slope_terms(f)).item() == pytest.approx(-30.0)
    # y = f + 10 (true slope 1 dB/Hz): Sfy = 5 + 30, Sy = 33 -> 2 * 35 - 3 * 33 = -29
    ramp = torch.tensor([[10.0, 11.0, 12.0]])
    assert _band_slope(ramp, f, _slope_terms(f)).item() == pytest.approx(-29.0)


def test_spectral_slopes_and_flux_match_opensmile_per_frame():
    # a harmonic tone then white noise, on the 16-bit grid openSMILE reads (its input is
    # 16-bit PCM); openSMILE's own smoothed LLDs (eGeMAPSv02 LLD level) as reference
    rng = np.random.default_rng(3)
    t = np.arange(SR) / SR
    voiced = sum(0.2 / h * np.sin(2 * np.pi * 150 * h * t) for h in range(1, 6))
    x = np.concatenate([voiced, 0.05 * rng.standard_normal(SR)]) \
        + 1e-3 * rng.standard_normal(2 * SR)
    x = (np.round(x * 32768) / 32768).astype(np.float32)
    ref = OpenSmileProsody().process_signal_lld(x, SR)
    raw = _spectral_llds(torch.from_numpy(x)[None], (x.size - WIN_LONG) // HOP + 2)
    for name, atol in (("slope0-500", 2e-5), ("slope500-1500", 2e-5),
                       ("spectralFlux", 2e-4)):
        got = _sma3(raw[name][0].double().numpy(), nz=False)
        want = ref[f"{name}_sma3"].to_numpy()
        assert got.size == want.size == 196
        # measured (inner frames): slopes within 5.2e-6 and 2.7e-7 dB/Hz of openSMILE's
        # (values about 0.04-0.06), flux within 3.4e-5 (values about 0.24); the first
        # and last smoothed frames are left out (openSMILE's smoother edges)
        np.testing.assert_allclose(got[1:-1], want[1:-1], rtol=1e-3, atol=atol)


def _llds(f0: list[float], **values: list[float]) -> dict[str, np.ndarray]:
    """Raw descriptors of len(f0) frames: zeros, unit loudness/energy, ``values`` set."""
    n = len(f0)
    llds = {name: np.zeros(n, np.float32) for name in LLD_NAMES}
    llds["loudness"] = llds["energy"] = np.ones(n, np.float32)
    llds["F0semitone"] = np.array(f0, np.float32)
    for name, v in values.items():
        llds[name] = np.array(v, np.float32)
    return llds


def test_formant_amplitudes_are_minus_201_db_without_f0_as_opensmile():
    # openSMILE's cHarmonics writes -201 dB for formant amplitudes of frames without F0
    # and eGeMAPSv02 does not mask them by voicing: raw [-201, 6, 0, 3, -201, -201]
    # (0: voiced, no harmonic near F1), sma3nz averages the non-zero neighbours
    llds = _llds([0, 30, 30, 30, 0, 0], F1amplitudeLogRelF0=[0, 6, 0, 3, 0, 0])
    c = _contours(llds)["F1amplitudeLogRelF0_sma3nz"]
    np.testing.assert_allclose(c, [-97.5, -97.5, 0, -99, -133, -201])
    s = dict(zip(FEATURE_NAMES, functionals(llds), strict=True))
    # amean over the non-zero frames: (-97.5 - 97.5 - 99 - 133 - 201) / 5
    assert s["F1amplitudeLogRelF0_sma3nz_amean"] == pytest.approx(-125.6)
    # the frequency contours stay masked by voicing (openSMILE's formantsNz)
    assert _contours(_llds([0, 30, 30, 30, 0, 0], F1frequency=[0, 500, 600, 700, 0, 0]))[
        "F1frequency_sma3nz"].tolist() == [0, 550, 600, 650, 0, 0]
    # no voiced frame: undefined (openSMILE's 0, NaN in this backend), not -201
    none = dict(zip(FEATURE_NAMES, functionals(_llds([0.0] * 6)), strict=True))
    assert math.isnan(none["F1amplitudeLogRelF0_sma3nz_amean"])


def test_segments_follow_opensmiles_rules_and_cap():
    # cFunctionalSegments: 3 active frames start a segment, 2 inactive ones end it;
    # lengths first-to-last active frame: voiced [3, 7] frames of 14
    f0 = [30.0 * v for v in (1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1)]
    s = dict(zip(FEATURE_NAMES, functionals(_llds(f0)), strict=True))
    assert s["VoicedSegmentsPerSec"] == pytest.approx(2 / 0.14, rel=1e-6)
    assert s["MeanVoicedSegmentLengthSec"] == pytest.approx(0.05, rel=1e-6)
    assert s["StddevVoicedSegmentLengthSec"] == pytest.approx(0.02, rel=1e-6)
    # the 2-frame pause is no unvoiced segment (needs 3 frames): undefined
    assert math.isnan(s["MeanUnvoicedSegmentLength"])
    # at most 1,000 segments are counted, over the whole duration (eGeMAPSv02)
    many = np.tile(np.array([30, 30, 30, 0, 0], np.float32), 1001)
    s = dict(zip(FEATURE_NAMES, functionals(_llds(many.tolist())), strict=True))
    assert s["VoicedSegmentsPerSec"] == pytest.approx(1000 / (0.01 * 5005), rel=1e-6)
    assert s["MeanVoicedSegmentLengthSec"] == pytest.approx(0.02, rel=1e-6)


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.skipif(not SPEECH.exists(), reason="../shared/data/speech absent")
def test_ten_minutes_of_real_speech_agree_on_segments_with_opensmile(ex):
    from atrisk.ingest.audio import load_audio

    files = sorted(p for p in SPEECH.rglob("*")
                   if p.suffix.lower() in {".wav", ".flac", ".sph"})
    parts, total = [], 0
    for f in files:  # the first files (sorted) up to 10 min, as one signal
        parts.append(load_audio(f, SR))
        total += parts[-1].size
        if total >= 600 * SR:
            break
    x = np.concatenate(parts)[: 600 * SR]
    ref = OpenSmileProsody().process_signal(x, SR)
    got = ex.process_signal(x, SR)
    # both count 1,000 voiced segments (the cap) over the 10 min: measured 1.66683 /s
    # (openSMILE, 59,994 frames) and 1.66678 /s (this backend, 59,996 frames); the
    # plain run lengths used before counted every segment
    assert got["VoicedSegmentsPerSec"] == pytest.approx(1000 / 599.96, rel=1e-5)
    assert ref["VoicedSegmentsPerSec"] == pytest.approx(1000 / 599.94, rel=1e-5)
    # measured: lengths within 0.1-1.1 % of openSMILE's
    for col in ("MeanVoicedSegmentLengthSec", "StddevVoicedSegmentLengthSec",
                "MeanUnvoicedSegmentLength", "StddevUnvoicedSegmentLength"):
        assert got[col] == pytest.approx(ref[col], rel=0.02)


@pytest.mark.slow
def test_extract_with_torch_backend(tmp_path):
    import json

    import pandas as pd

    from atrisk import workflows
    from atrisk.config import Config
    from tests.conftest import make_bad_recordings

    cfg = Config().override({"asr.backend": "pocketsphinx", "prosody.backend": "torch"})
    rec = make_bad_recordings(tmp_path / "recordings")
    res = workflows.extract_folder(rec, tmp_path / "ws", cfg, device="cpu", workers=1, progress=False)
    assert res.exit_code == 1  # the bad recordings are listed, the rest completes
    p = pd.read_parquet(tmp_path / "ws" / "prosody.parquet")
    assert list(p.columns) == [*FEATURE_NAMES, "prosody_backend"]
    assert p.loc[("good", "teacher"), "loudness_sma3_amean"] > 0
    run = json.loads((tmp_path / "ws" / "run.json").read_text())
    assert run["prosody_backend"].startswith("torch-eGeMAPSv02")
    assert set(p["prosody_backend"]) == {run["prosody_backend"]}
    # per utterance: the torch backend on the decoded track cut at the utterance's times
    from atrisk.ingest.audio import load_audio

    pu = pd.read_parquet(tmp_path / "ws" / "prosody_utterances.parquet")
    assert len(pu) == res.n_utterances > 0 and list(pu.columns[:-1]) == FEATURE_NAMES
    assert set(pu["prosody_backend"]) == {run["prosody_backend"]}
    ex = TorchProsody(device="cpu")
    for (sid, speaker, a, b), row in pu.iterrows():
        (path,) = (tmp_path / "recordings" / sid).glob(f"{speaker}.*")
        signal = load_audio(path, SR)
        lo, hi = round(a * SR), min(signal.size, round(b * SR))
        np.testing.assert_array_equal(row.drop("prosody_backend").to_numpy(dtype=float),
                                      ex.process_signal(signal[lo:hi], SR).to_numpy())


def test_compiled_peak_enhancement_equals_the_torch_version():
    # the CPU path (numba, one pass per frame) must give the torch path's values
    # bit for bit: random spectra, an all-zero row (no maximum: every inner bin zeroed),
    # a rising row (one maximum, at the end: openSMILE zeroes every bin from 3 on, the
    # maximum too) and ties between bins
    from atrisk.extractors.prosody import torch_backend as pt

    if not pt._HAVE_NUMBA:
        pytest.skip("numba not installed: only the torch path exists")
    rng = np.random.default_rng(0)
    mag = rng.random((6, 513)).astype(np.float32) ** 4
    mag[1] = 0.0
    mag[2] = np.linspace(0, 1, 513, dtype=np.float32)
    mag[3, 100:110] = 0.5
    mag = torch.from_numpy(mag)
    want = pt._smooth3(pt._spec_enhance(mag))
    got = pt._enhance_smooth(mag)
    assert torch.equal(got, want)
    assert got[1].abs().sum().item() == 0.0
    # bins 0-2 kept (m_k = k / 512), then smoothed: bin 2 = (m1 + 2 m2 + 0) / 4,
    # bin 3 = m2 / 4, nothing from bin 4 on
    assert (got[2, 4:] == 0).all()
    assert got[2, 3].item() == pytest.approx(2 / 2048, rel=1e-6)
    assert got[2, 2].item() == pytest.approx(5 / 2048, rel=1e-6)
