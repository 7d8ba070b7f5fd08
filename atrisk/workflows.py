"""Folder in, folder out: what the CLI commands, the demo and the service jobs run.

Each function reads its inputs from folders, calls the Python API
(:class:`~atrisk.extract.Extractor`, :class:`~atrisk.ingest.logs.Logs`,
:class:`~atrisk.training.model.RiskModel`) and writes its outputs, so the CLI, the
service and a backend using the API compute the same things in the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from atrisk.config import Config, TrainingConfig
from atrisk.errors import AtriskError, ConfigError
from atrisk.extract import Extractor, ExtractResult
from atrisk.extras import require
from atrisk.features.in_class import InClassData
from atrisk.ingest.logs import Logs
from atrisk.training.evaluate import EvaluationReport
from atrisk.training.fit import seed_records
from atrisk.training.labels import augment
from atrisk.training.model import RiskModel
from atrisk.training.seed_labels import lookup_builder, seed_labels
from atrisk.workspace import Workspace, write_csv


def extract_folder(recordings: Path | str, out: Path | str, config: Config | None = None,
                   device: str = "auto", engine: str = "local", workers: int | None = None,
                   address: str | None = None, threads: int | None = None,
                   known_students: set[str] | None = None,
                   transcripts: Path | str | None = None, asr_fallback: bool = False,
                   progress: bool = True) -> ExtractResult:
    """Turn a recordings folder into the workspace tables (``atrisk extract``).

    Args:
        recordings: Folder with ``sessions.csv`` and one sub-folder per session.
        out: The workspace folder (earlier results there are reused).
        config: Output-changing settings (defaults when ``None``).
        device: ``auto``, ``cpu`` or ``cuda``.
        engine: ``local`` or ``ray``.
        workers: Worker processes / CPUs of a local Ray.
        address: Ray cluster to join.
        threads: torch threads per worker (local engine).
        known_students: When given, manifest rows naming other students fail.
        transcripts: Utterance file for the ``transcripts`` backend.
        asr_fallback: Fall back to pocketsphinx when the ASR model cannot be loaded.
        progress: Show a progress bar.

    Returns:
        The run summary (see :meth:`Extractor.extract`).
    """
    extractor = Extractor(config, device=device, engine=engine, workers=workers,
                          address=address, threads=threads, asr_fallback=asr_fallback)
    return extractor.extract(recordings, out, known_students=known_students,
                             transcripts=transcripts, progress=progress)


@dataclass
class TrainResult:
    """Summary of :func:`train_folder`.

    Attributes:
        model_dir: Where the model was saved.
        n_students: Students with pairs.
        n_pairs: ``<student, day>`` pairs built.
        positive_ratio: Share of positive pairs per horizon (before augmentation).
        horizons: Horizons with a trained pipeline.
        failures: Rejected log rows (one dict each).
    """

    model_dir: Path
    n_students: int
    n_pairs: int
    positive_ratio: dict[str, float]
    horizons: list[int]
    failures: list[dict]

    @property
    def exit_code(self) -> int:
        """1 when some log rows were rejected (the rest was used), else 0."""
        return 1 if self.failures else 0


def workspace_in_class(workspace: Path | str) -> InClassData:
    """Return a workspace's in-class data; none when the folder does not exist (log-only)."""
    return InClassData.from_workspace(workspace) if Path(workspace).is_dir() else InClassData()


def rank_logs(model: RiskModel, logs: Logs, workspace: Path | str, date: Any,
              horizons: list[int]) -> dict[int, pd.DataFrame | str]:
    """Rank the students active on ``date`` for each horizon (what the service's predict job runs).

    Args:
        model: The loaded model.
        logs: Validated logs (e.g. :meth:`Logs.from_frames` over the service's store).
        workspace: The workspace whose ``in_class`` and ``sessions`` tables give the
            in-class features (none when it has no tables yet).
        date: The day.
        horizons: Trained horizons to rank for.

    Returns:
        Per horizon the ranked list (:meth:`RiskModel.rank`), or the reason no list
        could be made (e.g. no student active on that day).

    Raises:
        HorizonError: A horizon the model was not trained for.
        ConfigError: ``date`` is not a date.
    """
    ws = Workspace(workspace)
    in_class = InClassData.from_workspace(ws) if ws.has("in_class") else InClassData()
    out: dict[int, pd.DataFrame | str] = {}
    for h in horizons:
        model.pipeline(h)  # an untrained horizon raises before any work
    for h in horizons:
        try:
            out[h] = model.rank(logs, in_class, date, horizon=h)
        except ConfigError:
            raise
        except AtriskError as exc:  # e.g. no student active on that day
            out[h] = str(exc)
    return out


def read_logs(logs_dir: Path | str) -> tuple[Logs, list[dict]]:
    """Read and validate a logs folder; return the logs and their rejected rows as dicts."""
    logs = Logs.read(logs_dir)
    return logs, [{"stage": "logs", **e.to_dict()} for e in logs.errors]


def labelled_rows(pairs: pd.DataFrame, config: TrainingConfig) -> pd.DataFrame:
    """Return the pairs with the training labels of ``config`` (before class balance).

    ``labels = "horizon"``: ``label``/``weight``/``is_pseudo`` of the first horizon
    (pseudo-positives relabelled in place); ``labels = "seed"``: P ∪ N ∪ P̃ (pseudo
    pairs appended, ``is_pseudo`` true).  Every row keeps its ``dropout_within_{Δ}``
    columns; the original pairs are the rows where ``is_pseudo`` is false.
    """
    if config.labels == "seed":
        rows = seed_labels(pairs, lookup_builder(pairs), config.lookback, config.weighting,
                           seed_records(pairs))
    else:
        rows = augment(pairs, config.horizons[0], config.lookback, config.weighting)
    return rows.reset_index(drop=True)


def train_folder(workspace: Path | str, logs_dir: Path | str, out: Path | str,
                 config: Config | None = None) -> TrainResult:
    """Build pairs from a workspace and logs, fit the risk model, save it (``atrisk train``).

    Writes the ``pairs`` table (:func:`labelled_rows`: the training labels,
    pseudo-positives and weights) into the workspace and the model into ``out``.

    Raises:
        AtriskError: When no pair can be built.
        LogValidationError: When a log file is missing or unusable.
    """
    model = RiskModel(config or Config())
    logs, failures = read_logs(logs_dir)
    pairs = model.pairs(logs, workspace_in_class(workspace))
    if pairs.empty:
        raise AtriskError(f"no <student, day> pairs could be built from {logs_dir}: "
                          "are there class events in events.csv?")
    Workspace(workspace).write("pairs", labelled_rows(pairs, model.training))
    model.fit_pairs(pairs).save(out)
    return TrainResult(
        model_dir=Path(out),
        n_students=int(pairs["student_id"].nunique()),
        n_pairs=len(pairs),
        positive_ratio=model.metadata_.get("positive_ratio", {}),
        horizons=list(model.horizons),
        failures=failures,
    )


def evaluate_folder(model_dir: Path | str, workspace: Path | str, logs_dir: Path | str,
                    out: Path | str, horizons: list[int] | None = None,
                    baselines: bool = True) -> EvaluationReport:
    """Evaluate a saved model on a workspace and logs; write the report (``atrisk evaluate``).

    The model builds the pairs with the feature settings it was trained with.

    Returns:
        The report (also written as ``metrics.json`` and ``report.html`` into ``out``).
    """
    model = RiskModel.load(model_dir)
    logs, failures = read_logs(logs_dir)
    report = model.evaluate(logs, workspace_in_class(workspace), horizons=horizons,
                            baselines=baselines)
    report.failures = failures
    report.write(out)
    return report


def predict_folder(model_dir: Path | str, workspace: Path | str, logs_dir: Path | str,
                   date: str | datetime | Any, out: Path | str, horizon: int = 1,
                   db: Path | str | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """Write the ranked risk list of ``date`` to ``out`` (CSV) (``atrisk predict``).

    Text cells starting with ``= + - @`` are written with a leading ``'`` so that a
    spreadsheet does not run them as formulas.  The model builds the features with the
    settings it was trained with, from data before ``date`` only.  With ``db``, the list
    is also written into that service store (re-running a day replaces its rows).

    Returns:
        ``(risk list, rejected log rows)``.
    """
    model = RiskModel.load(model_dir)
    logs, failures = read_logs(logs_dir)
    risk = model.rank(logs, workspace_in_class(workspace), date, horizon=horizon)
    write_csv(risk, out)  # ids and reasons starting = + - @ are escaped for spreadsheets
    if db is not None:
        require("duckdb", feature="predict --db (the service's store)")
        from atrisk.serve.store import write_risk

        day = pd.Timestamp(risk["date"].iloc[0]).tz_localize("UTC")
        write_risk(db, risk, day, horizon)
    return risk, failures
