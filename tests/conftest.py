"""Shared fixtures: small recordings folders made inside the tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from atrisk.testing import voiced_signal

SR = 16000
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def voiced(f0: float, seconds: float = 4.0, seed: int = 0, sr: int = SR) -> np.ndarray:
    """A crude voiced signal (:func:`atrisk.testing.voiced_signal`)."""
    return voiced_signal(f0, seconds, seed, sr)


def make_bad_recordings(root: Path) -> Path:
    """A recordings folder mixing good sessions with every bad input of the foundation issue."""
    root.mkdir(parents=True)
    rows = ["session_id,student_id,teacher_id,start_time"]

    def sess(sid: str, student: str | None = None, when: str | None = None) -> Path:
        (root / sid).mkdir()
        rows.append(
            f"{sid},{student or 'stu_' + sid},tea_1,{when or f'2024-03-{len(rows):02d}T10:00:00Z'}"
        )
        return root / sid

    d = sess("good")
    sf.write(d / "teacher.wav", voiced(120, seed=1), SR)
    sf.write(d / "student.wav", voiced(240, seed=2), SR)
    d = sess("stereo")
    x = voiced(230, seed=4, sr=44100)
    sf.write(d / "teacher.wav", np.stack([voiced(110, seed=3)] * 2, 1), SR)
    sf.write(d / "student.wav", np.stack([x, x], 1), 44100)
    d = sess("corrupt")
    (d / "teacher.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    sf.write(d / "student.wav", voiced(250, seed=5), SR)
    d = sess("empty")
    (d / "teacher.wav").write_bytes(b"")
    sf.write(d / "student.wav", voiced(250, seed=6), SR)
    d = sess("nostudent")
    sf.write(d / "teacher.wav", voiced(130, seed=7), SR)
    d = sess("silent")
    sf.write(d / "teacher.wav", voiced(125, seed=8), SR)
    sf.write(d / "student.wav", np.zeros(SR * 3, dtype="float32"), SR)
    d = sess("video")
    sf.write(d / "t.wav", voiced(125, seed=8), SR)
    sf.write(d / "s.wav", voiced(245, seed=9), SR)
    ff = ["ffmpeg", "-loglevel", "error", "-y"]
    subprocess.run(
        ff
        + [
            "-f",
            "lavfi",
            "-i",
            "color=c=black:s=64x64:d=4",
            "-i",
            str(d / "t.wav"),
            "-shortest",
            "-c:v",
            "libx264",
            "-c:a",
            "aac",
            str(d / "teacher.mp4"),
        ],
        check=True,
    )
    subprocess.run(ff + ["-i", str(d / "s.wav"), str(d / "student.mp3")], check=True)
    os.remove(d / "t.wav")
    os.remove(d / "s.wav")
    # invalid manifest rows: a bad date and an unknown student (when logs are given)
    d = sess("baddate", when="2024-13-45T99:00:00")
    sf.write(d / "teacher.wav", voiced(120, seed=10), SR)
    sf.write(d / "student.wav", voiced(240, seed=11), SR)
    (root / "sessions.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def bad_recordings(tmp_path: Path) -> Path:
    return make_bad_recordings(tmp_path / "recordings")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"public data folder {SHARED_DATA} is absent (it sits beside the repo in CI)")
    return SHARED_DATA
