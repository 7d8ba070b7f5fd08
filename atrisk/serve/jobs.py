"""Background jobs of the service: one worker thread, state persisted in the store.

A job's state lives in the ``jobs`` table, so it survives a restart: on start,
:meth:`JobRunner.recover` puts jobs found ``running`` (the service died during
them) back in the queue (``extract`` resumes from ``WORKSPACE/parts``), or
marks them ``failed`` with the reason once they have been tried
``max_attempts`` times.

Jobs belong to an organisation and read and write only inside its folder of the data
root (:class:`~atrisk.serve.paths.DataRoot`):

- ``extract``: the organisation's recordings → its workspace tables.  Without
  ``recordings`` the sessions posted to the store are extracted (those whose recordings
  were purged keep their rows); with it, a folder with a ``sessions.csv`` inside the
  organisation's folder, whose tracks must lie there too.
- ``predict``: the store's students, orders, events and outcomes
  (:meth:`~atrisk.ingest.logs.Logs.from_frames`) and the workspace's in-class features,
  ranked by the service's model for each horizon; the day's lists replace any stored
  for that day (``GET /v1/risk`` serves them).

Job errors and results name paths relative to the organisation's folder, never server
paths.  :class:`Scheduler` submits the daily extract + predict (``--predict-at``) and
purges old recordings (``--retain-days``).
"""

from __future__ import annotations

import logging
import queue
import threading
import traceback
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

from atrisk.errors import AtriskError
from atrisk.serve.erase import SERVICE_RECORDINGS, append_rows, purge_recordings, workspace_rows
from atrisk.serve.paths import DEFAULT_WORKSPACE, DataRoot, PathRejected
from atrisk.serve.store import Store
from atrisk.workspace import atomic_path, private_dir

log = logging.getLogger(__name__)


def _materialise_recordings(store: Store, root: DataRoot, org: str,
                            workspace: Path) -> tuple[Path, list[dict]]:
    """Write the organisation's kept sessions as a ``sessions.csv`` (checked absolute paths).

    Returns:
        The folder and one failure record per track path refused (left out).
    """
    folder = private_dir(workspace / SERVICE_RECORDINGS)
    df = store.sessions_frame(org=org)
    if df.empty:
        raise AtriskError("no sessions with recordings in the store: POST /v1/sessions and "
                          "upload their tracks first, or give recordings")
    problems = []
    for col in ("teacher_path", "student_path"):
        paths = []
        for sid, rel in zip(df["session_id"], df[col], strict=True):
            if rel is None or rel != rel:  # None or NaN: the track was never given
                paths.append("")
                continue
            try:
                paths.append(str(root.resolve(org, rel, col)))
            except PathRejected as exc:  # e.g. a symlink made after the session was posted
                problems.append({"stage": "manifest", "source": "sessions", "row": None,
                                 "key": sid, "reason": str(exc)})
                paths.append("")
        df[col] = paths
    df["start_time"] = df["start_time"].map(lambda t: t.isoformat() + "Z")
    with atomic_path(folder / "sessions.csv") as tmp:
        df.to_csv(tmp, index=False)
    return folder, problems


def _check_recordings(root: DataRoot, org: str, rel: str) -> Path:
    """Return a client's recordings folder, refusing one whose tracks leave the org folder."""
    from atrisk.ingest.manifest import read_manifest
    from atrisk.records import TRACKS

    try:
        recordings = root.resolve(org, rel, "recordings", must_exist="dir")
    except PathRejected as exc:
        raise AtriskError(f"{exc} (vanished?)") from None
    if not (recordings / "sessions.csv").is_file():
        raise AtriskError(f"recordings: {rel!r} has no sessions.csv (vanished?)")
    sessions, _ = read_manifest(recordings)
    for s in sessions:
        for track in TRACKS:
            path = s.track_path(track)
            if path is not None and not root.inside(org, path):
                raise AtriskError(
                    f"recordings: {rel}/sessions.csv: the {track} track of session "
                    f"{s.session_id!r} lies outside the organisation's folder of the data "
                    "root; name tracks relative to the recordings folder")
    return recordings


def run_extract(ctx: JobContext, org: str, params: dict) -> dict:
    """Run an extract job (:func:`~atrisk.workflows.extract_folder`) and summarise it.

    Raises:
        AtriskError: The recordings folder vanished or is refused, or extract refused
            its input.
    """
    from atrisk.config import Config
    from atrisk.workflows import extract_folder

    store, root = ctx.store, ctx.root
    ws = private_dir(root.resolve(org, params.get("workspace") or DEFAULT_WORKSPACE,
                                  "workspace"))
    known = store.student_ids(org=org)
    problems: list[dict] = []
    carried: dict = {}
    from_store = not params.get("recordings")
    if from_store:
        recordings, problems = _materialise_recordings(store, root, org, ws)
        purged = store.sessions_frame(org=org, purged=True)["session_id"]
        carried = workspace_rows(ws, purged) if len(purged) else {}
    else:
        recordings = _check_recordings(root, org, params["recordings"])
    config = Config().override({"asr.backend": params.get("asr_backend") or "pocketsphinx"})
    res = extract_folder(recordings, ws, config, workers=params.get("workers") or 1,
                         known_students=known, progress=False)
    if carried:  # sessions whose recordings were purged keep their rows
        append_rows(ws, carried)
    if from_store:
        from atrisk.workspace import Workspace

        table = Workspace(ws).read("sessions")
        store.mark_extracted(table.loc[table["status"] != "failed", "session_id"], org=org)
    failures = problems + res.failures
    for f in failures:
        if isinstance(f.get("source"), str):
            f["source"] = root.redact(f["source"], org)
        if isinstance(f.get("reason"), str):
            f["reason"] = root.redact(f["reason"], org).replace(
                "(not in logs/students.csv)", "(not a student of this organisation: POST "
                "/v1/students first)")
    return {
        "workspace": root.relative(org, ws), "n_sessions": res.n_sessions, "n_ok": res.n_ok,
        "n_partial": res.n_partial, "n_failed": res.n_failed, "n_resumed": res.n_resumed,
        "n_carried": len(carried.get("sessions", [])), "n_utterances": res.n_utterances,
        "asr_backend": res.asr_backend, "failures": failures[:50],
        "n_failures": len(failures),
    }


def run_predict(ctx: JobContext, org: str, params: dict) -> dict:
    """Score a day from the store for each horizon and write the lists (``POST /v1/jobs/predict``).

    Raises:
        AtriskError: The service has no model, or no list could be made.
    """
    from atrisk.ingest.logs import Logs
    from atrisk.workflows import rank_logs

    if ctx.model is None:
        raise AtriskError("the service was started without a model")
    store, root = ctx.store, ctx.root
    horizons = [int(h) for h in params.get("horizons") or ctx.model.horizons]
    ws = root.resolve(org, params.get("workspace") or DEFAULT_WORKSPACE, "workspace")
    frames = store.logs_frames(org=org)
    logs = Logs.from_frames(**frames)
    lists = rank_logs(ctx.model, logs, ws, params["date"], horizons)
    out: dict[str, Any] = {}
    for h, risk in lists.items():
        if isinstance(risk, str):
            out[str(h)] = {"written": 0, "reason": root.redact(risk, org)}
        else:
            n = store.write_risk(risk, params["date"], h, org=org, create_students=False)
            out[str(h)] = {"written": n, "flagged": int(risk["flagged"].sum())}
    result = {
        "date": str(params["date"]), "horizons": out,
        "n_students": len(logs.students), "n_events": len(logs.events),
        "n_rejected_rows": len(logs.errors),
        "rejected_rows": [e.to_dict() for e in logs.errors[:20]],
        "in_class": Path(ws, "in_class.parquet").is_file(),
    }
    if not any(v["written"] for v in out.values()):
        reasons = "; ".join(f"horizon {h}: {v['reason']}" for h, v in out.items())
        raise AtriskError(f"no risk list written for {params['date']}: {reasons}")
    return result


RUNNERS = {"extract": run_extract, "predict": run_predict}


class JobContext:
    """What jobs work with: the store, the data root and the service's model."""

    def __init__(self, store: Store, root: DataRoot, model: Any | None = None):
        self.store, self.root, self.model = store, root, model


class JobRunner:
    """Runs queued jobs one at a time in a daemon thread.

    Args:
        store: The open store.
        root: The data root (jobs read and write only inside it).
        model: The service's :class:`~atrisk.training.model.RiskModel` (predict jobs).
        max_attempts: Tries (service starts) before a job interrupted by a
            restart is marked failed.

    Attributes:
        busy: Held while a job runs (erasing a student waits for it to be free).
    """

    def __init__(self, store: Store, root: DataRoot, model: Any | None = None,
                 max_attempts: int = 3):
        self.store = store
        self.context = JobContext(store, root, model)
        self.max_attempts = max_attempts
        self.busy = threading.Lock()
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

    def submit(self, kind: str, params: dict, org: str) -> dict:
        """Persist a job of ``org`` as ``queued`` and schedule it; return it as stored.

        The row is read before the job is handed to the worker thread, so the
        answer never shows a state the worker reached in between.
        """
        job_id = self.store.create_job(kind, params, org=org)
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
        org, root = job["org_id"], self.context.root
        with self.busy:
            self.store.update_job(job_id, "running", attempt=True)
            try:
                result = RUNNERS[job["kind"]](self.context, org, job["params"])
            except AtriskError as exc:
                self.store.update_job(job_id, "failed", error=root.redact(str(exc), org))
            except Exception as exc:  # a job must never kill the worker thread
                log.error("job %s crashed:\n%s", job_id, traceback.format_exc())
                self.store.update_job(job_id, "failed", error=root.redact(
                    f"{type(exc).__name__}: {exc}", org))
            else:
                self.store.update_job(job_id, "done", result=result)


def parse_hhmm(text: str) -> time:
    """Parse ``HH:MM`` (24 h, UTC) of ``--predict-at``.

    Raises:
        ValueError: Not a time of day.
    """
    hh, _, mm = text.partition(":")
    if not (hh.isdigit() and mm.isdigit() and len(mm) == 2):
        raise ValueError(f"{text!r} is not HH:MM")
    return time(int(hh), int(mm))


class Scheduler:
    """The service's clock: the daily extract + predict, and the purge of old recordings.

    Args:
        runner: Where jobs are submitted.
        predict_at: Time of day (UTC) of the daily run; ``None``: no daily run.
        retain_days: Purge recordings this many days after extraction; ``None``: keep.
        interval: Seconds between checks.
    """

    #: ``meta`` key holding the day of the last daily run (a restart does not repeat it).
    LAST_RUN = "daily_run_last"

    def __init__(self, runner: JobRunner, predict_at: time | None = None,
                 retain_days: int | None = None, interval: float = 30.0):
        self.runner = runner
        self.predict_at = predict_at
        self.retain_days = retain_days
        self.interval = interval
        self._last_purge: datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self, now: datetime) -> dict:
        """Do what is due at ``now`` (aware UTC); return what was done.

        Returns:
            ``{"submitted": [job ids], "purged": {"sessions", "files"} or None}``.
        """
        store = self.runner.store
        done: dict[str, Any] = {"submitted": [], "purged": None}
        today = now.date().isoformat()
        if (self.predict_at is not None and now.time() >= self.predict_at
                and store.get_meta(self.LAST_RUN) != today):
            store.set_meta(self.LAST_RUN, today)
            for org in store.org_ids():
                if not store.sessions_frame(org=org).empty:
                    done["submitted"].append(self.runner.submit("extract", {}, org)["job_id"])
                done["submitted"].append(
                    self.runner.submit("predict", {"date": today}, org)["job_id"])
        if self.retain_days is not None and (
                self._last_purge is None or now - self._last_purge >= timedelta(hours=1)):
            if self.runner.busy.acquire(blocking=False):  # not while a job reads the files
                try:
                    done["purged"] = purge_recordings(
                        store, self.runner.context.root, now - timedelta(days=self.retain_days))
                    self._last_purge = now
                finally:
                    self.runner.busy.release()
        return done

    def start(self) -> None:
        """Check every ``interval`` seconds in a daemon thread."""
        if self.predict_at is None and self.retain_days is None:
            return
        self._thread = threading.Thread(target=self._loop, name="atrisk-clock", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread."""
        self._stop.set()

    def _loop(self) -> None:
        while True:
            try:
                self.tick(datetime.now(UTC))
            except Exception:  # noqa: BLE001 - the clock must keep running
                log.exception("scheduled work failed")
            if self._stop.wait(self.interval):
                return
