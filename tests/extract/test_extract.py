"""End-to-end extract over bad inputs, and resume."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from atrisk import workflows
from atrisk.config import Config
from atrisk.extract import session as session_mod
from atrisk.extract.engines import local as local_engine
from atrisk.testing import small_recordings

CFG = Config().override({"asr.backend": "pocketsphinx"})
TABLES = ("sessions", "prosody", "utterances", "prosody_utterances", "in_class")
F0 = "F0semitoneFrom27.5Hz_sma3nz_amean"


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    from tests.conftest import make_bad_recordings

    root = tmp_path_factory.mktemp("x")
    rec = make_bad_recordings(root / "recordings")
    res = workflows.extract_folder(rec, root / "ws", CFG, workers=1, progress=False)
    return rec, root / "ws", res


def test_bad_inputs_complete_batch_and_are_listed(extracted):
    rec, ws, res = extracted
    assert res.exit_code == 1
    s = pd.read_parquet(ws / "sessions.parquet").set_index("session_id")
    # convertible inputs converted, with no error recorded
    for sid in ("good", "stereo", "video"):
        assert s.loc[sid, "status"] == "ok", s.loc[sid, "error"]
        assert s.loc[sid, "error"] == ""
    assert s.loc["stereo", "duration_s"] == pytest.approx(4.0, abs=0.05)
    assert s.loc["video", "duration_s"] == pytest.approx(4.0, abs=0.1)
    # each bad input: listed with the file and the reason; the other track kept
    assert "teacher.wav" in s.loc["corrupt", "error"]
    assert "empty" in s.loc["empty", "error"].lower()
    assert "student" in s.loc["nostudent", "error"]
    assert "silent" in s.loc["silent", "error"]
    for sid in ("corrupt", "empty", "nostudent", "silent"):
        assert s.loc[sid, "status"] == "partial"
    assert s.loc["baddate", "status"] == "failed"
    assert "start_time" in s.loc["baddate", "error"] or "date" in s.loc["baddate", "error"]
    # prosody exists for every decodable track, not for the broken ones
    p = pd.read_parquet(ws / "prosody.parquet")
    have = set(p.index)
    assert {
        ("good", "teacher"),
        ("good", "student"),
        ("stereo", "student"),
        ("video", "teacher"),
        ("video", "student"),
        ("corrupt", "student"),
        ("silent", "student"),
    } <= have
    assert ("corrupt", "teacher") not in have and ("nostudent", "student") not in have
    # the 88 functionals and, in every row, the backend that computed them
    from atrisk.extractors.prosody.opensmile_backend import OpenSmileProsody

    assert list(p.columns) == [*OpenSmileProsody().feature_names, "prosody_backend"]
    assert set(p["prosody_backend"]) == {"opensmile-eGeMAPSv02-2.6.0"}
    # failures.jsonl lists them all, with file and reason
    failures = [json.loads(line) for line in (ws / "failures.jsonl").read_text().splitlines()]
    keys = {f["key"] for f in failures}
    assert {"corrupt", "empty", "nostudent", "silent", "baddate"} <= keys
    assert not keys & {"good", "stereo", "video"}
    assert all(f["reason"] for f in failures)
    # one in_class row per session with a usable track
    ic = pd.read_parquet(ws / "in_class.parquet")
    assert {"good", "stereo", "video", "corrupt"} <= set(ic.index)
    assert any(c.startswith("teacher_loudness") for c in ic.columns)
    # the backend string is not a feature: in_class is the 2 x 88 + 2 x 7 + text floats
    assert not [c for c in ic.columns if "backend" in c]
    assert set(ic.dtypes) == {np.dtype("float64")}
    assert ic.loc["corrupt"].filter(like="teacher_loudness").isna().all()
    assert ic.loc["corrupt"].filter(like="student_loudness").notna().all()
    # the silent student track transcribes to nothing
    u = pd.read_parquet(ws / "utterances.parquet")
    assert not ((u.session_id == "silent") & (u.speaker == "student")).any()
    run = json.loads((ws / "run.json").read_text())
    assert run["prosody_backend"].startswith("opensmile")
    assert run["asr_backend"] == run["asr_requested"] == "pocketsphinx"
    assert run["asr_choice"] == "asr.backend = pocketsphinx"
    # ASR-independent timing features: one row per decodable track, and in in_class
    from atrisk.extractors.timing import TIMING_COLUMNS
    from atrisk.features.in_class import TIMING_FEATURES

    t = pd.read_parquet(ws / "timing.parquet")
    assert list(t.columns) == TIMING_COLUMNS
    assert set(t.index) == set(p.index)  # the tracks prosody got
    assert t.loc[("good", "teacher"), "speech_ratio"] > 0.2
    assert t.loc[("good", "teacher"), "speech_rate_syll_s"] > 0
    assert not t.loc[("silent", "student"), "speech_s"] > 0  # 0 or NaN: no speech
    for name in TIMING_FEATURES:
        for track in ("teacher", "student"):
            assert f"{track}_{name}" in ic.columns
    assert ic.loc["good", "teacher_speech_ratio"] == t.loc[("good", "teacher"), "speech_ratio"]
    assert np.isnan(ic.loc["corrupt", "teacher_speech_ratio"])


def test_prosody_per_utterance_of_asr_segments(extracted):
    """One row per ASR utterance, = openSMILE on the decoded track cut at its times."""
    from atrisk.extractors.prosody.opensmile_backend import OpenSmileProsody
    from atrisk.ingest.audio import load_audio

    rec, ws, _ = extracted
    u = pd.read_parquet(ws / "utterances.parquet")
    pu = pd.read_parquet(ws / "prosody_utterances.parquet")
    assert len(u) > 0 and pu.index.names == ["session_id", "speaker", "start_s", "end_s"]
    # ASR utterances exist only on decoded tracks: one row each, in the same order
    keys = pu.index.to_frame(index=False)
    pd.testing.assert_frame_equal(keys, u[["session_id", "speaker", "start_s", "end_s"]])
    assert list(pu.columns[:-1]) == OpenSmileProsody().feature_names
    assert set(pu["prosody_backend"]) == {OpenSmileProsody().backend_name}
    ex = OpenSmileProsody()
    for (sid, speaker, a, b), row in pu.iterrows():
        (path,) = (rec / sid).glob(f"{speaker}.*")
        signal = load_audio(path, 16000)  # what extract decodes
        lo, hi = round(a * 16000), min(signal.size, round(b * 16000))
        np.testing.assert_array_equal(row.drop("prosody_backend").to_numpy(dtype=float),
                                      ex.process_signal(signal[lo:hi], 16000).to_numpy())
    # the student's answers: in_class mean over the student's utterances; a track without
    # utterances (pocketsphinx hears none in the video's teacher track) gives NaN
    ic = pd.read_parquet(ws / "in_class.parquet")
    assert ("video", "student") in pu.index and ("video", "teacher") not in pu.index
    assert ic.at["video", f"student_utt_{F0}"] == pytest.approx(
        pu.loc[("video", "student"), F0].mean())
    assert np.isnan(ic.at["video", f"teacher_utt_{F0}"])
    assert np.isnan(ic.at["baddate", f"student_utt_{F0}"])


def test_rerun_resumes_and_gives_identical_tables(extracted, tmp_path):
    rec, ws, first = extracted
    ws2 = tmp_path / "ws2"
    shutil.copytree(ws, ws2)
    # simulate a crash: half the finished sessions lost, and the tables not yet written
    parts = sorted((ws2 / "parts").iterdir())
    for p in parts[::2]:
        shutil.rmtree(p)
    for t in TABLES:
        (ws2 / f"{t}.parquet").unlink()
    res = workflows.extract_folder(rec, ws2, CFG, workers=1, progress=False)
    assert res.n_resumed == len(parts) - len(parts[::2])
    for t in TABLES:
        pd.testing.assert_frame_equal(
            pd.read_parquet(ws / f"{t}.parquet"), pd.read_parquet(ws2 / f"{t}.parquet")
        )
    # a second rerun reuses everything
    res3 = workflows.extract_folder(rec, ws2, CFG, workers=1, progress=False)
    assert res3.n_resumed == res3.n_sessions


def test_device_is_the_runs_option_and_not_in_the_resume_key(tmp_path):
    """--device reaches the torch prosody backend; another device reuses every session."""
    import torch


    cfg = Config().override({"asr.backend": "transcripts", "prosody.backend": "torch"})
    spec = session_mod.WorkerSpec(cfg, "transcripts", cfg.asr.model, "cpu", 1)
    assert session_mod.SessionProcessor(spec).prosody.device == torch.device("cpu")
    rec = small_recordings(tmp_path / "rec")
    first = workflows.extract_folder(rec, tmp_path / "ws", cfg, device="cpu", workers=1,
                             progress=False)
    tables = {t: pd.read_parquet(tmp_path / "ws" / f"{t}.parquet") for t in TABLES}
    again = workflows.extract_folder(rec, tmp_path / "ws", cfg, device="auto", workers=1,
                             progress=False)
    assert first.n_resumed == 0 and again.n_resumed == again.n_sessions == 3
    for t in TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ws" / f"{t}.parquet"),
                                      tables[t])
    assert "device" not in (tmp_path / "ws" / "config.toml").read_text()


@pytest.mark.parametrize(("threads", "usable", "expected"), [(None, 3, 3), (2, 3, 2)])
def test_workers_1_caps_torch_threads(tmp_path, monkeypatch, threads, usable, expected):
    """--workers 1: torch runs on ``threads`` (default usable CPUs), torch prosody on 1.

    The count the caller had is restored afterwards (the run is in this process).
    """
    import torch

    from atrisk.extractors.prosody.torch_backend import TorchProsody

    seen: dict[str, set[int]] = {"session": set(), "prosody": set(), "utterances": set()}
    real_call, real_track, real_utts = (session_mod.SessionProcessor.__call__,
                                        TorchProsody.process_sessions,
                                        session_mod.utterance_prosody)

    def spy(key, fn):
        def wrapped(*args, **kwargs):
            seen[key].add(torch.get_num_threads())
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(session_mod.SessionProcessor, "__call__", spy("session", real_call))
    monkeypatch.setattr(TorchProsody, "process_sessions", spy("prosody", real_track))
    monkeypatch.setattr(session_mod, "utterance_prosody", spy("utterances", real_utts))
    monkeypatch.setattr(local_engine, "usable_cpus", lambda: usable)
    rec = small_recordings(tmp_path / "rec")
    cfg = Config().override({"asr.backend": "transcripts", "prosody.backend": "torch"})
    before = torch.get_num_threads()
    torch.set_num_threads(5)
    try:
        res = workflows.extract_folder(rec, tmp_path / "ws", cfg, device="cpu", workers=1,
                               threads=threads, progress=False)
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert res.n_sessions == 3 and res.n_resumed == 0
    assert seen == {"session": {expected}, "prosody": {1}, "utterances": {1}}
    assert after == 5


def test_usable_cpus_honours_the_affinity_mask():
    """A process allowed on one CPU counts one (os.cpu_count() would count them all)."""
    import subprocess
    import sys

    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from atrisk.extract.resources import usable_cpus; print(usable_cpus(), os.cpu_count())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert int(out[0]) == 1 and int(out[1]) >= 1


def test_threads_option_is_for_the_local_engine(tmp_path):
    from atrisk.errors import ConfigError

    with pytest.raises(ConfigError, match="--threads is for --engine local"):
        workflows.extract_folder(tmp_path, tmp_path / "ws", engine="ray", threads=2, progress=False)
    with pytest.raises(ConfigError, match="at least 1, got 0"):
        workflows.extract_folder(tmp_path, tmp_path / "ws", threads=0, progress=False)


def test_extractor_code_is_in_the_resume_key(tmp_path, monkeypatch):
    """Another code fingerprint recomputes every session; the same one reuses them."""
    from atrisk import fingerprint

    rec = small_recordings(tmp_path / "rec")
    cfg = Config().override({"asr.backend": "transcripts"})

    def run():
        return workflows.extract_folder(rec, tmp_path / "ws", cfg, workers=1, progress=False)

    first = run()
    tables = {t: pd.read_parquet(tmp_path / "ws" / f"{t}.parquet") for t in TABLES}
    run_json = json.loads((tmp_path / "ws" / "run.json").read_text())
    assert run_json["code_fingerprint"] == fingerprint.extract_fingerprint(cfg)
    assert (first.n_resumed, run().n_resumed) == (0, 3)  # same code: reused
    monkeypatch.setattr(fingerprint, "extract_fingerprint", lambda config: "0" * 16)
    changed = run()  # e.g. a backend edited without a version bump
    assert changed.n_resumed == 0 and changed.stage_seconds["prosody_s"] > 0
    assert run().n_resumed == 3  # and that code's results are reused in turn
    for t in TABLES:  # (the code did not really change: the same tables)
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ws" / f"{t}.parquet"),
                                      tables[t])


def test_changed_track_is_recomputed(tmp_path):
    import soundfile as sf

    from tests.conftest import make_bad_recordings, voiced

    rec = make_bad_recordings(tmp_path / "rec")
    first = workflows.extract_folder(rec, tmp_path / "ws", CFG, workers=2, progress=False)
    sf.write(rec / "good" / "student.wav", voiced(300, seed=99), 16000)
    second = workflows.extract_folder(rec, tmp_path / "ws", CFG, workers=1, progress=False)
    assert second.n_resumed == first.n_sessions - 1
    p = pd.read_parquet(tmp_path / "ws" / "prosody.parquet")
    f0 = p.loc[("good", "student"), "F0semitoneFrom27.5Hz_sma3nz_amean"]
    assert f0 > p.loc[("good", "teacher"), "F0semitoneFrom27.5Hz_sma3nz_amean"]


def test_unknown_student_rejected_when_known_students_given(tmp_path):
    from tests.conftest import make_bad_recordings

    rec = make_bad_recordings(tmp_path / "rec")
    res = workflows.extract_folder(
        rec, tmp_path / "ws", CFG, workers=1, progress=False, known_students={"stu_good"}
    )
    s = pd.read_parquet(tmp_path / "ws" / "sessions.parquet").set_index("session_id")
    assert s.loc["good", "status"] == "ok"
    assert "unknown student" in s.loc["stereo", "error"]
    assert res.exit_code == 1


def test_prosody_failure_is_listed_not_silent(tmp_path, monkeypatch):
    """openSMILE failing on one track marks the session partial and lists the reason."""
    import soundfile as sf

    from atrisk.extractors.prosody.opensmile_backend import OpenSmileProsody
    from tests.conftest import voiced

    rec = tmp_path / "rec"
    (rec / "s1").mkdir(parents=True)
    (rec / "sessions.csv").write_text(
        "session_id,student_id,teacher_id,start_time\ns1,stu_1,tea_1,2024-03-01T10:00:00Z\n"
    )
    sf.write(rec / "s1" / "teacher.wav", voiced(120, seed=1), 16000)
    sf.write(rec / "s1" / "student.wav", voiced(240, seed=2), 16000)
    real_run = OpenSmileProsody._run
    calls = []

    def run_failing_first(self, *args, **kwargs):
        # fault injection: a real openSMILE crash cannot be provoked on demand
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected openSMILE crash")
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(OpenSmileProsody, "_run", run_failing_first)
    res = workflows.extract_folder(rec, tmp_path / "ws", CFG, workers=1, progress=False)
    assert res.exit_code == 1
    s = pd.read_parquet(tmp_path / "ws" / "sessions.parquet").set_index("session_id")
    assert s.loc["s1", "status"] == "partial"
    assert "teacher.wav" in s.loc["s1", "error"]
    assert "injected openSMILE crash" in s.loc["s1", "error"]
    failures = [
        json.loads(line) for line in (tmp_path / "ws" / "failures.jsonl").read_text().splitlines()
    ]
    assert [f["key"] for f in failures] == ["s1"]
    assert "prosody" in failures[0]["reason"]


def _given_recordings(root):
    """s1: 3 s teacher + 2 s student track; s2: corrupt student track; hand-made utterances."""
    import soundfile as sf

    from tests.conftest import voiced

    for sid in ("s1", "s2"):
        (root / sid).mkdir(parents=True)
    sf.write(root / "s1" / "teacher.wav", voiced(120, seconds=3, seed=1), 16000)
    sf.write(root / "s1" / "student.wav", voiced(240, seconds=2, seed=2), 16000)
    sf.write(root / "s2" / "teacher.wav", voiced(130, seconds=2, seed=3), 16000)
    (root / "s2" / "student.wav").write_bytes(b"not audio at all" * 100)
    (root / "sessions.csv").write_text(
        "session_id,student_id,teacher_id,start_time\n"
        "s1,stu_1,tea_1,2024-03-01T10:00:00Z\ns2,stu_2,tea_1,2024-03-02T10:00:00Z\n"
    )
    (root / "utterances.csv").write_text(
        "session_id,speaker,start_s,end_s,text\n"
        "s1,teacher,0.2,1.2,what is seven times eight\n"
        "s1,student,0.5,1.7,fifty six\n"
        "s1,teacher,1.50,1.55,so\n"  # 0.05 s: too short to frame
        "s1,teacher,2.5,9.0,good and then\n"  # runs past the 3 s track: clipped
        "s1,teacher,4.0,5.0,and next\n"  # wholly beyond the track end
        "s2,teacher,0.1,1.1,hello\n"
        "s2,student,0.2,0.9,hi\n"  # its track cannot be decoded: no row
    )
    return root


def test_prosody_per_utterance_bad_times_and_tracks(tmp_path):
    """Edge cases of prosody_utterances, by hand; status and failures as without it."""
    from atrisk.extractors.prosody.opensmile_backend import OpenSmileProsody
    from atrisk.ingest.audio import load_audio

    rec = _given_recordings(tmp_path / "rec")
    cfg = Config().override({"asr.backend": "transcripts"})
    res = workflows.extract_folder(rec, tmp_path / "ws", cfg, workers=1, progress=False)
    pu = pd.read_parquet(tmp_path / "ws" / "prosody_utterances.parquet")
    u = pd.read_parquet(tmp_path / "ws" / "utterances.parquet")
    # rows in the utterances table's order, without the undecodable track's utterance
    expected = u[~((u.session_id == "s2") & (u.speaker == "student"))]
    pd.testing.assert_frame_equal(pu.index.to_frame(index=False),
                                  expected[["session_id", "speaker", "start_s", "end_s"]]
                                  .reset_index(drop=True))
    feats = pu.drop(columns="prosody_backend")
    ex = OpenSmileProsody()
    teacher = load_audio(rec / "s1" / "teacher.wav", 16000)
    student = load_audio(rec / "s1" / "student.wav", 16000)
    for key, signal in ((("s1", "teacher", 0.2, 1.2), teacher[3200:19200]),
                        (("s1", "student", 0.5, 1.7), student[8000:27200]),
                        (("s1", "teacher", 2.5, 9.0), teacher[40000:48000])):
        np.testing.assert_array_equal(feats.loc[key].to_numpy(),
                                      ex.process_signal(signal, 16000).to_numpy())
    assert feats.loc[("s1", "teacher", 1.5, 1.55)].isna().all()  # 0.05 s
    assert feats.loc[("s1", "teacher", 4.0, 5.0)].isna().all()  # beyond the track
    assert feats.loc[("s1", "student", 0.5, 1.7), F0] > feats.loc[("s1", "teacher", 0.2, 1.2),
                                                                  F0] + 10
    # status and failures: only the undecodable track, as with per-utterance prosody off
    shutil.copytree(tmp_path / "ws", tmp_path / "off")  # the setting is in the resume key
    off = workflows.extract_folder(rec, tmp_path / "off", cfg.override({"prosody.per_utterance": False}),
                           workers=1, progress=False)
    assert off.n_resumed == 0
    s = pd.read_parquet(tmp_path / "ws" / "sessions.parquet").set_index("session_id")
    assert list(s["status"]) == ["ok", "partial"] and s.at["s1", "error"] == ""
    assert "s2/student.wav: cannot decode" in s.at["s2", "error"]
    assert "prosody failed" not in s.at["s2", "error"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "off" / "sessions.parquet"),
                                  s.reset_index())
    assert res.failures == off.failures and [f["key"] for f in res.failures] == ["s2"]
    # off: a table without rows, same columns; in_class has the columns, NaN
    empty = pd.read_parquet(tmp_path / "off" / "prosody_utterances.parquet")
    assert len(empty) == 0 and list(empty.columns) == list(pu.columns)
    assert list(empty.index.names) == list(pu.index.names)
    ic_on = pd.read_parquet(tmp_path / "ws" / "in_class.parquet")
    ic_off = pd.read_parquet(tmp_path / "off" / "in_class.parquet")
    assert list(ic_on.columns) == list(ic_off.columns)
    assert ic_off.filter(like="_utt_").isna().all().all()
    # mean over the teacher's utterances of s1: three defined rows (two are NaN)
    assert ic_on.at["s1", f"teacher_utt_{F0}"] == pytest.approx(
        feats.loc[("s1", "teacher"), F0].dropna().mean())
    assert feats.loc[("s1", "teacher"), F0].notna().sum() == 2
    assert np.isnan(ic_on.at["s2", f"student_utt_{F0}"])
    pd.testing.assert_frame_equal(ic_on.drop(columns=ic_on.filter(like="_utt_").columns),
                                  ic_off.drop(columns=ic_off.filter(like="_utt_").columns))


def test_prosody_failure_on_an_utterance_is_listed(tmp_path, monkeypatch):
    """openSMILE failing on one utterance: NaN row, session partial, reason listed."""
    from atrisk.extractors.prosody.opensmile_backend import OpenSmileProsody

    rec = _given_recordings(tmp_path / "rec")
    real_run = OpenSmileProsody._run

    def run_failing_on_one(self, level, x, rate, **kwargs):
        # fault injection: a real openSMILE crash cannot be provoked on demand
        pieces = [x] if isinstance(x, np.ndarray) else x  # a signal, or its list of pieces
        if isinstance(pieces, list) and sum(p.size for p in pieces) == 19200:  # s1 student
            raise RuntimeError("injected openSMILE crash")
        return real_run(self, level, x, rate, **kwargs)

    monkeypatch.setattr(OpenSmileProsody, "_run", run_failing_on_one)
    cfg = Config().override({"asr.backend": "transcripts"})
    res = workflows.extract_folder(rec, tmp_path / "ws", cfg, workers=1, progress=False)
    s = pd.read_parquet(tmp_path / "ws" / "sessions.parquet").set_index("session_id")
    assert s.at["s1", "status"] == "partial"
    assert "s1/student.wav: prosody failed on 1 of 1 utterance(s)" in s.at["s1", "error"]
    assert "injected openSMILE crash" in s.at["s1", "error"]
    assert sorted(f["key"] for f in res.failures) == ["s1", "s2"]
    pu = pd.read_parquet(tmp_path / "ws" / "prosody_utterances.parquet")
    assert pu.loc[("s1", "student", 0.5, 1.7)].drop("prosody_backend").isna().all()
    assert pu.loc[("s1", "teacher", 0.2, 1.2), F0] > 0


WORKER_IMPORTS = """
import sys
from atrisk.config import Config
from atrisk.extract import session as session_mod
from atrisk.extract.engines import local as local_engine
cfg = Config().override({"asr.backend": "transcripts", "prosody.backend": sys.argv[1]})
local_engine._worker_init(session_mod.WorkerSpec(cfg, "transcripts", "x", "cpu", 1, None))
print("torch" in sys.modules)
"""


@pytest.mark.parametrize(("prosody", "imports_torch"), [("opensmile", False), ("torch", True)])
def test_extract_worker_imports_torch_only_for_a_torch_model(prosody, imports_torch):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", WORKER_IMPORTS, prosody], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(imports_torch)]
