"""Benchmark the Wav2Vec2 ASR stage on a generated classroom-like track; print JSON.

The model is a randomly initialised ``Wav2Vec2ForCTC`` of ``wav2vec2-base``
geometry (``Wav2Vec2Config()`` defaults: 7-layer 512-channel feature encoder,
12 x 768 transformer; same compute as the real checkpoint, whose weights cannot
be downloaded here) with a 32-token character vocabulary, saved with
``save_pretrained`` and loaded through the real path
(:meth:`~atrisk.asr.wav2vec2.Wav2Vec2Transcriber.from_pretrained`).  The track is
espeak-ng sentences separated by random pauses (0.3-3 s; about 70 % speech),
repeated to the asked length and written as FLAC under the temp folder.

Measured: the whole ASR stage of :meth:`transcribe_file` (decode + VAD +
features + model + CTC decode) as track seconds per wall second and RTF, the
per-stage split, and, separately, the model forward pass alone on random
batches of ``--batch-size`` x ``--ceiling-seconds`` (the model-only ceiling);
``ratio_to_model_ceiling`` = whole-stage audio-s/s / model-only audio-s/s (it can
exceed 1 because the VAD skips silence).  Peak memory: ``ru_maxrss`` of this
process (the model and track are built in child processes so they do not
count) and, on CUDA, ``torch.cuda.max_memory_allocated``.  The machine may be
shared: ``cpu_s`` (CPU time of this process), ``rtf_cpu`` (CPU seconds per audio
second, all threads summed), ``cpu_share`` (the share of its threads' cores the
process got: far below 1 means the wall-clock figures are inflated by other
load) and the load average are recorded.

A random model emits random characters, so the CTC decoding stage handles more
"words" than a trained model would; the text it produces is meaningless.

Usage (repository root)::

    .venv/bin/python scripts/benchmarks/bench_asr.py [--minutes 10] [--device auto|cpu|cuda]
        [--batch-size 8] [--threads N] [--quantize] [--geometry base|small]
    .venv/bin/python scripts/benchmarks/bench_asr.py --long-hours 3 --geometry small   # memory run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SR = 16000
SENTENCES = (
    "good morning everyone, please open your books at page twelve",
    "can you tell me what the answer to the second question is",
    "i think it is seven because three plus four is seven",
    "very good, now write it down in your notes",
    "why do you think the character left the village",
    "because she wanted to find her brother",
    "let us read the next paragraph together, slowly",
    "i do not understand this part, can you say that again",
)
VOCAB = list("abcdefghijklmnopqrstuvwxyz'")


def make_model(out: Path, geometry: str) -> None:
    """Save a random Wav2Vec2ForCTC (base or small geometry) with its processor to ``out``."""
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    out.mkdir(parents=True, exist_ok=True)
    tokens = ["<pad>", "<s>", "</s>", "<unk>", "|", *VOCAB]
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    tok = Wav2Vec2CTCTokenizer(str(out / "vocab.json"), word_delimiter_token="|")
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0,
                                  do_normalize=True, return_attention_mask=False)
    Wav2Vec2Processor(feature_extractor=fe, tokenizer=tok).save_pretrained(out)
    kw = {"vocab_size": len(tokens), "pad_token_id": 0}
    if geometry == "small":  # same 320x feature encoder layout, 4x fewer channels, 4 layers
        kw.update(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                  intermediate_size=1024, conv_dim=(128,) * 7)
    torch.manual_seed(0)
    Wav2Vec2ForCTC(Wav2Vec2Config(**kw)).save_pretrained(out)


def make_track(out: Path, seconds: float, seed: int = 0) -> dict:
    """Write ``seconds`` of espeak speech with pauses to ``out`` (FLAC), block by block."""
    import soundfile as sf

    from atrisk.testing import espeak_wav

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        clips = []
        for i, text in enumerate(SENTENCES):
            for voice_rate in (150, 185):
                path = espeak_wav(text, Path(tmp) / f"s{i}_{voice_rate}.wav")
                x, sr = sf.read(path, dtype="float32")
                if sr != SR:
                    raise RuntimeError(f"espeak wrote {sr} Hz")
                clips.append(x)
    total = int(seconds * SR)
    written = speech = 0
    with sf.SoundFile(str(out), "w", samplerate=SR, channels=1, format="FLAC") as f:
        while written < total:
            clip = clips[int(rng.integers(len(clips)))] * float(rng.uniform(0.3, 1.0))
            gap = np.zeros(int(rng.uniform(0.3, 3.0) * SR), dtype=np.float32)
            piece = np.concatenate([gap, clip])[: total - written]
            f.write(piece)
            written += piece.size
            speech += max(0, piece.size - gap.size)
    return {"track_s": written / SR, "speech_fraction": round(speech / written, 3)}


def _n_params(weights: Path) -> int:
    """Count the weights in a safetensors file (the float model, before any quantisation)."""
    from safetensors import safe_open

    with safe_open(str(weights), "np") as f:
        return sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())


def _child(flag: str, *args: str) -> dict:
    cmd = [sys.executable, __file__, flag, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1] or "{}")


def model_ceiling(tr, batch: int, seconds: float, repeat: int) -> dict:
    """Time the model forward pass alone (random input) on ``batch`` x ``seconds``."""
    import torch

    cuda = tr.device.startswith("cuda")
    x = torch.randn(batch, int(seconds * SR)).to(tr.device, dtype=tr.dtype)
    ctx = (lambda: torch.autocast("cuda", dtype=tr.dtype)) if cuda else torch.inference_mode
    with torch.inference_mode(), ctx():
        tr.model(x[:1])  # warm-up
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeat):
            tr.model(x).logits.float().softmax(-1).max(-1)
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    audio = batch * seconds * repeat
    return {"audio_s_per_s": round(audio / dt, 2), "batch": batch, "seconds_each": seconds,
            "repeat": repeat}


def main() -> None:
    """Parse the options, build model and track, run the benchmark, print JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="track length (minutes)")
    ap.add_argument("--long-hours", type=float, default=None,
                    help="memory mode: a track this many hours long (overrides --minutes)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: the CPUs this process may use)")
    ap.add_argument("--geometry", choices=("base", "small"), default="base")
    ap.add_argument("--quantize", action="store_true",
                    help="int8 dynamic quantisation of the Linear layers (CPU only)")
    ap.add_argument("--ceiling-seconds", type=float, default=None,
                    help="segment length of the model-only run (default: 30 on CUDA, 10 on CPU)")
    ap.add_argument("--ceiling-repeat", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=None, help="where model and track go")
    ap.add_argument("--make-model", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--make-track", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads is None:
        from atrisk.extract.resources import usable_cpus

        args.threads = usable_cpus()

    if args.make_model:
        make_model(args.make_model, args.geometry)
        print("{}")
        return
    if args.make_track:
        seconds = (args.long_hours * 3600) if args.long_hours else args.minutes * 60
        print(json.dumps(make_track(args.make_track, seconds)))
        return

    import torch

    from atrisk.asr.wav2vec2 import Wav2Vec2Transcriber
    from atrisk.config import ASRConfig

    torch.set_num_threads(args.threads)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_asr_"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir = work / f"w2v2-{args.geometry}"
    if not (model_dir / "model.safetensors").is_file():
        _child("--make-model", str(model_dir), "--geometry", args.geometry)
    hours = args.long_hours
    seconds = hours * 3600 if hours else args.minutes * 60
    track = work / f"track_{int(seconds)}s.flac"
    meta_file = track.with_suffix(".json")
    if not meta_file.is_file():
        length = ["--long-hours", str(hours)] if hours else ["--minutes", str(args.minutes)]
        meta_file.write_text(json.dumps(_child("--make-track", str(track), *length)))
    meta = json.loads(meta_file.read_text())

    config = ASRConfig(batch_size=args.batch_size)
    t_load = time.perf_counter()
    tr = Wav2Vec2Transcriber.from_pretrained(str(model_dir), device=args.device, config=config,
                                             quantize=args.quantize)
    load_s = time.perf_counter() - t_load
    cuda = tr.device.startswith("cuda")
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():  # warm-up (first-call allocations, kernel selection)
        tr.model(torch.zeros(1, SR, dtype=tr.dtype, device=tr.device))
    tr.timings.clear()
    load0 = os.getloadavg()[0]
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    segments = tr.transcribe_file(track)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stages = {k: round(v, 2) for k, v in tr.timings.items() if k not in ("segments", "batches")}
    audio_s = meta["track_s"]
    out = {
        "mode": "long" if hours else "throughput",
        "device": tr.device,
        "device_name": torch.cuda.get_device_name(tr.device) if cuda else platform.processor()
        or platform.machine(),
        "dtype": str(tr.dtype).replace("torch.", "") + (" + int8 dynamic Linear"
                                                          if args.quantize else ""),
        "geometry": args.geometry,
        "params_m": round(_n_params(model_dir / "model.safetensors") / 1e6, 1),
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "track_s": audio_s,
        "speech_fraction": meta["speech_fraction"],
        "segments": int(tr.timings.get("segments", 0)),
        "utterances": len(segments),
        "wall_s": round(wall, 2),
        "audio_s_per_s": round(audio_s / wall, 2),
        "rtf": round(wall / audio_s, 4),
        "cpu_s": round(cpu, 2),
        "rtf_cpu": round(cpu / audio_s, 4),
        "cpu_share": round(cpu / wall / max(1, torch.get_num_threads()), 3),
        "loadavg_1min_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "stages_s": stages,
        "model_load_s": round(load_s, 2),
        "peak_rss_mb": round(peak_rss, 1),
        "rss_after_load_mb": round(rss_loaded, 1),
    }
    if cuda:
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    if not hours:
        c_sec = args.ceiling_seconds or (30.0 if cuda else 10.0)
        c_rep = args.ceiling_repeat or (20 if cuda else 2)
        ceiling = model_ceiling(tr, args.batch_size, c_sec, c_rep)
        out["model_only"] = ceiling
        out["ratio_to_model_ceiling"] = round(out["audio_s_per_s"] / ceiling["audio_s_per_s"], 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
