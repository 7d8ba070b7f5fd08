"""``atrisk extract --engine ray --address`` on a real two-node Ray cluster (``ray start``).

The cluster runs on this machine: a head node and a worker node, one CPU each, both
started by ``ray start`` in their own session (``setsid``) so that teardown kills
exactly their processes (``ray stop`` would stop every Ray of this user, other
tests' included).  Every process gets ``RAY_AUTH_MODE=token`` and a fresh
``RAY_AUTH_TOKEN`` (Ray's token authentication; ``~/.ray`` is neither read nor
written) and ``PYTHONPATH`` set to the checkout under test (a ``ray start`` node
does not inherit the test's import path; without it the workers would import an
installed ``atrisk``).  The driver runs in another folder than the nodes, with a
relative recordings path, as a user would.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[3]
RAY = Path(sys.executable).with_name("ray")
TABLES = ("sessions", "prosody", "utterances", "prosody_utterances", "in_class")
N_SESSIONS = 6

# Run in a driver of its own after the extract: waits for both nodes, runs a task pinned to
# each (which atrisk does a cluster worker import?), and reads the task events the cluster
# kept (GCS) for the stage tasks of the extract's job: on which nodes did they run?
PROBE = r"""
import json, sys, time
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
deadline = time.time() + 60
while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.time() < deadline:
    time.sleep(0.5)
alive = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])

@ray.remote(num_cpus=1)
def where():
    import atrisk
    return ray.get_runtime_context().get_node_id(), atrisk.__file__

imports = dict(ray.get([
    where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote()
    for n in alive
]))
tasks = {}
if sys.argv[2] == "events":
    from ray._private.state import state  # no public API reads task events without the dashboard
    from ray.core.generated import gcs_pb2

    for raw in state._connect_and_get_accessor().get_task_events():
        ev = gcs_pb2.TaskEvents.FromString(raw)
        name, node = ev.task_info.name, ev.state_updates.node_id.hex()
        if "_stage" in name and node:
            tasks.setdefault(ev.task_id.hex(), {"name": name, "job": ev.job_id.hex(),
                                                "nodes": []})["nodes"].append(node)
print(json.dumps({"alive": alive, "imports": imports, "tasks": tasks}))
"""


@dataclass
class Cluster:
    """A running two-node Ray cluster.

    Attributes:
        address: ``HOST:PORT`` of the head node's GCS.
        env: Environment every process of the cluster's users needs (token, import path).
        log_dir: Where the ``ray start`` output went.
    """

    address: str
    env: dict[str, str]
    log_dir: Path

    def probe(self, cwd: Path, events: bool = False) -> dict:
        """Run :data:`PROBE` against the cluster; return its JSON answer."""
        out = subprocess.run(
            [sys.executable, "-c", PROBE, self.address, "events" if events else "-"],
            cwd=cwd, env=self.env, capture_output=True, text=True, timeout=180,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_pids(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``, from ``/proc``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # state, ppid, pgrp, session, ...
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def _kill_sessions(sids: list[int]) -> list[int]:
    """SIGKILL every process of the sessions (``ray stop --force``, but only these).

    Returns:
        The pids still alive 10 s later.
    """
    assert os.getsid(0) not in sids  # never this test's own session
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = [p for s in sids for p in _session_pids(s)]
        if not pids:
            break
        for pid in pids:  # again each round: a dying raylet may still start a worker
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    return [p for s in sids for p in _session_pids(s)]


def _ray_start(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> int:
    """Run ``ray start`` in a new session; return the session id once the node is up."""
    with open(log, "w") as fh:
        proc = subprocess.Popen([str(RAY), "start", *args], env=env, cwd=cwd, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        rc = proc.wait(timeout=180)
    except subprocess.TimeoutExpired:
        rc = None
    if rc != 0:
        _kill_sessions([proc.pid])
        pytest.fail(f"ray start {' '.join(args[:2])} gave {rc}:\n{log.read_text()[-3000:]}")
    return proc.pid  # start_new_session: the session id is the leader's pid


@pytest.fixture
def ray_cluster():
    """A head and a worker node (1 CPU each) on this machine, torn down by session."""
    if not RAY.exists():
        pytest.skip(f"no ray command next to {sys.executable}")
    # Ray's temp dir holds Unix sockets (≤107 characters): a short folder, not tmp_path
    root = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp" if Path("/tmp").is_dir() else None))
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])]),
    )
    port = _free_port()
    node = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
            "--min-worker-port", "0", "--max-worker-port", "0",
            "--object-store-memory", str(200 * 2**20)]
    sessions: list[int] = []
    try:
        sessions.append(_ray_start(
            ["--head", "--port", str(port), "--temp-dir", str(root / "ray"),
             "--include-dashboard", "false", *node], env, root, root / "head.log"))
        sessions.append(_ray_start(["--address", f"127.0.0.1:{port}", *node], env, root,
                                   root / "worker.log"))
        yield Cluster(f"127.0.0.1:{port}", env, root)
    finally:
        survivors = _kill_sessions(sessions)
        shutil.rmtree(root, ignore_errors=True)
        assert not survivors, f"Ray processes survived SIGKILL: {survivors}"


def _recordings(root: Path) -> Path:
    """Six short sessions (the last without a student track) and their utterances.csv."""
    from atrisk.testing import small_recordings

    return small_recordings(root, N_SESSIONS)


def _extract(cwd: Path, env: dict[str, str], out: str, *engine: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "atrisk", "extract", "rec", "--out", out,
         "--asr-backend", "transcripts", "--json", *engine],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]  # 1: s5 is partial (no student track)
    return json.loads(proc.stdout)


@pytest.mark.slow  # ≈ 60-90 s on 2 busy cores: two `ray start`, two extracts, two probes
def test_ray_engine_on_a_two_node_cluster_equals_local(ray_cluster, tmp_path):
    _recordings(tmp_path / "rec")
    before = ray_cluster.probe(tmp_path)
    assert len(before["alive"]) == 2
    # each node's workers import the checkout under test (PYTHONPATH of `ray start`)
    assert sorted(before["imports"]) == before["alive"]
    assert {Path(f).resolve() for f in before["imports"].values()} == {
        REPO / "atrisk" / "__init__.py"}

    res = _extract(tmp_path, ray_cluster.env, "ray_ws", "--engine", "ray",
                   "--address", ray_cluster.address)
    local = _extract(tmp_path, ray_cluster.env, "local_ws", "--engine", "local",
                     "--workers", "1")
    assert (res["n_ok"], res["n_partial"], res["n_failed"]) == (N_SESSIONS - 1, 1, 0)
    assert (local["n_ok"], local["n_partial"], local["n_failed"]) == (N_SESSIONS - 1, 1, 0)
    assert res["n_utterances"] == local["n_utterances"] == 2 * N_SESSIONS

    # the extract ran on this cluster (its job's stage tasks are in the cluster's task
    # events), one decode+prosody task per session, on both nodes
    after = ray_cluster.probe(tmp_path, events=True)
    assert after["alive"] == before["alive"]
    tasks = after["tasks"]
    assert len({t["job"] for t in tasks.values()}) == 1
    cpu = [t for t in tasks.values() if "cpu_stage" in t["name"]]
    assert len(cpu) == N_SESSIONS
    assert {n for t in tasks.values() for n in t["nodes"]} == set(after["alive"])

    ray_ws, local_ws = tmp_path / "ray_ws", tmp_path / "local_ws"
    for table in TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(ray_ws / f"{table}.parquet"),
                                      pd.read_parquet(local_ws / f"{table}.parquet"))
    sessions = pd.read_parquet(ray_ws / "sessions.parquet")
    assert sessions["status"].tolist() == ["ok"] * (N_SESSIONS - 1) + ["partial"]
    assert sessions["teacher_path"].iloc[0] == str(Path("rec/s0/teacher.wav"))
    assert (ray_ws / "failures.jsonl").read_text() == (local_ws / "failures.jsonl").read_text()
    assert json.loads((ray_ws / "run.json").read_text())["engine"] == "ray"
