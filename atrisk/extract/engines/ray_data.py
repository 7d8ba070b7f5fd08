"""The ``ray`` engine of ``atrisk extract``: the extract stages as a Ray Data pipeline.

The pipeline, one row per session (streamed, so a folder of any size runs in
bounded memory)::

    manifest rows ──► lookup + decode + prosody   CPU tasks (num_cpus=1): resume key
                      │                           (content hash + config), decode both
                      │                           tracks to 16 kHz, openSMILE functionals
                      │                           (and per given utterance: transcripts)
                      ▼
                      ASR                         actor pool, batches of sessions; each
                      │                           actor loads the model once; GPU actors
                      │                           (num_gpus=1) when CUDA, CPU actors else
                      │                           (skipped for --asr-backend transcripts);
                      ▼                           then functionals per new utterance
                      text features               CPU tasks over batches of sessions
                      ▼                           (spaCy loaded once per worker process)
                      driver                      tables in manifest order → Parquet

Each finished session is written atomically to ``WORKSPACE/parts/`` (the same
part files as the local engine, in the worker that finishes it), so a killed
run resumes under either engine and both engines give identical tables.  The
same code runs on a laptop (``ray.init`` starts a local Ray with ``workers``
CPUs) and on a cluster (``address``; the recordings and workspace must then be
on storage every node sees, and every node needs ``atrisk`` installed).  Ray is
started without its dashboard and with usage statistics off, so nothing
reaches the network.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from atrisk.asr.base import Transcriber
from atrisk.config import Config
from atrisk.errors import AtriskError, ConfigError
from atrisk.extract import session
from atrisk.extract.engines.base import EngineOutput, ExtractJob
from atrisk.extract.plan import lookup_session, write_part
from atrisk.extract.resources import usable_cpus
from atrisk.extract.session import SessionProcessor, WorkerSpec
from atrisk.extract.tables import utterances_frame
from atrisk.extractors.text import text_features
from atrisk.records import Session, Utterance

log = logging.getLogger(__name__)

#: Sessions per batch of the ASR actors (the backend batches speech segments inside a track).
ASR_BATCH_SESSIONS = 4
#: Sessions per batch of the text feature tasks.
TEXT_BATCH_SESSIONS = 32


@dataclass(frozen=True)
class StageContext:
    """What every stage needs (pickled once into each task/actor).

    Attributes:
        workspace: Workspace folder (absolute; holds ``parts/``).
        recordings: Recordings folder as given to extract (it words the missing-track
            messages; a relative one, and relative track paths, are relative to ``cwd``).
        config: Output-changing settings.
        asr_identity: Name of the ASR model (part of the resume key).
        device: ``cpu`` or ``cuda`` (resolved against the cluster's resources) for the
            ASR actors; the torch prosody backend runs on the CPU.
    """

    workspace: Path
    recordings: Path
    config: Config
    asr_identity: str
    device: str
    #: Tracks at least this long are streamed (the driver's ``STREAM_TRACK_S``).
    stream_track_s: float | None = None
    #: The driver's working folder: relative track paths of the manifest are relative to it.
    cwd: Path | None = None

    def spec(self) -> WorkerSpec:
        """Return the :class:`~atrisk.extract.session.WorkerSpec` of these settings."""
        cfg = self.config
        # the torch prosody backend runs on the CPU in both stages: the CPU stage holds no
        # GPU, and the ASR actors' per-utterance rows then come from the same device
        return WorkerSpec(cfg, cfg.asr.backend, cfg.asr.model, self.device, 1, self.recordings,
                           stream_track_s=session.STREAM_TRACK_S if self.stream_track_s is None
                           else self.stream_track_s, prosody_device="cpu")


_CPU: tuple[StageContext, Any] | None = None  # per worker process: (context, processor)


def _enter_driver_cwd(ctx: StageContext) -> None:
    # a worker of a cluster started by `ray start` runs in that command's folder, not the
    # driver's: enter the driver's so relative track paths open the same files (and the
    # messages name them as the local engine does); a Ray worker serves one job only
    if ctx.cwd is not None and ctx.cwd.is_dir():
        os.chdir(ctx.cwd)


def _cpu_processor(ctx: StageContext) -> SessionProcessor:
    global _CPU
    if _CPU is None or _CPU[0] != ctx:
        _CPU = (ctx, SessionProcessor(ctx.spec(), load_asr=False))
    return _CPU[1]


def cpu_stage(row: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    """Look up the resume cache, else decode the session and compute its prosody.

    Args:
        row: ``{"i", "sid", "blob"}``; ``blob`` pickles ``(index, session, given)``.
        ctx: The stage context.

    Returns:
        The row with ``blob`` replaced by ``("done", result, resumed)`` or, when the
        tracks still need ASR, ``("asr", decoded part, part file)``.
    """
    _enter_driver_cwd(ctx)
    index, session, given = pickle.loads(row["blob"])
    planned = lookup_session(index, session, given, ctx.workspace, ctx.config, ctx.asr_identity)
    if planned.cached is not None:
        payload: tuple = ("done", planned.cached, True)
    else:
        processor = _cpu_processor(ctx)
        part = processor.decode(session, keep_signals=given is None, given=given)
        if given is None and part.n_decoded > 0:
            payload = ("asr", part, planned.part)
        else:
            result = processor.transcribe(part, given)
            write_part(planned.part, result)
            payload = ("done", result, False)
    return {"i": row["i"], "sid": row["sid"], "blob": pickle.dumps(payload, protocol=5)}


class ASRStage:
    """Ray Data actor: transcribes the decoded tracks of a batch of sessions.

    Args:
        ctx: The stage context; the transcriber is loaded once, on ``ctx.device``.

    Raises:
        ModelLoadError: When the ASR model cannot be loaded.
    """

    def __init__(self, ctx: StageContext):
        _enter_driver_cwd(ctx)  # long tracks are read again from their files
        self.processor = SessionProcessor(ctx.spec(), load_asr=True)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Transcribe every session of ``batch`` that needs it; write its part file.

        Args:
            batch: Rows from :func:`cpu_stage`.

        Returns:
            The rows, each now ``("done", result, resumed)``.
        """
        blobs = []
        for blob in batch["blob"]:
            payload = pickle.loads(blob)
            if payload[0] == "asr":
                _, part, part_file = payload
                result = self.processor.transcribe(part, None)
                write_part(part_file, result)
                blob = pickle.dumps(("done", result, False), protocol=5)
            blobs.append(blob)
        return batch.assign(blob=blobs)


def text_stage(batch: pd.DataFrame, ctx: StageContext) -> pd.DataFrame:
    """Compute the text features of a batch of finished sessions.

    Args:
        batch: Rows whose ``blob`` is ``("done", result, resumed)``.
        ctx: The stage context (text settings, ASR name).

    Returns:
        Rows ``i, sid, blob`` (the pickled result), ``resumed`` and ``text`` (the
        pickled one-row text feature frame; empty for a failed session).
    """
    t0, c0 = time.perf_counter(), time.process_time()
    payloads = [pickle.loads(b) for b in batch["blob"]]
    results = [p[1] for p in payloads]
    ok = [r.session_id for r in results if r.status != "failed"]
    utts = utterances_frame([u for r in results for u in r.utterances], ctx.asr_identity)
    text = text_features(utts, ctx.config.text, session_ids=ok)
    n = max(1, len(results))
    share = {"text_s": (time.perf_counter() - t0) / n, "text_cpu_s": (time.process_time() - c0) / n}
    for r in results:  # timing only; the part files are already written
        r.timings = {**getattr(r, "timings", {}), **share}
    return pd.DataFrame(
        {
            "i": list(batch["i"]),
            "sid": list(batch["sid"]),
            "blob": [pickle.dumps(r, protocol=5) for r in results],
            "resumed": [bool(p[2]) for p in payloads],
            "text": [
                pickle.dumps(text.loc[[r.session_id]], protocol=5) if r.status != "failed"
                else b""
                for r in results
            ],
        }
    )


def init_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Start a local Ray (or join ``address``) without dashboard or usage statistics.

    Args:
        address: Ray cluster address (``HOST:PORT``; ``ray://…`` needs ``ray[client]``);
            ``None`` starts Ray on this machine.
        num_cpus: CPUs of the local Ray (default: the CPUs this process may use,
            :func:`~atrisk.extract.resources.usable_cpus`: affinity and cgroup quota, not
            the host's count); ignored with ``address``.

    Returns:
        ``True`` when this call started/joined Ray (the caller shuts it down),
        ``False`` when Ray was already initialised.

    Raises:
        ConfigError: When the cluster cannot be reached.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
    }
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus or usable_cpus(), **kwargs)
    except Exception as exc:  # ray.init raises bare Exception on a start-up time-out
        raise ConfigError(
            f"cannot start or join Ray at {address or 'this machine'}: {exc} "
            "(a busy machine can time out Ray's start-up; retry, or use --engine local)"
        ) from None
    return True


def _cluster_device(device: str, n_gpus: float) -> str:
    if device == "cuda" and n_gpus < 1:
        raise ConfigError("--device cuda: the Ray cluster has no GPU (use --device cpu or auto)")
    if device == "auto":
        return "cuda" if n_gpus >= 1 else "cpu"
    return device


def build_dataset(rows: list[dict[str, Any]], ctx: StageContext, needs_asr: bool):
    """Return the (lazy) Ray Dataset of the pipeline over ``rows``.

    Args:
        rows: One ``{"i", "sid", "blob"}`` per session.
        ctx: The stage context.
        needs_asr: Whether the ASR actor stage is part of the pipeline.

    Returns:
        A ``ray.data.Dataset`` whose rows come from :func:`text_stage`.
    """
    import ray

    resources = ray.cluster_resources()
    n_cpus = max(1, int(resources.get("CPU", 1)))
    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
    # a task pool of its own size (concurrency) keeps Ray Data from fusing this stage into
    # the next one: fused into the text stage it would take that stage's bundles of
    # TEXT_BATCH_SESSIONS sessions (a small folder in one task, on one CPU), fused into the
    # CPU ASR actors it would run inside their pool
    ds = ds.map(cpu_stage, fn_kwargs={"ctx": ctx}, num_cpus=1, concurrency=n_cpus)
    if needs_asr:
        if ctx.device == "cuda":
            pool: int | tuple[int, int] = max(1, int(resources.get("GPU", 1)))
            remote = {"num_gpus": 1, "num_cpus": 1}
        else:  # leave half the CPUs to decoding and prosody
            pool = (1, max(1, n_cpus // 2))
            remote = {"num_cpus": 1}
        ds = ds.map_batches(
            ASRStage,
            fn_constructor_kwargs={"ctx": ctx},
            batch_size=ASR_BATCH_SESSIONS,
            batch_format="pandas",
            concurrency=pool,
            **remote,
        )
    return ds.map_batches(
        text_stage,
        fn_kwargs={"ctx": ctx},
        batch_size=TEXT_BATCH_SESSIONS,
        batch_format="pandas",
        num_cpus=1,
    )


def run_ray(
    sessions: Sequence[Session],
    given_by_session: dict[str, list[Utterance]] | None,
    workspace: Path,
    recordings: Path,
    config: Config,
    asr_identity: str,
    device: str = "auto",
    workers: int | None = None,
    address: str | None = None,
) -> Iterator[tuple[Any, bool, pd.DataFrame | None]]:
    """Run the extract stages over ``sessions`` on Ray; yield results as sessions finish.

    Args:
        sessions: Sessions in manifest order.
        given_by_session: Given utterances per session (transcripts backend), else ``None``.
        workspace: Workspace folder (holds ``parts/``).
        recordings: Recordings folder.
        config: Output-changing settings.
        asr_identity: Name of the ASR model.
        device: ``auto``, ``cpu`` or ``cuda`` (for the ASR actors; prosody runs on the CPU).
        workers: CPUs of a local Ray (default: the CPUs this process may use).
        address: Ray cluster to join instead of starting one.

    Yields:
        ``(SessionResult, resumed, text feature row or None)`` in completion order.

    Raises:
        ConfigError: Ray cannot start, or ``cuda`` is asked for on a cluster without GPU.
        AtriskError: A stage failed for a reason other than a bad input file.
    """
    if not sessions:
        return
    started = init_ray(address, workers)
    try:
        import ray
        from ray.data import DataContext

        dctx = DataContext.get_current()
        dctx.enable_progress_bars = False
        dctx.print_on_execution_start = False
        ctx = StageContext(
            workspace=Path(workspace).resolve(),
            recordings=Path(recordings),  # as given: it only words messages, as locally
            config=config,
            asr_identity=asr_identity,
            device=_cluster_device(device, ray.cluster_resources().get("GPU", 0)),
            stream_track_s=session.STREAM_TRACK_S,
            cwd=Path.cwd(),
        )
        rows = [
            {
                "i": i,
                "sid": s.session_id,
                "blob": pickle.dumps(
                    (i, s, None if given_by_session is None
                     else given_by_session.get(s.session_id, [])),
                    protocol=5,
                ),
            }
            for i, s in enumerate(sessions)
        ]
        ds = build_dataset(rows, ctx, needs_asr=given_by_session is None)
        try:
            for row in ds.iter_rows():
                text = pickle.loads(row["text"]) if row["text"] else None
                yield pickle.loads(row["blob"]), bool(row["resumed"]), text
        except (ray.exceptions.RayError, AtriskError) as exc:
            raise AtriskError(f"ray engine: a stage failed: {exc}") from exc
    finally:
        if started:
            import ray

            ray.shutdown()


class RayEngine:
    """Run the sessions as a Ray Data pipeline on a local Ray or a cluster.

    Args:
        workers: CPUs of a local Ray (default: the CPUs this process may use).
        address: Ray cluster to join instead of starting Ray here (``HOST:PORT``);
            recordings and workspace must then be on storage every node sees, and every
            node needs ``atrisk`` installed (docs/architecture.md).
    """

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None):
        self.workers = workers
        self.address = address

    def asr_check_device(self, device: str) -> str:
        """Return ``cpu``: the actors load the model; the driver only checks that it loads."""
        return "cpu"

    def run(self, job: ExtractJob, transcriber: Transcriber | None) -> Iterator[EngineOutput]:
        """Process the job's sessions; yield each as it finishes (see ``Engine``)."""
        for result, resumed, text in run_ray(
            job.sessions, job.given, job.workspace, job.recordings, job.config,
            job.asr_identity, job.device, workers=self.workers, address=self.address,
        ):
            yield EngineOutput(result, resumed, text)
