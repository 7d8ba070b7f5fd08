"""Benchmark ``atrisk extract`` end to end and print one JSON object.

Makes espeak-ng voiced two-track classes with the demo generator
(:func:`atrisk.synthetic.generate_cohort`) into a scratch folder (never the
repo), then runs :func:`atrisk.pipeline.extract` on them and reports: sessions,
audio seconds, wall seconds, audio-s per s, per-stage seconds, peak RSS, device
and engine.

Two shapes:

* ``--sessions N --class-seconds S``: N classes of about S seconds each;
* ``--long-hours H``: one class of H hours (a generated class tiled to that
  length, with its transcript tiled alike), for the bounded-memory check.

Peak RSS is sampled (every 0.05 s) over this process and all its descendants
(worker processes, and the local Ray's raylet and workers), summing VmRSS; a
child spawned but not yet exec'd (e.g. each ``ffmpeg`` decoder, for an instant)
reports its parent's memory as its own and is not counted (before this, such an
instant could add the parent's whole RSS a second time to the peak);
``ru_maxrss`` of this process is reported beside it.  ``peak_rss_stage_mb`` is
the peak of that sum while each stage ran (manifest, model load, decode,
prosody, ASR, text, assemble, write): the stage functions are wrapped here to
set a label the sampler reads, so it is exact with ``--engine local --workers 1``
(sessions then run in this process); with more workers the sessions run in
other processes, so their RSS counts under whatever the driver is doing.  ``cpu_seconds``
is the user + system CPU time of this process and its waited-for children.

``--tiny-wav2vec2`` builds a small random ``Wav2Vec2ForCTC``
(:func:`atrisk.testing.make_tiny_wav2vec2`, saved with ``save_pretrained``) and
transcribes with it: its text is random, but its memory and VAD work are those
of the real backend on the same audio (the model itself is small).

CPU per audio second (``cpu_s_per_track_s``): CPU-seconds of one core per second
of **track** audio (each class has two tracks and prosody runs on each, so a
60 s class is 120 track-seconds; ``audio_seconds`` is session seconds, the
longer track).  ``prosody_plus_text`` is the goal's figure (prosody in the
workers + text features, the spaCy pipeline loaded beforehand: a once-per-run
cost, reported as ``text_model_load`` and in ``..._incl_text_model_load``);
``by_stage`` splits everything the run spent: decode, prosody, text, the text
model load, the parent's assembling and Parquet writes, and the workers' other
CPU (process start-up, imports, pickling).  With
openSMILE, ``opensmile_bound`` times ``opensmile.Smile.process_signal``
(eGeMAPSv02 functionals) alone on the same decoded tracks in this process, and
``ratio_to_opensmile_bound`` is prosody+text over it.

Example::

    python scripts/benchmarks/bench_extract.py --sessions 16 --class-seconds 120 \\
        --asr-backend transcripts --workers 2
    python scripts/benchmarks/bench_extract.py --long-hours 3 --asr-backend transcripts --workers 1
    python scripts/benchmarks/bench_extract.py --sessions 8 --class-seconds 120 \\
        --asr-backend transcripts --workers 2 --prosody-backend torch
    python scripts/benchmarks/bench_extract.py --long-hours 3 --asr-backend wav2vec2 --tiny-wav2vec2 \\
        --workers 1 --device cpu
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from atrisk.extract import resources


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def _mm_key(pid: int) -> tuple[str, ...] | None:
    """Code and stack addresses of ``pid`` (equal to its parent's until it execs)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return tuple(fields[23:26])  # startcode, endcode, startstack (stat fields 26-28)


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class TreeRSS:
    """Sample the summed RSS of this process and its descendants in a thread.

    ``peak`` is the overall peak; ``stage_peak`` the peak per value of ``stage``
    (a label the code under measurement sets, see :func:`label_stages`).
    """

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak = 0
        self.stage = "setup"
        self.stage_peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        todo, total, seen = [(os.getpid(), None)], 0, set()
        while todo:
            pid, parent_mm = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            mm = _mm_key(pid)
            # a child spawned but not yet exec'd (subprocess's vfork/fork, e.g. each
            # ffmpeg decoder) reports its parent's memory as its own VmRSS: counting it
            # would add the parent's RSS a second time at every spawn
            if mm is None or mm != parent_mm:
                total += _rss_bytes(pid)
            todo += [(c, mm) for c in _children(pid)]
        return total

    def _record(self) -> None:
        stage, rss = self.stage, self._sample()
        self.peak = max(self.peak, rss)
        self.stage_peak[stage] = max(self.stage_peak.get(stage, 0), rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._record()
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._record()

    @contextmanager
    def label(self, stage: str):
        """Set the stage label for the duration of a block (sampled once on entry)."""
        before, self.stage = self.stage, stage
        self._record()
        try:
            yield
        finally:
            self._record()
            self.stage = before


def _wrap(owner, name: str, stage: str, rss: TreeRSS) -> Callable[[], None]:
    """Replace ``owner.name`` by a wrapper labelling its calls ``stage``; return the undo."""
    import inspect

    real = getattr(owner, name)
    original = inspect.getattr_static(owner, name)  # a staticmethod stays one

    def wrapped(*args, **kwargs):
        with rss.label(stage):
            return real(*args, **kwargs)

    setattr(owner, name, staticmethod(wrapped) if isinstance(original, staticmethod)
            else wrapped)
    return lambda: setattr(owner, name, original)


@contextmanager
def label_stages(rss: TreeRSS):
    """Label the extract stages for ``rss`` while the block runs (restored after)."""
    from atrisk import extract
    from atrisk.extract import session
    from atrisk.extractors import text
    from atrisk.extractors.prosody import opensmile_backend
    from atrisk.features import in_class
    from atrisk.ingest import audio, manifest
    from atrisk.workspace import Workspace

    targets = [
        (manifest, "read_manifest", "manifest"),
        (extract.Extractor, "_load_transcriber", "load_model"),
        (audio, "decode_session", "decode"),
        (opensmile_backend.OpenSmileProsody, "process_sessions", "prosody"),
        (session.SessionProcessor, "_asr", "asr"),
        (text, "text_features", "text"),
        (in_class, "build_in_class", "assemble"),
        (Workspace, "write", "write"),
    ]
    # stages of the streaming path of long tracks
    targets += [(session, "stream_prosody", "decode+prosody"), (session, "stream_asr", "asr")]
    undo = [_wrap(owner, name, stage, rss) for owner, name, stage in targets]
    try:
        yield
    finally:
        for u in reversed(undo):
            u()


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def make_classes(root: Path, n_students: int, class_seconds: float, seed: int = 0) -> Path:
    """Generate voiced classes with the demo generator; return the cohort folder."""
    from atrisk.synthetic import CohortParams, generate_cohort

    marker = root / f"cohort-{n_students}-{class_seconds:g}-{seed}"
    if (marker / "recordings" / "sessions.csv").is_file():
        return marker
    if marker.exists():
        shutil.rmtree(marker)
    params = CohortParams(max_track_s=class_seconds, max_turns=int(class_seconds / 2.5) + 4)
    generate_cohort(marker, n_students=n_students, seed=seed, params=params)
    return marker


def make_long_class(root: Path, hours: float, seed: int = 0) -> Path:
    """Tile one generated class to ``hours`` hours (both tracks and its transcript)."""
    out = root / f"long-{hours:g}h-{seed}"
    rec = out / "recordings"
    if (rec / "sessions.csv").is_file():
        return out
    base = make_classes(root, 2, 120.0, seed)
    utts = pd.read_csv(base / "utterances.csv")
    sid = str(pd.read_csv(base / "recordings" / "sessions.csv")["session_id"].iloc[0])
    sr = None
    tracks = {}
    for track in ("teacher", "student"):
        x, sr = sf.read(base / "recordings" / sid / f"{track}.wav", dtype="int16")
        tracks[track] = x
    n = min(t.size for t in tracks.values())
    reps = int(np.ceil(hours * 3600 * sr / n))
    (rec / "L1").mkdir(parents=True, exist_ok=True)
    for track, x in tracks.items():
        with sf.SoundFile(rec / "L1" / f"{track}.wav", "w", sr, 1, "PCM_16") as fh:
            for _ in range(reps):  # streamed: never the whole track in memory
                fh.write(x[:n])
    one = utts[utts["session_id"] == sid]
    one = one[one["end_s"] <= n / sr]
    tiled = pd.concat(
        [one.assign(start_s=one["start_s"] + k * n / sr, end_s=one["end_s"] + k * n / sr)
         for k in range(reps)]
    ).assign(session_id="L1")
    tiled.to_csv(out / "utterances.csv", index=False)
    (rec / "sessions.csv").write_text(
        "session_id,student_id,teacher_id,start_time\nL1,S1,T1,2024-03-01T10:00:00Z\n"
    )
    return out


def _load_text_model(cfg) -> float:
    """Load the text stage's spaCy pipeline (cached per config); return its CPU seconds."""
    from atrisk.extractors.text import featurizer

    c0 = time.process_time()
    featurizer(cfg.text).linguistic.nlp  # noqa: B018 (loads it)
    return time.process_time() - c0


def _cpu_split(st: dict, cpu0: float, cpu1: float, engine: str,
               text_load: float) -> dict[str, float | None]:
    """Split the run's CPU into decode / prosody / text / parent rest / worker overhead.

    The local engine's workers are reaped when extract returns, so their CPU is in
    ``RUSAGE_CHILDREN``; Ray's workers outlive the call (its rest is not known here).
    ``assemble_and_write`` is wall time of the parent's assembling and Parquet writes
    (one process, so about its CPU).
    """
    decode, prosody, text = (st.get("decode_cpu_s", 0.0), st.get("prosody_cpu_s", 0.0),
                             st.get("text_cpu_s", 0.0))
    utterance_prosody = st.get("utterance_prosody_cpu_s", 0.0)
    total = cpu1 - cpu0 if engine == "local" else None
    staged = (decode + prosody + utterance_prosody + text + text_load
              + st.get("assemble_s", 0.0))
    return {"decode": decode, "prosody": prosody, "utterance_prosody": utterance_prosody,
            "text": text,
            "text_model_load": text_load,
            "assemble_and_write": st.get("assemble_s"),
            "workers_start_up_and_other": None if total is None else total - staged,
            "total": total}


def res_backend(ws: Path) -> str | None:
    """The prosody backend recorded in the workspace's run.json."""
    try:
        return json.loads((ws / "run.json").read_text()).get("prosody_backend")
    except (OSError, ValueError):
        return None


def opensmile_bound(sessions: pd.DataFrame, cfg) -> dict:
    """CPU of ``opensmile.Smile.process_signal`` alone (eGeMAPSv02 functionals) per track-s."""
    import opensmile

    from atrisk.ingest.audio import load_audio

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    rate = cfg.audio.sample_rate
    cpu, seconds = 0.0, 0.0
    for col in ("teacher_path", "student_path"):
        for path in sessions[col].dropna():
            x = load_audio(path, rate)
            c0 = time.process_time()
            smile.process_signal(x, rate)
            cpu += time.process_time() - c0
            seconds += x.size / rate
    return {"what": "opensmile.Smile(eGeMAPSv02, Functionals).process_signal per track, "
            "one process, same tracks", "cpu_s": round(cpu, 3),
            "track_seconds": round(seconds, 1), "cpu_s_per_track_s": round(cpu / seconds, 5)}


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and print its JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=16, help="students of the cohort (≈ classes)")
    ap.add_argument("--class-seconds", type=float, default=120.0)
    ap.add_argument("--long-hours", type=float, default=None)
    ap.add_argument("--engine", choices=("local", "ray"), default="local")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--asr-backend", default="transcripts",
                    choices=("transcripts", "auto", "whisper", "pocketsphinx", "wav2vec2"))
    ap.add_argument("--asr-model", default=None)
    ap.add_argument("--prosody-backend", default="opensmile", choices=("opensmile", "torch"))
    ap.add_argument("--no-per-utterance", action="store_true",
                    help="prosody per track only (prosody.per_utterance = false)")
    ap.add_argument("--no-bound", action="store_true",
                    help="skip timing openSMILE alone on the tracks")
    ap.add_argument("--tiny-wav2vec2", action="store_true",
                    help="transcribe with a small random Wav2Vec2 built here (memory, not words)")
    ap.add_argument("--data", type=Path, default=Path("/tmp/atrisk_bench"))
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)

    from atrisk import workflows
    from atrisk.config import Config

    args.data.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.long_hours:
        cohort = make_long_class(args.data, args.long_hours)
    else:
        cohort = make_classes(args.data, args.sessions, args.class_seconds)
    gen_s = time.perf_counter() - t0

    overrides = {"asr.backend": args.asr_backend, "prosody.backend": args.prosody_backend,
                 "prosody.per_utterance": not args.no_per_utterance}
    if args.tiny_wav2vec2:
        from atrisk.testing import make_tiny_wav2vec2

        tiny = args.data / "tiny-wav2vec2"
        if not (tiny / "config.json").is_file():
            make_tiny_wav2vec2(tiny)
        args.asr_model = str(tiny)
    if args.asr_model:
        overrides["asr.model"] = args.asr_model
    cfg = Config().override(overrides)
    ws = args.data / (f"ws-{cohort.name}-{args.engine}-{args.asr_backend}"
                      f"-{args.prosody_backend}")
    if ws.exists():
        shutil.rmtree(ws)  # measure a cold run, never a resumed one
    load0 = os.getloadavg()
    cpu0 = _cpu_seconds()
    text_load_cpu = _load_text_model(cfg)  # once per run; reported as start-up, not per audio-s
    with TreeRSS() as rss, label_stages(rss):
        t0 = time.perf_counter()
        res = workflows.extract_folder(
            cohort / "recordings", ws, cfg, device=args.device, engine=args.engine,
            workers=args.workers,
            transcripts=cohort / "utterances.csv" if args.asr_backend == "transcripts" else None,
            progress=False,
        )
        wall = time.perf_counter() - t0
    cpu1 = _cpu_seconds()  # the local engine's pool is shut down (workers reaped)
    sessions = pd.read_parquet(ws / "sessions.parquet")
    audio_s = float(sessions["duration_s"].sum())
    track_s = sum(
        sf.info(str(path)).duration
        for col in ("teacher_path", "student_path")
        for path in sessions[col].dropna()
        if Path(path).is_file()
    )
    n_tracks = int(len(pd.read_parquet(ws / "prosody.parquet")))
    cores = args.workers or resources.usable_cpus()
    stage = {k: round(v, 3) for k, v in res.stage_seconds.items()}
    st = res.stage_seconds
    prosody_text = (st.get("prosody_cpu_s", 0)
                    + st.get("utterance_prosody_cpu_s", 0)  # per utterance
                    + st.get("text_cpu_s", 0))
    cpu_split = _cpu_split(st, cpu0, cpu1, args.engine, text_load_cpu)
    per_track_s = {k: None if v is None else round(v / track_s, 5) for k, v in cpu_split.items()}
    bound = None
    if args.prosody_backend == "opensmile" and not args.no_bound:
        bound = opensmile_bound(sessions, cfg)
    device = args.device
    if args.asr_backend != "transcripts" and device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    out = {
        "benchmark": "extract",
        "engine": args.engine,
        "device": device if args.asr_backend != "transcripts" else "cpu (no ASR model)",
        "cpu": platform.processor() or platform.machine(),
        "cores_used": cores,
        "asr_backend": res.asr_backend,
        "sessions": res.n_sessions,
        "sessions_ok": res.n_ok,
        "tracks": n_tracks,
        "audio_seconds": round(audio_s, 1),
        "wall_seconds": round(wall, 2),
        "audio_s_per_s": round(audio_s / wall, 2),
        "rtf_per_core": round(wall * cores / audio_s, 5),
        "stage_seconds": stage,
        "prosody_plus_text_cpu_rtf": round(prosody_text / audio_s, 5),
        "track_audio_seconds": round(track_s, 1),
        "prosody_plus_text_cpu_rtf_per_track_second": round(prosody_text / track_s, 5),
        "prosody_backend": res_backend(ws),
        "per_utterance_prosody": not args.no_per_utterance,
        "audio_seconds_counted_as": "track-seconds (teacher + student durations) for "
        "cpu_s_per_track_s; audio_seconds above are session seconds (longer track)",
        "cpu_s_per_track_s": {
            "prosody_plus_text": round(prosody_text / track_s, 5),
            "prosody_plus_text_incl_text_model_load": round(
                (prosody_text + text_load_cpu) / track_s, 5),
            "end_to_end": None if cpu_split["total"] is None
            else round(cpu_split["total"] / track_s, 5),
            "by_stage": per_track_s,
            "goal": "prosody_plus_text <= 0.015 per core (2-core CPU, --asr-backend transcripts)",
        },
        "cpu_seconds": {k: None if v is None else round(v, 3) for k, v in cpu_split.items()},
        "peak_rss_tree_mb": round(rss.peak / 2**20, 1),
        "peak_rss_stage_mb": {k: round(v / 2**20, 1) for k, v in rss.stage_peak.items()},
        "peak_rss_driver_mb": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "loadavg_1m_before": round(load0[0], 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "generate_seconds": round(gen_s, 1),
        "exit_code": res.exit_code,
    }
    if bound is not None:
        out["opensmile_bound"] = bound
        out["ratio_to_opensmile_bound"] = round(
            (prosody_text / track_s) / bound["cpu_s_per_track_s"], 3)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
