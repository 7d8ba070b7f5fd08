"""A folder of 10,000 sessions is listed and scheduled lazily: O(n) work, O(1) held, no decoding."""

from __future__ import annotations

import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import soundfile as sf

from atrisk import workflows
from atrisk.config import Config
from atrisk.extract import plan, resources
from atrisk.extract import session as session_mod
from atrisk.extract.engines import local as local_engine
from atrisk.ingest import audio, manifest
from atrisk.testing import small_recordings
from tests.conftest import SR, voiced

N = 10_000
CFG = Config().override({"asr.backend": "transcripts"})


def _manifest(root: Path, n: int) -> Path:
    """n sessions: even ones share one tiny real track pair, odd ones name missing files."""
    root.mkdir(parents=True)
    sf.write(root / "t.wav", voiced(120, seconds=0.5), SR)
    sf.write(root / "s.wav", voiced(220, seconds=0.5, seed=1), SR)
    lines = ["session_id,student_id,teacher_id,start_time,teacher_path,student_path"]
    for i in range(n):
        t, s = ("t.wav", "s.wav") if i % 2 == 0 else (f"gone/{i}t.wav", f"gone/{i}s.wav")
        lines.append(f"c{i},stu{i % 97},tea{i % 7},2024-03-01T10:00:00Z,{t},{s}")
    (root / "sessions.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    return {n: _manifest(root / f"rec{n}", n) for n in (1_000, N)}


def _plan_counts(rec: Path, ws: Path, monkeypatch) -> tuple[int, int, int]:
    """List and plan the whole folder, holding nothing: (sessions, keys, peak traced bytes)."""
    decodes = []
    monkeypatch.setattr(audio, "load_audio", lambda *a, **k: decodes.append(a))
    keys = []
    real_key = plan.session_key
    monkeypatch.setattr(plan, "session_key",
                        lambda *a, **k: keys.append(1) or real_key(*a, **k))
    rows = manifest.iter_manifest(rec)  # listing is a generator too
    tracemalloc.start()
    n = 0
    for item in plan.iter_plan(rows, ws, CFG, "transcripts:x", {}):
        assert item.cached is None and item.given == []
        n += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert decodes == []  # listing and planning open no audio
    return n, len(keys), peak


def test_planning_10k_sessions_is_linear_and_holds_o1(folders, tmp_path, monkeypatch):
    small = _plan_counts(folders[1_000], tmp_path / "ws1", monkeypatch)
    big = _plan_counts(folders[N], tmp_path / "ws2", monkeypatch)
    assert small[:2] == (1_000, 1_000) and big[:2] == (N, N)  # one key per session: O(n)
    # listing and planning are generators: the only per-session state is the manifest's
    # set of seen ids (duplicate check), well under 1 KB a session (1 s of audio is 64 KB)
    assert (big[2] - small[2]) / (N - 1_000) < 1024


def test_first_sessions_are_processed_before_the_folder_is_planned(folders, tmp_path,
                                                                   monkeypatch):
    pulled = []
    planned = plan.iter_plan(manifest.read_manifest(folders[N])[0], tmp_path / "ws", CFG,
                             "transcripts:x", {})

    def counted():
        for item in planned:
            pulled.append(item.session.session_id)
            yield item

    spec = session_mod.WorkerSpec(CFG, "transcripts", CFG.asr.model, "cpu", 1, folders[N])
    stream = local_engine.run_sessions(counted(), spec, None, n_workers=1)
    first = [next(stream) for _ in range(4)]
    stream.close()
    assert [r.session_id for r, _ in first] == ["c0", "c1", "c2", "c3"]
    assert len(pulled) == 4  # not 10,000: scheduled lazily
    assert [r.status for r, _ in first] == ["ok", "failed", "ok", "failed"]
    assert "gone/1t.wav" in first[1][0].error
    parts = sorted(p.parent.name.split("-")[0] for p in (tmp_path / "ws" / "parts").glob("*/*"))
    assert parts == ["c0", "c1", "c2", "c3"]


def test_bounded_imap_keeps_at_most_window_in_flight_over_10k_items():
    lock = threading.Lock()
    state = {"pulled": 0, "running": 0, "max_running": 0}

    def items():
        for i in range(N):
            with lock:
                state["pulled"] += 1
            yield i

    def work(i: int) -> int:
        with lock:
            state["running"] += 1
            state["max_running"] = max(state["max_running"], state["running"])
        time.sleep(0)
        with lock:
            state["running"] -= 1
        return i * i

    seen = []
    with ThreadPoolExecutor(4) as pool:
        for item, fut in local_engine.bounded_imap(items(), lambda i: pool.submit(work, i), 8):
            assert fut.result() == item * item
            assert state["pulled"] - len(seen) <= 8  # never more than the window ahead
            seen.append(item)
    assert sorted(seen) == list(range(N))
    assert state["max_running"] <= 4


def test_long_track_memory_release_keeps_the_tables(tmp_path, monkeypatch):
    """The give-back-memory path of long tracks (forced here for 2 s tracks) changes no output."""
    import pandas as pd

    from tests.extract.engines.test_ray_data import TABLES

    rec = small_recordings(tmp_path / "rec")
    workflows.extract_folder(rec, tmp_path / "a", CFG, workers=1, progress=False)
    calls = []
    real = resources.gc.collect
    monkeypatch.setattr(resources, "LONG_TRACK_SAMPLES", 1)
    monkeypatch.setattr(resources.gc, "collect", lambda *a: calls.append(1) or real(*a))
    workflows.extract_folder(rec, tmp_path / "b", CFG, workers=1, progress=False)
    assert len(calls) == 2 * 5  # 5 decoded tracks: after decoding and after prosody
    for table in TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a" / f"{table}.parquet"),
                                      pd.read_parquet(tmp_path / "b" / f"{table}.parquet"))


PART = Path("/nonexistent/part.json")


def _resumed_plan(n: int, state: dict):
    """n planned sessions that an earlier run finished (cached results), counted as pulled."""
    import math
    from datetime import UTC, datetime

    import pandas as pd

    from atrisk.records import Session

    empty = pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=["session_id", "track"]))
    when = datetime(2024, 3, 1, 10, tzinfo=UTC)
    for i in range(n):
        s = Session(f"c{i}", "stu", "tea", when, None, None)
        done = session_mod.SessionResult(s.session_id, "failed", "gone", math.nan, empty, [])
        state["pulled"] += 1
        # one part path for all: pathlib interns each new path part, and the interpreter's
        # intern table growing by 10k names would count as the scheduler's memory
        yield plan.PlannedSession(i, s, [], PART, done)


@pytest.mark.parametrize("n_workers", [1, 4])
def test_resuming_10k_sessions_holds_a_window_and_starts_no_pool(tmp_path, monkeypatch,
                                                                 n_workers):
    """A rerun over a finished 10k folder: results stream out, a window planned ahead, no pool."""
    monkeypatch.setattr(local_engine, "ProcessPoolExecutor",
                        lambda *a, **k: pytest.fail("a finished session started a worker pool"))
    peaks = {}
    for n in (1_000, N):
        state = {"pulled": 0}
        ahead, ids = 0, []
        tracemalloc.start()
        spec = session_mod.WorkerSpec(CFG, "transcripts", CFG.asr.model, "cpu", 1, tmp_path)
        stream = local_engine.run_sessions(_resumed_plan(n, state), spec, None,
                                           n_workers=n_workers)
        for result, resumed in stream:
            assert resumed and result.status == "failed"
            ids.append(int(result.session_id[1:]))
            ahead = max(ahead, state["pulled"] - len(ids))
        _, peaks[n] = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert sorted(ids) == list(range(n)) and state["pulled"] == n
        if n_workers == 1:
            assert ids == list(range(n))  # in manifest order
        assert ahead <= 2 * n_workers  # never more than the window planned ahead
    # nothing accumulates per session in the scheduler (the 10k ids list is ours: ~0.3 MB)
    assert peaks[N] - peaks[1_000] < 1024 * 1024
