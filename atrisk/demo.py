"""``atrisk demo``: the whole pipeline on a synthetic cohort, end to end.

Generates students, logs and espeak-ng voiced classes (:mod:`atrisk.synthetic`),
then runs extract → train → evaluate → predict exactly as a user would, and
prints where everything is.  Layout of ``OUT``::

    OUT/data/recordings/   sessions.csv + <session_id>/teacher.wav, student.wav
    OUT/data/logs/         students.csv, orders.csv, events.csv, outcomes.csv
    OUT/workspace/         sessions, prosody, utterances, in_class, pairs (Parquet)
    OUT/model/             the trained artifact (loadable by predict/evaluate/serve)
    OUT/report/            metrics.json, report.html
    OUT/risk.csv           the ranked risk list of the busiest day
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from atrisk.config import Config
from atrisk.extract import Extractor
from atrisk.features.pairs import pair_keys
from atrisk.ingest.logs import load_logs
from atrisk.progress import console, print_evaluation, progress_bar
from atrisk.synthetic import CohortParams, generate_cohort
from atrisk.workflows import evaluate_folder, predict_folder, train_folder

#: Share of the demo's students whose (first) class is recorded: 200 × 0.45 ≈ 80
#: voiced classes keeps the demo within its time budget, while all 200 students' logs
#: give the model more dropouts to learn from and to be measured on.
DEMO_RECORDED_STUDENTS = 0.45


def busiest_day(logs_dir: Path, sessions: pd.DataFrame | None = None) -> pd.Timestamp:
    """Return the day with the most active students (latest such day on ties)."""
    keys = pair_keys(load_logs(logs_dir), sessions=sessions)
    counts = keys.groupby("t").size()
    return counts[counts == counts.max()].index.max()


def run_demo(
    out: Path | str,
    n_students: int = 200,
    seed: int = 0,
    recorded_per_student: int | None = 1,
    asr_model: str | None = None,
    quiet: bool = False,
) -> dict:
    """Run the demo; return a summary dict (also printed unless ``quiet``).

    Args:
        out: Folder for everything the demo makes.
        n_students: Size of the synthetic cohort (a share ``DEMO_RECORDED_STUDENTS`` of
            them, drawn per student without the outcome, has recorded classes).
        recorded_per_student: At most this many recorded classes per student (the
            generator records the first class and each later one with probability
            ``record_share``, never looking at the outcome; the others exist in the
            logs only, as unrecorded classes do).  The default 1 records each
            student's first class (the demo's time budget); ``None``: no cap.
        seed: Seed of the generator and of the models.
        asr_model: ``--asr-model``: the speech recogniser is chosen as by
            ``asr.backend = "auto"`` (:mod:`atrisk.asr.auto`): a Wav2Vec2 checkpoint when
            this names one or the default is in the Hugging Face cache, else the bundled
            Whisper (offline), else pocketsphinx; the choice is printed.  When the chosen
            model cannot be loaded the demo falls back to pocketsphinx with a warning.
        quiet: Print nothing.
    """
    out = Path(out)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    # The demo's tracks are short (<= 28 s), so its ASR takes the cheaper settings to keep
    # the demo within its time budget on 2 cores (docs/performance.md#demo-whisper):
    # Whisper with faster-whisper's own VAD and chunking (holds a track: fine at 28 s)
    # and beam 1, pocketsphinx (the last fallback) with its fast search; `atrisk extract`
    # defaults to the VAD windows, beam 5 and the accurate search.
    config = Config().override(
        {"asr.model": asr_model, "training.seed": seed, "asr.pocketsphinx_search": "fast",
         "asr.whisper_segmentation": "builtin", "asr.whisper_beam_size": 1}
    )

    with progress_bar("voicing synthetic classes", total=None, enabled=not quiet) as bar:

        def _tick(done: int, total: int) -> None:
            bar.update(completed=done, total=total)

        cohort = generate_cohort(
            out / "data",
            n_students=n_students,
            seed=seed,
            audio=True,
            max_recorded_per_student=recorded_per_student,
            progress=_tick,
            params=replace(CohortParams(), record_students=DEMO_RECORDED_STUDENTS),
        )
    timings["generate"] = time.perf_counter() - t0
    recordings, logs = out / "data" / "recordings", out / "data" / "logs"

    t = time.perf_counter()
    extractor = Extractor(config, asr_fallback=True)
    choice = extractor.resolve_asr()
    if not quiet:
        console.print(f"speech recognition: [bold]{choice.backend}[/] ({choice.reason})",
                      highlight=False)
    ex = extractor.extract(recordings, out / "workspace", progress=not quiet)
    timings["extract"] = time.perf_counter() - t
    config = config.override({"asr.backend": ex.asr_backend})

    t = time.perf_counter()
    tr = train_folder(out / "workspace", logs, out / "model", config)
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    ev = evaluate_folder(out / "model", out / "workspace", logs, out / "report")
    timings["evaluate"] = time.perf_counter() - t

    t = time.perf_counter()
    sessions = pd.read_parquet(out / "workspace" / "sessions.parquet")
    day = busiest_day(logs, sessions)
    risk, _ = predict_folder(out / "model", out / "workspace", logs, day, out / "risk.csv")
    timings["predict"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0

    summary = {
        "students": cohort.n_students,
        "dropout_rate": round(cohort.dropout_rate, 4),
        "sessions": ex.n_sessions,
        "utterances": ex.n_utterances,
        "asr_backend": ex.asr_backend,
        "asr_model": ex.asr_model,
        "asr_choice": ex.asr_choice,
        "pairs": tr.n_pairs,
        "auc": ev.metrics.get("auc", {}),
        "auc_ci": ev.metrics.get("auc_ci", {}),
        "n_test_students": ev.metrics.get("n_students"),
        "evaluation": {k: ev.metrics.get(k) for k in (
            "per_horizon", "auc", "auc_ci", "n_students", "caveats", "flag_share", "level",
            "temporal")},
        "risk_date": str(day.date()),
        "flagged": int(risk["flagged"].sum()),
        "paths": {
            "workspace": str(out / "workspace"),
            "model": str(out / "model"),
            "report": str(out / "report" / "report.html"),
            "risk": str(out / "risk.csv"),
        },
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    if not quiet:
        _print_summary(summary)
    return summary


def _print_summary(s: dict) -> None:
    console.print(
        f"\n[bold]atrisk demo[/]: {s['students']} students ({s['dropout_rate']:.0%} dropped out), "
        f"{s['sessions']} recorded classes, {s['utterances']} utterances ({s['asr_model']}), "
        f"{s['pairs']} <student, day> pairs, {s['seconds']['total']:.0f} s",
        highlight=False,
    )
    print_evaluation(s["evaluation"])
    console.print(f"risk list for {s['risk_date']}: {s['paths']['risk']} ({s['flagged']} flagged)")
    for name in ("workspace", "model", "report"):
        console.print(f"{name}: {s['paths'][name]}")
