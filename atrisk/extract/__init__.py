"""Extract: class recordings → the workspace tables, by an :class:`Extractor`.

:meth:`Extractor.extract` is what ``atrisk extract`` runs: it reads ``sessions.csv``,
plans the sessions lazily with their resume keys (:mod:`atrisk.extract.plan`), runs them
on an engine (:mod:`atrisk.extract.engines`: a local process pool or Ray), each through a
:class:`~atrisk.extract.session.SessionProcessor` (decode → prosody and timing → ASR →
per-utterance prosody), and assembles the tables in manifest order
(:mod:`atrisk.extract.tables`).  Each finished session is written atomically to
``WORKSPACE/parts/`` as it finishes, so a crashed run resumes and gives the same tables
as an uninterrupted one.  :meth:`Extractor.extract_session` does one class in memory.

Example:
    >>> ex = Extractor(Config(), device="cpu")                         # doctest: +SKIP
    >>> result = ex.extract("recordings/", workspace="ws/")            # doctest: +SKIP
    >>> result.exit_code, result.failures[:1]                          # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from atrisk import fingerprint
from atrisk.asr import load_transcriber
from atrisk.asr.auto import BackendChoice, resolve_backend
from atrisk.asr.base import Transcriber
from atrisk.asr.transcripts import find_transcripts, utterances_for_session
from atrisk.config import AUTO_BACKEND, Config
from atrisk.device import DEVICES
from atrisk.errors import ConfigError, ModelLoadError, RowError
from atrisk.extract.engines import Engine, ExtractJob, make_engine
from atrisk.extract.session import SessionProcessor, SessionResult, WorkerSpec
from atrisk.extract.tables import (
    prosody_table,
    sessions_table,
    stack_text_rows,
    timing_table,
    utterance_prosody_table,
    utterances_frame,
)
from atrisk.extractors.prosody import ProsodyBackend, load_prosody
from atrisk.extractors.text import text_features
from atrisk.features.in_class import build_in_class
from atrisk.ingest.manifest import read_manifest
from atrisk.ingest.utterances import load_utterances
from atrisk.progress import console, progress_bar
from atrisk.records import Session, Utterance
from atrisk.registry import ASR_BACKENDS
from atrisk.workspace import Workspace, private_dir

__all__ = ["ExtractResult", "Extractor", "SessionFeatures", "SessionResult"]


@dataclass
class ExtractResult:
    """Summary of an :meth:`Extractor.extract` run.

    Attributes:
        workspace: The workspace folder.
        n_sessions: Sessions in the manifest (valid rows).
        n_ok: Sessions with every track processed.
        n_partial: Sessions with some track failing.
        n_failed: Sessions with no usable track (or an invalid manifest row).
        n_resumed: Sessions taken from an earlier run's results.
        n_utterances: Rows of the ``utterances`` table.
        failures: One dict per failed file/row (also in ``failures.jsonl``).
        asr_backend: Backend actually used (after ``auto`` and any fallback).
        tables: Path of each table written.
        stage_seconds: Seconds per stage: decode/prosody/asr/text summed over the sessions
            processed in this run (``*_s`` elapsed in the workers, ``*_cpu_s`` their CPU
            time; not the run's wall time), ``assemble_s`` on the driver.
    """

    workspace: Path
    n_sessions: int
    n_ok: int
    n_partial: int
    n_failed: int
    n_resumed: int
    n_utterances: int
    failures: list[dict]
    asr_backend: str
    tables: dict[str, str]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    #: The ASR model that made the utterances (``asr_model`` column, e.g. ``whisper:tiny.en``).
    asr_model: str = ""
    #: Why this backend (``asr.backend = auto``: what it found; else the setting).
    asr_choice: str = ""

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, 1 when some sessions/rows failed (and the rest is done)."""
        return 1 if self.failures else 0


@dataclass
class SessionFeatures:
    """Everything extracted from one class, in memory (:meth:`Extractor.extract_session`).

    Attributes:
        session_id: The class.
        status: ``ok``, ``partial`` (a track failed) or ``failed`` (no usable track).
        error: ``"; "``-joined track problems (``""`` when ok).
        prosody: Per-track functionals indexed ``(session_id, track)`` (+ ``prosody_backend``).
        utterances: The ``utterances`` rows of the class.
        utterance_prosody: Per-utterance functionals indexed ``(session_id, speaker,
            start_s, end_s)`` (no rows when ``prosody.per_utterance`` is off).
        timing: ASR-independent timing features per decoded track, indexed
            ``(session_id, track)``.
        text: The linguistic and interaction counters (one row; no row when failed).
        in_class: The ``in_class`` row of the class (one row, indexed by ``session_id``).
    """

    session_id: str
    status: str
    error: str
    prosody: pd.DataFrame
    utterances: pd.DataFrame
    utterance_prosody: pd.DataFrame
    text: pd.DataFrame
    in_class: pd.DataFrame
    timing: pd.DataFrame = field(default_factory=pd.DataFrame)


class Extractor:
    """Turns class recordings into features; models load once per extractor.

    Args:
        config: Output-changing settings (:class:`~atrisk.config.Config`; defaults when
            ``None``).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``: where the ASR model
            and the torch prosody backend run (the Ray engine runs prosody on the CPU).
            Not part of the resume key: a run on another device reuses earlier results.
        engine: ``"local"`` (a process pool on this machine), ``"ray"`` (a Ray Data
            pipeline), or an :class:`~atrisk.extract.engines.base.Engine` instance.
        workers: Worker processes (local) or CPUs of a local Ray (default: the CPUs this
            process may use).
        address: Ray cluster to join (``engine="ray"``; ``None`` starts Ray here).
        threads: torch intra-op threads per worker process (``engine="local"``).
        asr_fallback: Fall back to pocketsphinx when the configured ASR model cannot be
            loaded (``atrisk demo``), with a warning; otherwise that is an error.
            ``asr.backend = "auto"`` is resolved first (:meth:`resolve_asr`).
        warn: Where warnings go (default: the console).

    Raises:
        ConfigError: When the engine, device or an option is invalid.
    """

    def __init__(self, config: Config | None = None, device: str = "auto",
                 engine: str | Engine = "local", workers: int | None = None,
                 address: str | None = None, threads: int | None = None,
                 asr_fallback: bool = False,
                 warn: Callable[[str], None] | None = None):
        if device not in DEVICES:
            raise ConfigError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
        self.config = config or Config()
        if self.config.prosody.feature_level != "functionals":
            raise ConfigError("extract writes prosody functionals per track: set "
                              "prosody.feature_level = 'functionals' (LLDs: docs/prosody.md)")
        self.device = device
        if isinstance(engine, str):
            self.engine = make_engine(engine, workers=workers, address=address, threads=threads)
        elif workers is not None or address is not None or threads is not None:
            raise ConfigError("workers, address and threads belong to the engine given")
        else:
            self.engine = engine
        self.asr_fallback = asr_fallback
        self.warn = warn or (lambda m: console.print(f"[yellow]warning:[/] {m}"))
        self._transcriber: Transcriber | None = None
        self._asr_device: str | None = None
        self._processor: SessionProcessor | None = None
        self._asr_choice: BackendChoice | None = None
        #: ``asr.backend`` as configured (``auto`` stays ``auto`` here; run.json).
        self._asr_requested = self.config.asr.backend

    # ----------------------------------------------------------------- models

    def resolve_asr(self) -> BackendChoice:
        """Replace ``asr.backend = "auto"`` by the backend it picks (once), and say why.

        After this, :attr:`config` names the backend (and model) that will run, so the
        saved ``config.toml`` and the resume keys hold the resolved choice: a run with
        ``auto`` and one naming the same backend reuse each other's sessions.

        Returns:
            The choice (:class:`~atrisk.asr.auto.BackendChoice`); for a named backend,
            that backend with the reason ``"asr.backend = <name>"``.

        Raises:
            ConfigError: When ``auto`` finds no usable backend.
        """
        if self._asr_choice is None:
            choice = resolve_backend(self.config.asr)
            self.config = self.config.model_copy(update={"asr": choice.config})
            if self._asr_requested == AUTO_BACKEND:
                choice = BackendChoice(choice.backend, choice.config,
                                       f"auto: {choice.reason}")
            self._asr_choice = choice
        return self._asr_choice

    def transcriber(self, device: str | None = None) -> Transcriber | None:
        """Return the configured transcriber, loading it on first use (``None``: transcripts).

        When the model cannot be loaded and ``asr_fallback`` is on, the configuration
        switches to pocketsphinx (with a warning).

        Args:
            device: Where to load it (default: the extractor's device).

        Raises:
            ModelLoadError: When the model cannot be loaded (and no fallback); the message
                names the reason and the ``--asr-backend`` choices.
        """
        device = device or self.device
        self.resolve_asr()
        if self.config.asr.backend == "transcripts":
            return None
        if self._transcriber is not None and self._asr_device == device:
            return self._transcriber
        try:
            self._transcriber = self._load_transcriber(self.config, device)
        except ModelLoadError as exc:
            if not self.asr_fallback or self.config.asr.backend == "pocketsphinx":
                raise ModelLoadError(
                    f"{exc}\nChoose another ASR backend with --asr-backend "
                    f"({'|'.join(ASR_BACKENDS)}) or point --asr-model at a local model folder."
                ) from None
            self.warn(f"{exc}\nFalling back to the offline pocketsphinx ASR backend "
                      "(lower accuracy).")
            self.config = self.config.override({"asr.backend": "pocketsphinx"})
            self._asr_choice = BackendChoice(
                "pocketsphinx", self.config.asr,
                f"{self._asr_choice.reason if self._asr_choice else ''}; "
                f"{self._asr_choice.backend if self._asr_choice else 'the model'} could not "
                "be loaded: fell back to pocketsphinx")
            self._transcriber = self._load_transcriber(self.config, device)
        self._asr_device = device
        return self._transcriber

    @staticmethod
    def _load_transcriber(config: Config, device: str) -> Transcriber:
        backend = config.asr.backend
        model = config.asr.model if backend == "wav2vec2" else None
        return load_transcriber(backend, model=model, device=device, config=config.asr)

    def prosody_backend(self) -> ProsodyBackend:
        """Return the configured prosody backend (built on first use)."""
        return self.processor().prosody

    def processor(self) -> SessionProcessor:
        """Return this extractor's in-process :class:`SessionProcessor` (built once)."""
        if self._processor is None:
            transcriber = self.transcriber()
            cfg = self.config
            spec = WorkerSpec(cfg, cfg.asr.backend, cfg.asr.model, self.device, 1)
            self._processor = SessionProcessor(spec, transcriber=transcriber)
        return self._processor

    # ----------------------------------------------------------------- one class

    def extract_session(self, session: Session,
                        utterances: Sequence[Utterance] | None = None) -> SessionFeatures:
        """Extract one class in memory (no workspace, no part files).

        Args:
            session: The class (:class:`~atrisk.records.Session` with its track files).
            utterances: Its transcript (required for the ``transcripts`` ASR backend;
                otherwise the tracks are transcribed).

        Returns:
            The class's prosody, utterances, per-utterance prosody, text counters and
            in-class row.  A bad track gives status ``partial``/``failed`` and the reason
            in ``error``, never an exception.

        Raises:
            ConfigError: When the ``transcripts`` backend is configured and no
                ``utterances`` are given.
            ModelLoadError: When the ASR model cannot be loaded.
        """
        given = list(utterances) if utterances is not None else None
        self.resolve_asr()
        if self.config.asr.backend == "transcripts" and given is None:
            raise ConfigError("the transcripts ASR backend needs the session's utterances: "
                              "extract_session(session, utterances=[...])")
        processor = self.processor()
        result = processor(session, given)
        backend = processor.prosody
        asr = "transcripts:given" if given is not None else processor.transcriber.name
        utts = utterances_frame(result.utterances, asr)
        ok = [session.session_id] if result.status != "failed" else []
        text = text_features(utts, self.config.text, session_ids=ok)
        sessions = pd.DataFrame({"session_id": [session.session_id],
                                 "duration_s": [result.duration_s]})
        prosody = prosody_table([result.prosody], backend)
        utt_prosody = utterance_prosody_table([result.utterance_prosody], backend)
        timing = timing_table([result.timing])
        return SessionFeatures(
            session_id=session.session_id, status=result.status, error=result.error,
            prosody=prosody, utterances=utts, utterance_prosody=utt_prosody, text=text,
            in_class=build_in_class(sessions, prosody, text, utterance_prosody=utt_prosody,
                                    timing=timing),
            timing=timing,
        )

    # ----------------------------------------------------------------- a folder

    def extract(self, recordings: Path | str, workspace: Path | str,
                known_students: set[str] | None = None, transcripts: Path | str | None = None,
                progress: bool = True) -> ExtractResult:
        """Turn a recordings folder into the workspace tables (batch, resumable).

        Writes ``sessions``, ``prosody``, ``timing``, ``utterances``, ``prosody_utterances``
        and ``in_class`` (Parquet), ``failures.jsonl``, ``config.toml`` and ``run.json``
        (with the ASR backend ``auto`` chose, and why) into ``workspace``.  Sessions
        already done there with the same inputs and settings are reused.

        Args:
            recordings: Folder with ``sessions.csv`` and one sub-folder per session.
            workspace: Workspace folder (created; earlier results there are reused).
            known_students: When given, manifest rows naming other students fail.
            transcripts: Utterance file for the ``transcripts`` backend (default:
                ``RECORDINGS/utterances.csv`` or ``.parquet``).
            progress: Show a progress bar.

        Returns:
            The run summary; ``exit_code`` is 1 when something failed.

        Raises:
            ConfigError: Bad engine/device/config, or no transcripts for that backend.
            ManifestError: ``sessions.csv`` missing or unusable.
            ModelLoadError: The ASR model cannot be loaded (and no fallback).
        """
        recordings, ws = Path(recordings), Workspace(workspace)
        choice = self.resolve_asr()
        sessions, row_errors = read_manifest(recordings, known_students=known_students)
        failures: list[dict] = [{"stage": "manifest", **e.to_dict()} for e in row_errors]
        given = None
        if self.config.asr.backend == "transcripts":
            given, t_errors = _given_utterances(recordings, transcripts)
            failures += [{"stage": "transcripts", **e.to_dict()} for e in t_errors]
            asr_identity = f"transcripts:{transcripts or 'utterances'}"
            transcriber = None
        else:  # load the model once here, to fail before any work
            transcriber = self.transcriber(self.engine.asr_check_device(self.device))
            asr_identity = transcriber.name
        config = self.config
        private_dir(ws.root)
        job = ExtractJob(sessions=sessions, given=given, workspace=ws.root,
                         recordings=recordings, config=config, asr_identity=asr_identity,
                         device=self.device)
        results: dict[str, SessionResult] = {}
        text_rows: dict[str, pd.DataFrame] = {}
        stage_seconds: dict[str, float] = {}
        n_resumed = 0
        with progress_bar("extracting sessions", total=len(sessions), enabled=progress) as bar:
            for out in self.engine.run(job, transcriber):
                results[out.result.session_id] = out.result
                n_resumed += bool(out.resumed)
                if out.text is not None:
                    text_rows[out.result.session_id] = out.text
                if not out.resumed:
                    for k, v in out.result.timings.items():
                        stage_seconds[k] = stage_seconds.get(k, 0.0) + v
                bar.advance(1)

        t_assemble = time.perf_counter()
        order = [s.session_id for s in sessions]
        sessions_df, audio_failures = sessions_table(sessions, results, row_errors, recordings)
        failures += audio_failures
        backend = load_prosody(config.prosody)
        prosody_df = prosody_table([results[sid].prosody for sid in order], backend)
        utterances_df = utterances_frame(
            [u for sid in order for u in results[sid].utterances], asr_identity)
        utterance_prosody_df = utterance_prosody_table(
            [results[sid].utterance_prosody for sid in order], backend)
        timing_df = timing_table([results[sid].timing for sid in order])
        ok_ids = [sid for sid in order if results[sid].status != "failed"]
        t_text, c_text = time.perf_counter(), time.process_time()
        if text_rows:  # the engine computed them (ray: per batch of sessions)
            text_df = stack_text_rows(text_rows, ok_ids, config.text)
        else:
            text_df = text_features(utterances_df, config.text, session_ids=ok_ids)
            stage_seconds["text_s"] = time.perf_counter() - t_text
            stage_seconds["text_cpu_s"] = time.process_time() - c_text
        t_text = time.perf_counter() - t_text
        in_class_df = build_in_class(sessions_df, prosody_df, text_df,
                                     utterance_prosody=utterance_prosody_df, timing=timing_df)
        # all outputs go to a staging folder first, then are switched in together: a
        # run that fails while writing (a full disk) leaves the previous tables and
        # their run.json as they were
        frames = {"sessions": sessions_df, "prosody": prosody_df, "timing": timing_df,
                  "utterances": utterances_df, "prosody_utterances": utterance_prosody_df,
                  "in_class": in_class_df}
        with ws.staging() as stage:
            for name, frame in frames.items():
                stage.write(name, frame)
            stage.write_failures(failures)
            stage.write_provenance(config.to_toml(), {
                "stage": "extract",
                "recordings": str(recordings.resolve()),
                "asr": asr_identity,
                "asr_backend": config.asr.backend,
                "asr_requested": self._asr_requested,
                "asr_choice": self._asr_choice.reason if self._asr_choice else choice.reason,
                "prosody_backend": backend.backend_name,
                "code_fingerprint": fingerprint.extract_fingerprint(config),
                "engine": self.engine.name,
            })
        tables = {name: ws.table_path(name) for name in frames}
        counts = sessions_df["status"].value_counts()
        stage_seconds["assemble_s"] = time.perf_counter() - t_assemble - t_text
        return ExtractResult(
            workspace=ws.root,
            n_sessions=len(sessions),
            n_ok=int(counts.get("ok", 0)),
            n_partial=int(counts.get("partial", 0)),
            n_failed=int(counts.get("failed", 0)),
            n_resumed=n_resumed,
            n_utterances=len(utterances_df),
            failures=failures,
            asr_backend=config.asr.backend,
            tables={k: str(v) for k, v in tables.items()},
            stage_seconds=stage_seconds,
            asr_model=asr_identity,
            asr_choice=self._asr_choice.reason if self._asr_choice else choice.reason,
        )


def _given_utterances(recordings: Path, transcripts: Path | str | None
                      ) -> tuple[dict[str, list[Utterance]], list[RowError]]:
    """Read the given transcripts of the ``transcripts`` backend, per session."""
    path = transcripts or find_transcripts(recordings)
    if path is None:
        raise ConfigError(
            f"--asr-backend transcripts needs {recordings}/utterances.csv (or .parquet) "
            "with columns session_id, speaker, start_s, end_s, text, or --transcripts FILE"
        )
    df, errors = load_utterances(Path(path))
    by_session = {sid: utterances_for_session(df, sid) for sid in df["session_id"].unique()}
    return by_session, errors
