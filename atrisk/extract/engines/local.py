"""The ``local`` engine: a process pool on this machine, with a bounded window of sessions.

Sessions are planned lazily (:func:`~atrisk.extract.plan.iter_plan`), so a folder of any
size is scheduled with ``2 * workers`` sessions in flight; each worker process holds one
:class:`~atrisk.extract.session.SessionProcessor` (models loaded once per process).  With
one worker everything runs in this process, with the driver's transcriber.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from atrisk.asr.base import Transcriber
from atrisk.extract.engines.base import EngineOutput, ExtractJob
from atrisk.extract.plan import PlannedSession, iter_plan, write_part
from atrisk.extract.resources import torch_threads, usable_cpus
from atrisk.extract.session import SessionProcessor, SessionResult, WorkerSpec
from atrisk.records import Session, Utterance


class LocalEngine:
    """Run the sessions in a process pool on this machine.

    Args:
        workers: Worker processes (default: the CPUs this process may use, at most the
            number of sessions); 1 runs in this process.
        threads: torch intra-op threads per worker (default: usable CPUs // workers); the
            torch prosody backend on the CPU uses
            :data:`~atrisk.extract.resources.PROSODY_TORCH_THREADS` whatever this says.
    """

    name = "local"

    def __init__(self, workers: int | None = None, threads: int | None = None):
        self.workers = workers
        self.threads = threads

    def asr_check_device(self, device: str) -> str:
        """Return ``device``: the driver loads the ASR model where it may run it itself."""
        return device

    def run(self, job: ExtractJob, transcriber: Transcriber | None) -> Iterator[EngineOutput]:
        """Process the job's sessions; yield each as it finishes (see :class:`Engine`)."""
        plan = iter_plan(job.sessions, job.workspace, job.config, job.asr_identity, job.given)
        n_workers = max(1, min(self.workers or usable_cpus(), len(job.sessions)))
        threads = self.threads or max(1, usable_cpus() // n_workers)
        cfg = job.config
        spec = WorkerSpec(cfg, cfg.asr.backend, cfg.asr.model, job.device, threads,
                          job.recordings)
        for result, resumed in run_sessions(plan, spec, transcriber, n_workers):
            yield EngineOutput(result, resumed)


def bounded_imap(
    items: Iterable[Any], submit: Callable[[Any], Future], window: int
) -> Iterator[tuple[Any, Future]]:
    """Submit ``items`` with at most ``window`` futures pending; yield them as they finish.

    ``items`` is consumed lazily, so a folder of any size is scheduled with
    O(``window``) items in flight.

    Args:
        items: Work items (any iterable, e.g. a generator).
        submit: Function returning a future for one item.
        window: Most futures pending at once (at least 1).

    Yields:
        ``(item, future)`` pairs in completion order; the future is done.
    """
    it = iter(items)
    running: dict[Future, Any] = {}

    def fill() -> None:
        for item in it:
            running[submit(item)] = item
            if len(running) >= max(1, window):
                return

    fill()
    while running:
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for fut in done:
            yield running.pop(fut), fut
        fill()


def done_future(value: Any) -> Future:
    """Return a future that is already done with ``value``."""
    fut: Future = Future()
    fut.set_result(value)
    return fut



_PROCESSOR: SessionProcessor | None = None


def _worker_init(spec: WorkerSpec) -> None:
    global _PROCESSOR
    if spec.uses_torch:
        import torch

        torch.set_num_threads(spec.torch_threads)
    else:  # no torch model here: skip its (slow) import; a later import obeys this
        os.environ.setdefault("OMP_NUM_THREADS", str(spec.torch_threads))
    _PROCESSOR = SessionProcessor(spec)


def _worker_run(session: Session, given: list[Utterance] | None) -> SessionResult:
    assert _PROCESSOR is not None  # set by _worker_init; internal invariant, not user input
    return _PROCESSOR(session, given)


def run_sessions(
    plan: Iterable[PlannedSession],
    spec: WorkerSpec,
    transcriber: Transcriber | None,
    n_workers: int,
) -> Iterator[tuple[SessionResult, bool]]:
    """Process planned sessions, writing each result to its part file as soon as it is done.

    Sessions done by an earlier run are yielded as
    they come, the others from a process pool with at most ``2 * n_workers``
    sessions in flight (the plan is consumed lazily).  torch's intra-op threads are
    capped at ``spec.torch_threads`` per worker, with one worker too (in this process,
    restored afterwards).

    Args:
        plan: Planned sessions (:func:`~atrisk.extract.plan.iter_plan`).
        spec: What the workers compute.
        transcriber: The driver's transcriber (used when ``n_workers`` is 1).
        n_workers: Worker processes.

    Yields:
        ``(result, resumed)`` per session, in completion order.
    """
    threads = spec.torch_threads
    if n_workers == 1:
        if spec.uses_torch:
            import torch  # noqa: F401  (so that its thread count is set before the models run)
        with torch_threads(threads if spec.uses_torch else None):
            processor = None
            for item in plan:
                if item.cached is not None:
                    yield item.cached, True
                    continue
                processor = processor or SessionProcessor(spec, transcriber=transcriber)
                result = processor(item.session, item.given)
                write_part(item.part, result)
                yield result, False
        return
    ctx = multiprocessing.get_context("spawn")
    pool: ProcessPoolExecutor | None = None

    def submit(item: PlannedSession) -> Future:
        nonlocal pool
        if item.cached is not None:
            return done_future(item.cached)
        if pool is None:  # started on the first session that needs work
            pool = ProcessPoolExecutor(
                n_workers, mp_context=ctx, initializer=_worker_init, initargs=(spec,)
            )
        return pool.submit(_worker_run, item.session, item.given)

    try:
        for item, fut in bounded_imap(plan, submit, 2 * n_workers):
            result = fut.result()
            if item.cached is None:
                write_part(item.part, result)
            yield result, item.cached is not None
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


