"""A failed extract leaves the previous tables and run.json as they were (staging, then switch)."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
import textwrap

import pytest

from atrisk.config import Config
from atrisk.testing import small_recordings
from atrisk.workflows import extract_folder
from atrisk.workspace import TABLES, Workspace

OUTPUTS = [*(f"{t}.parquet" for t in TABLES if t != "pairs"), "failures.jsonl",
           "config.toml", "run.json"]

# An extract of RECORDINGS into WORKSPACE with every file this process writes limited to
# LIMIT bytes: a full disk, for the writes that pass the limit (EFBIG, not SIGXFSZ).
FULL_DISK = textwrap.dedent("""
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = int(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from atrisk.config import Config
    from atrisk.workflows import extract_folder
    extract_folder(sys.argv[1], sys.argv[2], Config().override({"asr.backend": "transcripts"}),
                   workers=1, progress=False)
""")


def _extract(rec, ws):
    return extract_folder(rec, ws, Config().override({"asr.backend": "transcripts"}),
                          workers=1, progress=False)


def _snapshot(ws) -> dict[str, bytes]:
    return {name: (ws / name).read_bytes() for name in OUTPUTS}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Workspace of a 2-session run; the 3-session run's parts, ready to resume."""
    root = tmp_path_factory.mktemp("staging")
    old = _extract(small_recordings(root / "rec2", n=2), root / "ws")
    new = _extract(small_recordings(root / "rec3", n=3), root / "ws3")
    return root, old, new


def test_a_run_failing_while_writing_its_tables_leaves_the_old_ones(runs):
    root, old, new = runs
    ws, ws3 = root / "ws", root / "ws3"
    assert (old.n_sessions, new.n_sessions) == (2, 3)
    before = _snapshot(ws)
    # the 3-session run resumes from its parts (nothing to compute), so only its outputs
    # are written; a limit between its smallest and largest table lets some tables be
    # written and not others: without staging, a mix of old and new tables
    shutil.copytree(ws3 / "parts", ws / "parts", dirs_exist_ok=True)
    sizes = sorted((ws3 / f"{t}.parquet").stat().st_size for t in TABLES if t != "pairs")
    assert sizes[0] < sizes[-1]
    limit = (sizes[0] + sizes[-1]) // 2
    r = subprocess.run([sys.executable, "-c", FULL_DISK, str(root / "rec3"), str(ws),
                        str(limit)], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "File too large" in r.stderr, r.stderr[-2000:]
    assert _snapshot(ws) == before  # every table, failures.jsonl and run.json untouched
    assert not list(ws.glob(".staging-*")) and not list(ws.glob(".*.tmp"))
    # the same run with room: all outputs switch together, run.json describes them
    res = _extract(root / "rec3", ws)
    assert res.n_resumed == 3 and Workspace(ws).read("sessions")["session_id"].tolist() == [
        "s0", "s1", "s2"]
    assert (ws / "run.json").read_text().count(str((root / "rec3").resolve())) == 1


def test_outputs_are_private(runs):
    root, _, _ = runs
    ws = root / "ws3"
    for name in OUTPUTS:
        assert stat.S_IMODE((ws / name).stat().st_mode) == 0o600, name
    parts = list((ws / "parts").glob("*/*.json"))
    assert len(parts) == 3
    for p in [*parts, *(q.parent for q in parts), ws / "parts", ws]:
        want = 0o600 if p.is_file() else 0o700
        assert stat.S_IMODE(p.stat().st_mode) == want, p
