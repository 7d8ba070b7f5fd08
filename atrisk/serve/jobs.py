"""Background jobs of the service: one worker thread, state persisted in the store.

A job's state lives in the ``jobs`` table, so it survives a restart: on start,
:meth:`JobRunner.recover` puts jobs found ``running`` (the service died during
them) back in the queue (``extract`` resumes from ``WORKSPACE/parts``), or
marks them ``failed`` with the reason once they have been tried
``max_attempts`` times.
"""

from __future__ import annotations

import logging
import queue
import threading
import traceback
from pathlib import Path

from atrisk.errors import AtriskError
from atrisk.serve.store import Store

log = logging.getLogger(__name__)


def _materialise_recordings(store: Store, workspace: Path) -> Path:
    """Write the store's sessions as a ``sessions.csv`` (absolute track paths)."""
    folder = workspace / "service_recordings"
    folder.mkdir(parents=True, exist_ok=True)
    df = store.sessions_frame()
    if df.empty:
        raise AtriskError("no sessions in the store: POST /v1/sessions first or give recordings")
    df["start_time"] = df["start_time"].map(lambda t: t.isoformat() + "Z")
    df.to_csv(folder / "sessions.csv", index=False)
    return folder


def run_extract(store: Store, params: dict) -> dict:
    """Run an extract for a job's params (:func:`~atrisk.workflows.extract_folder`); summarise it.

    Raises:
        AtriskError: The recordings folder vanished, or extract refused its input.
    """
    from atrisk.config import Config
    from atrisk.workflows import extract_folder

    workspace = Path(params["workspace"])
    if params.get("recordings"):
        recordings = Path(params["recordings"])
        if not recordings.is_dir():
            raise AtriskError(f"recordings folder {recordings} does not exist (vanished?)")
        if not (recordings / "sessions.csv").is_file():
            raise AtriskError(f"{recordings}/sessions.csv does not exist (vanished?)")
    else:
        recordings = _materialise_recordings(store, workspace)
    config = Config().override({"asr.backend": params.get("asr_backend") or "pocketsphinx"})
    res = extract_folder(recordings, workspace, config, workers=params.get("workers") or 1,
                           progress=False)
    return {
        "workspace": str(res.workspace), "n_sessions": res.n_sessions, "n_ok": res.n_ok,
        "n_partial": res.n_partial, "n_failed": res.n_failed, "n_resumed": res.n_resumed,
        "n_utterances": res.n_utterances, "asr_backend": res.asr_backend,
        "failures": res.failures[:50], "n_failures": len(res.failures),
    }


RUNNERS = {"extract": run_extract}


class JobRunner:
    """Runs queued jobs one at a time in a daemon thread.

    Args:
        store: The open store.
        max_attempts: Tries (service starts) before a job interrupted by a
            restart is marked failed.
    """

    def __init__(self, store: Store, max_attempts: int = 3):
        self.store = store
        self.max_attempts = max_attempts
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def recover(self) -> list[str]:
        """Requeue jobs left ``running``/``queued`` by an earlier process; return their ids."""
        ids = []
        for job in self.store.jobs_in("running", "queued"):
            if job["state"] == "running" and job["attempts"] >= self.max_attempts:
                self.store.update_job(
                    job["job_id"], "failed",
                    error=f"the service stopped during this job {job['attempts']} times; "
                    "giving up (check the inputs, then submit it again)",
                )
                continue
            if job["state"] == "running":
                log.warning("job %s was running when the service stopped; resuming", job["job_id"])
                self.store.update_job(job["job_id"], "queued")
            ids.append(job["job_id"])
        for i in ids:
            self._queue.put(i)
        return ids

    def submit(self, kind: str, params: dict) -> dict:
        """Persist a job as ``queued`` and schedule it; return it as stored (``queued``).

        The row is read before the job is handed to the worker thread, so the
        answer never shows a state the worker reached in between.
        """
        job_id = self.store.create_job(kind, params)
        job = self.store.job(job_id)
        self._queue.put(job_id)
        return job

    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="atrisk-jobs", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Ask the worker to stop after the current job."""
        self._queue.put(None)

    def _loop(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            self.run_one(job_id)

    def run_one(self, job_id: str) -> None:
        """Run one job now, recording ``running`` then ``done`` or ``failed`` (with the reason)."""
        job = self.store.job(job_id)
        if job is None or job["state"] not in ("queued", "running"):
            return
        self.store.update_job(job_id, "running", attempt=True)
        try:
            result = RUNNERS[job["kind"]](self.store, job["params"])
        except AtriskError as exc:
            self.store.update_job(job_id, "failed", error=str(exc))
        except Exception as exc:  # a job must never kill the worker thread
            log.error("job %s crashed:\n%s", job_id, traceback.format_exc())
            self.store.update_job(job_id, "failed", error=f"{type(exc).__name__}: {exc}")
        else:
            self.store.update_job(job_id, "done", result=result)
