"""Benchmark prosody extraction: audio-seconds per second, one section per backend.

``--backend opensmile`` (this file's :func:`bench_opensmile`) measures
:class:`atrisk.extractors.prosody.OpenSmileProsody` (eGeMAPSv02 functionals) on
``--seconds``-long speech signals (espeak-ng voices tiled with pauses; a harmonic tone
when espeak-ng is missing):

* ``one_process``: signals one after another in this process;
* ``per_utterance``: 2 s segments of one signal through ``process_segments`` (one
  openSMILE run per segment, as ``opensmile.Smile`` does);
* ``all_cores``: ``--workers`` (default: every core) processes of a process pool, each
  processing whole signals;
* ``long_track``: one ``--long-s`` signal (default 600 s) processed in a fresh child
  process through ``opensmile.Smile.process_signal`` (``whole``), the extractor's
  chunked stream (``chunked``, signal in memory) and ``process_file`` on it written as a
  16-bit WAV (``file``, decoded by ffmpeg chunk by chunk; the 16-bit rounding makes
  its input differ slightly from the float signal, so it is also compared with the
  whole decoded file), with the child's peak RSS above its baseline and whether the
  88 values are bit-identical to ``whole``.

``--backend torch`` (:func:`bench_torch`) measures
:class:`~atrisk.extractors.prosody.torch_backend.TorchProsody` on the same signals:
one CPU thread (the per-core rate), all CPU threads, and a CUDA batch of 64 when a GPU
is present; ``both`` runs both.
Prints one JSON object: ``{"machine": ..., "opensmile": {...}, "torch": {...}}``.
Wall-clock figures (``audio_s_per_s``) are slowed by whatever else the machine runs; the
``*_per_cpu_s`` figures divide by the CPU time of the processing thread(s) of the
process, which other load changes much less; the load average is recorded around
each section.

Usage (repository root)::

    .venv/bin/python scripts/benchmarks/bench_prosody.py --backend opensmile [--seconds 60] [--n 4]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

SR = 16000
_TEXT = ("Hello, today we will learn about fractions and how to add them together. "
         "Can you tell me what one half plus one quarter is? Very good, let us try another.")


def speech_signal(seconds: float, seed: int = 0) -> np.ndarray:
    """Return ``seconds`` of speech-like audio at 16 kHz (espeak-ng voices, or a tone)."""
    from atrisk.ingest.audio import load_audio

    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    if shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as tmp:
            for pitch in (25, 45, 65, 85):
                wav = Path(tmp) / f"p{pitch}.wav"
                subprocess.run(["espeak-ng", "-v", "en", "-p", str(pitch), "-w", str(wav), _TEXT],
                               check=True)
                parts += [load_audio(wav, SR), np.zeros(SR // 2, np.float32)]
    else:
        t = np.arange(3 * SR) / SR
        parts = [sum(0.1 / k * np.sin(2 * np.pi * 150 * k * t) for k in range(1, 6)),
                 np.zeros(SR // 2)]
    one = np.concatenate(parts).astype(np.float32)
    n = int(seconds * SR)
    x = np.tile(one, n // one.size + 1)[:n] * np.float32(rng.uniform(0.5, 1.0))
    return (x + 1e-3 * rng.standard_normal(n)).astype(np.float32)


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


_EXTRACTOR = None


def _one(seed_seconds: tuple[int, float]) -> tuple[float, float]:
    """Process one signal in a worker; return its (wall, CPU) processing time (s)."""
    global _EXTRACTOR
    from atrisk.extractors.prosody.opensmile_backend import OpenSmileProsody

    if _EXTRACTOR is None:
        _EXTRACTOR = OpenSmileProsody()
    seed, seconds = seed_seconds
    x = speech_signal(seconds, seed)
    t0, c0 = time.perf_counter(), time.process_time()
    out = _EXTRACTOR.process_signal(x, SR)
    if out.notna().sum() < 80:
        raise RuntimeError("benchmark signal gave NaN features")
    return time.perf_counter() - t0, time.process_time() - c0


def _long_child(mode: str, seconds: float) -> dict:
    """Run in a fresh process: peak RSS of one long signal, whole, chunked or from a file."""
    import opensmile
    import soundfile as sf

    from atrisk.extractors.prosody.opensmile_backend import OpenSmileProsody

    x = speech_signal(seconds)
    tmp = tempfile.TemporaryDirectory()
    wav = Path(tmp.name) / "long.wav"
    if mode == "file":
        sf.write(wav, x, SR, subtype="PCM_16")
        x = x[: SR * 2]  # the file mode never holds the long signal
    smile = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals)
    ex = OpenSmileProsody()
    ex.process_signal(x[: SR * 2], SR)  # load everything before the baseline
    smile.process_signal(x[: SR * 2], SR)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), time.process_time()
    if mode == "whole":
        values = smile.process_signal(x, SR).iloc[0].to_numpy()
    elif mode == "file":
        values = ex.process_file(wav).to_numpy()[0]
    else:
        values = ex.process_signal(x, SR).to_numpy()
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"seconds": round(took, 2), "cpu_seconds": round(cpu, 2),
           "peak_rss_above_baseline_mb": round(peak - base, 1), "values": values.tolist()}
    if mode == "file":  # reference: the whole decoded file through openSMILE at once
        from atrisk.ingest.audio import load_audio

        ref = smile.process_signal(load_audio(wav, SR), SR).iloc[0].to_numpy()
        out["bit_identical_to_whole_decoded_file"] = bool(
            np.array_equal(ref, values, equal_nan=True))
    tmp.cleanup()
    return out


def bench_opensmile(seconds: float, n: int, workers: int, long_s: float) -> dict:
    """Return the openSMILE section: one process, all cores, long-track memory."""
    from atrisk.extractors.prosody.opensmile_backend import OpenSmileProsody

    ex = OpenSmileProsody()
    out: dict = {"backend": ex.backend_name, "feature_set": ex.config.feature_set,
                 "signal_s": seconds}
    load0 = _load()
    _one((99, 2.0))  # warm-up (creates the Smile object)
    times = np.array([_one((i, seconds)) for i in range(n)])
    out["one_process"] = {"n_signals": n, "audio_s": n * seconds,
                          "audio_s_per_s": round(n * seconds / times[:, 0].sum(), 1),
                          "audio_s_per_cpu_s": round(n * seconds / times[:, 1].sum(), 1),
                          "load_avg": [load0, _load()]}
    x = speech_signal(seconds, 7)
    segments = [(t, t + 2.0) for t in np.arange(0.0, seconds - 2.0, 2.5)]
    t0, c0 = time.perf_counter(), time.process_time()
    ex.process_segments(x, SR, "bench", "student", segments)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out["per_utterance"] = {"n_segments": len(segments), "segment_s": 2.0,
                            "segments_per_s": round(len(segments) / wall, 1),
                            "segments_per_cpu_s": round(len(segments) / cpu, 1),
                            "audio_s_per_cpu_s": round(2.0 * len(segments) / cpu, 1)}
    m = max(n, 2 * workers)
    load0 = _load()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_one, [(99, 2.0)] * workers))  # warm-up every worker
        t0 = time.perf_counter()
        times = np.array(list(pool.map(_one, [(i, seconds) for i in range(m)])))
        wall = time.perf_counter() - t0
    out["all_cores"] = {"workers": workers, "n_signals": m, "audio_s": m * seconds,
                        "audio_s_per_s": round(m * seconds / wall, 1),
                        "audio_s_per_cpu_s_per_worker": round(m * seconds / times[:, 1].sum(), 1),
                        "note": "wall clock incl. building each test signal in the worker",
                        "load_avg": [load0, _load()]}
    if long_s > 0:
        with ProcessPoolExecutor(max_workers=1) as pool:  # fresh child per mode
            whole = pool.submit(_long_child, "whole", long_s).result()
        runs = {"whole": whole}
        for mode in ("chunked", "file"):
            with ProcessPoolExecutor(max_workers=1) as pool:
                runs[mode] = pool.submit(_long_child, mode, long_s).result()
        a = np.asarray(whole.pop("values"))
        for mode in ("chunked", "file"):
            b = np.asarray(runs[mode].pop("values"))
            rel = np.abs(a - b) / np.maximum(np.abs(a), 1e-30)
            runs[mode]["bit_identical_to_whole"] = bool(np.array_equal(a, b, equal_nan=True))
            runs[mode]["max_rel_diff"] = float(np.nanmax(rel)) if np.isfinite(rel).any() else 0.0
        out["long_track"] = {"signal_s": long_s, "chunk_s": ex.chunk_s, **runs}
    return out


def _torch_rate(ex, signals: list[np.ndarray], sync) -> dict:
    """Time ``ex.functionals`` on ``signals`` (after a warm-up); return the rates."""
    ex.functionals(signals[:1], SR)  # warm-up (allocations, CUDA kernels)
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    out, _ = ex.functionals(signals, SR)
    sync()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if np.isfinite(out).sum(axis=1).min() < 80:
        raise RuntimeError("benchmark signal gave NaN features")
    audio = sum(len(s) for s in signals) / SR
    return {"n_signals": len(signals), "audio_s": audio,
            "audio_s_per_s": round(audio / wall, 1), "audio_s_per_cpu_s": round(audio / cpu, 1)}


def bench_torch(args: argparse.Namespace) -> dict:
    """Return the torch section: one CPU thread, all CPU threads, and CUDA when present."""
    import torch

    from atrisk.extractors.prosody.torch_backend import TorchProsody

    signals = [speech_signal(args.seconds, i) for i in range(args.n)]
    ex = TorchProsody(device="cpu")
    out: dict = {"backend": ex.backend_name, "signal_s": args.seconds}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    load0 = _load()
    out["cpu_one_thread"] = {**_torch_rate(ex, signals, lambda: None),
                             "load_avg": [load0, _load()]}
    torch.set_num_threads(threads)
    load0 = _load()
    out["cpu_all_threads"] = {"threads": threads, **_torch_rate(ex, signals, lambda: None),
                              "load_avg": [load0, _load()]}
    if torch.cuda.is_available():
        gpu = TorchProsody(device="cuda", batch_size=64)
        big = [speech_signal(args.seconds, i % args.n) for i in range(64)]
        out["cuda"] = {"device": torch.cuda.get_device_name(0), "batch_size": 64,
                       **_torch_rate(gpu, big, torch.cuda.synchronize)}
    else:
        out["cuda"] = {"skipped": "no CUDA device on this machine"}
    out["note"] = ("audio_s_per_cpu_s with one thread is the per-core rate; the functionals "
                   "(numpy, per signal) run on the CPU in every mode")
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse options, run the benchmarks and print the JSON object."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=["opensmile", "torch", "both"], default="opensmile")
    p.add_argument("--seconds", type=float, default=60.0, help="length of each signal")
    p.add_argument("--n", type=int, default=4, help="signals for the one-process figure")
    p.add_argument("--workers", type=int, default=None,
                   help="processes of the pool figure (default: the CPUs this process may use)")
    p.add_argument("--long-s", type=float, default=600.0,
                   help="long-track memory check length (0: skip)")
    args = p.parse_args(argv)
    if args.workers is None:
        from atrisk.extract.resources import usable_cpus

        args.workers = usable_cpus()
    result: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "platform": platform.platform()}}
    if args.backend in ("opensmile", "both"):
        result["opensmile"] = bench_opensmile(args.seconds, args.n, args.workers, args.long_s)
    if args.backend in ("torch", "both"):
        result["torch"] = bench_torch(args)
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
