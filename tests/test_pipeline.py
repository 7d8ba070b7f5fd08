"""End-to-end extract over bad inputs, and resume."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from atrisk import pipeline
from atrisk.config import Config

CFG = Config().override({"asr.backend": "pocketsphinx"})


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    from tests.conftest import make_bad_recordings

    root = tmp_path_factory.mktemp("x")
    rec = make_bad_recordings(root / "recordings")
    res = pipeline.extract(rec, root / "ws", CFG, workers=1, progress=False)
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
    assert p.shape[1] == 88
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
    assert ic.loc["corrupt"].filter(like="teacher_loudness").isna().all()
    assert ic.loc["corrupt"].filter(like="student_loudness").notna().all()
    # the silent student track transcribes to nothing
    u = pd.read_parquet(ws / "utterances.parquet")
    assert not ((u.session_id == "silent") & (u.speaker == "student")).any()
    run = json.loads((ws / "run.json").read_text())
    assert run["prosody_backend"].startswith("opensmile")


def test_rerun_resumes_and_gives_identical_tables(extracted, tmp_path):
    rec, ws, first = extracted
    ws2 = tmp_path / "ws2"
    shutil.copytree(ws, ws2)
    # simulate a crash: half the finished sessions lost, and the tables not yet written
    parts = sorted((ws2 / "parts").iterdir())
    for p in parts[::2]:
        shutil.rmtree(p)
    for t in ("sessions", "prosody", "utterances", "in_class"):
        (ws2 / f"{t}.parquet").unlink()
    res = pipeline.extract(rec, ws2, CFG, workers=1, progress=False)
    assert res.n_resumed == len(parts) - len(parts[::2])
    for t in ("sessions", "prosody", "utterances", "in_class"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(ws / f"{t}.parquet"), pd.read_parquet(ws2 / f"{t}.parquet")
        )
    # a second rerun reuses everything
    res3 = pipeline.extract(rec, ws2, CFG, workers=1, progress=False)
    assert res3.n_resumed == res3.n_sessions


def test_changed_track_is_recomputed(tmp_path):
    import soundfile as sf

    from tests.conftest import make_bad_recordings, voiced

    rec = make_bad_recordings(tmp_path / "rec")
    first = pipeline.extract(rec, tmp_path / "ws", CFG, workers=2, progress=False)
    sf.write(rec / "good" / "student.wav", voiced(300, seed=99), 16000)
    second = pipeline.extract(rec, tmp_path / "ws", CFG, workers=1, progress=False)
    assert second.n_resumed == first.n_sessions - 1
    p = pd.read_parquet(tmp_path / "ws" / "prosody.parquet")
    f0 = p.loc[("good", "student"), "F0semitoneFrom27.5Hz_sma3nz_amean"]
    assert f0 > p.loc[("good", "teacher"), "F0semitoneFrom27.5Hz_sma3nz_amean"]


def test_unknown_student_rejected_when_known_students_given(tmp_path):
    from tests.conftest import make_bad_recordings

    rec = make_bad_recordings(tmp_path / "rec")
    res = pipeline.extract(
        rec, tmp_path / "ws", CFG, workers=1, progress=False, known_students={"stu_good"}
    )
    s = pd.read_parquet(tmp_path / "ws" / "sessions.parquet").set_index("session_id")
    assert s.loc["good", "status"] == "ok"
    assert "unknown student" in s.loc["stereo", "error"]
    assert res.exit_code == 1


def test_prosody_failure_is_listed_not_silent(tmp_path, monkeypatch):
    """openSMILE failing on one track marks the session partial and lists the reason."""
    import soundfile as sf

    from atrisk.extractors.prosody import ProsodyExtractor
    from tests.conftest import voiced

    rec = tmp_path / "rec"
    (rec / "s1").mkdir(parents=True)
    (rec / "sessions.csv").write_text(
        "session_id,student_id,teacher_id,start_time\ns1,stu_1,tea_1,2024-03-01T10:00:00Z\n"
    )
    sf.write(rec / "s1" / "teacher.wav", voiced(120, seed=1), 16000)
    sf.write(rec / "s1" / "student.wav", voiced(240, seed=2), 16000)
    real_run = ProsodyExtractor._run
    calls = []

    def run_failing_first(self, *args, **kwargs):
        # fault injection: a real openSMILE crash cannot be provoked on demand
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected openSMILE crash")
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(ProsodyExtractor, "_run", run_failing_first)
    res = pipeline.extract(rec, tmp_path / "ws", CFG, workers=1, progress=False)
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


WORKER_IMPORTS = """
import sys
from atrisk import pipeline
from atrisk.config import Config
cfg = Config().override({"asr.backend": "transcripts", "prosody.backend": sys.argv[1]})
pipeline._worker_init(pipeline._WorkerSpec(cfg, "transcripts", "x", "cpu", 1, None))
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
