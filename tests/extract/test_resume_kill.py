"""`atrisk extract` killed with SIGKILL mid-run resumes and gives the uninterrupted tables."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf

from tests.conftest import SR, voiced

N = 6


def _recordings(root: Path) -> Path:
    root.mkdir(parents=True)
    rows = ["session_id,student_id,teacher_id,start_time"]
    for i in range(N):
        d = root / f"s{i}"
        d.mkdir()
        sf.write(d / "teacher.wav", voiced(110 + 7 * i, seconds=3, seed=2 * i), SR)
        sf.write(d / "student.wav", voiced(230 + 5 * i, seconds=3, seed=2 * i + 1), SR)
        rows.append(f"s{i},stu{i},tea1,2024-03-{i + 1:02d}T10:00:00Z")
    (root / "sessions.csv").write_text("\n".join(rows) + "\n")
    return root


def _cmd(rec: Path, ws: Path) -> list[str]:
    return [sys.executable, "-m", "atrisk", "extract", str(rec), "--out", str(ws),
            "--asr-backend", "pocketsphinx", "--workers", "1", "--json"]


def _parts(ws: Path) -> list[Path]:
    return sorted((ws / "parts").glob("*/*.json")) if (ws / "parts").is_dir() else []


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_resumes_with_identical_tables(tmp_path):
    rec = _recordings(tmp_path / "rec")
    ws = tmp_path / "ws"
    proc = subprocess.Popen(_cmd(rec, ws), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 240
    while len(_parts(ws)) < 2 and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.05)
    assert proc.poll() is None, "extract finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {p.parent.name for p in _parts(ws)}
    assert 2 <= len(done_before) < N
    assert not (ws / "sessions.parquet").exists()

    rerun = subprocess.run(_cmd(rec, ws), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    res = json.loads(rerun.stdout)
    assert res["n_sessions"] == N and res["n_ok"] == N
    assert res["n_resumed"] == len(done_before)
    assert {p.parent.name for p in _parts(ws)} >= done_before and len(_parts(ws)) == N

    ref = tmp_path / "ref"
    clean = subprocess.run(_cmd(rec, ref), capture_output=True, text=True, timeout=600)
    assert clean.returncode == 0 and json.loads(clean.stdout)["n_resumed"] == 0
    for table in ("sessions", "prosody", "utterances", "prosody_utterances", "in_class"):
        pd.testing.assert_frame_equal(pd.read_parquet(ws / f"{table}.parquet"),
                                      pd.read_parquet(ref / f"{table}.parquet"))
