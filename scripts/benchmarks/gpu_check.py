"""One GPU check: ASR, prosody, openSMILE and end-to-end throughput in one JSON (<= 8 min).

Run it on a CUDA machine with ``scripts/benchmarks/gpu_check.sh --out FILE`` (it calls
this file).  Every section runs in its own child process with its own time cap (so one
that hangs or fails is recorded and the others still run; the caps add up to at most
:data:`BUDGET_S`):

``environment``
    torch / CUDA / CTranslate2 versions and the GPU.
``whisper``
    The bundled Whisper tiny.en through the Whisper backend (faster-whisper, VAD, batched
    decoding; CUDA ``int8_float16``, batch 16) on an espeak-ng track with pauses:
    audio-s/s, and the model-only ceiling (encoder + greedy decoding of full 30 s windows
    of the same track, batched, no VAD or I/O) and the ratio of the two.
``wav2vec2``
    ``bench_asr.py`` (this folder): a randomly initialised Wav2Vec2ForCTC of
    wav2vec2-base geometry built here with ``save_pretrained`` (no weights can be
    downloaded offline; the compute is that of the real checkpoint, the text is
    meaningless), whole ASR stage audio-s/s and the model-only ceiling.
``prosody_torch``
    ``bench_prosody.bench_torch``: the torch prosody backend on one CPU thread, all CPU
    threads and a CUDA batch of 64.
``gpu_tests``
    ``pytest -m gpu`` on the test files that hold GPU tests (CUDA vs CPU agreement of
    the torch prosody features, CUDA Wav2Vec2 decoding, bf16 fine-tuning of Wav2Vec2 and of
    the whole Whisper model): counts of passed / failed / skipped.
``opensmile``
    openSMILE eGeMAPS functionals in a pool of 1, 4, 8 and 16 processes (2 signals per
    process): audio-s/s for each.
``extract_ray``
    ``bench_extract.py --engine ray`` on generated two-track classes: end-to-end
    audio-s/s of ``atrisk extract`` (with Whisper when the registry has it, else the
    transcripts the generator writes).

``--dry-run`` runs the same code on the CPU at tiny sizes (a short track, the small
Wav2Vec2 geometry, 1 and 2 openSMILE processes, one short class), so a typo shows up
before the first GPU run; a default-suite test runs it.  The JSON has ``dry_run``,
``budget_s``, ``wall_s``, ``machine`` and ``sections`` (each: ``status`` ``ok`` /
``error`` / ``timeout``, ``wall_s``, ``cap_s``, and ``result`` or ``error``).

Usage (repository root)::

    scripts/benchmarks/gpu_check.sh --out docs/results/gpu_check.json
    scripts/benchmarks/gpu_check.sh --dry-run --out /tmp/gpu_check_dry.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SR = 16000
#: Seconds the whole check may take (the issue allows 8 minutes; a margin for start-up).
BUDGET_S = 450
#: Time cap of each section (seconds); they add up to BUDGET_S.
CAPS_S = {"environment": 20, "whisper": 80, "wav2vec2": 70, "prosody_torch": 40,
          "gpu_tests": 70, "opensmile": 60, "extract_ray": 110}
SECTIONS = tuple(CAPS_S)
#: Files holding ``@pytest.mark.gpu`` tests.
GPU_TEST_FILES = ("tests/extractors/prosody/test_prosody_torch.py", "tests/asr/test_wav2vec2.py",
                  "tests/asr/test_finetune.py", "tests/asr/test_finetune_whisper.py")


def _sizes(dry: bool) -> dict:
    """Workload sizes: real ones on the GPU machine, tiny ones for the dry run."""
    if dry:
        return {"track_minutes": 0.15, "whisper_batch": 2, "ceiling_windows": 1,
                "w2v2": ["--geometry", "small", "--batch-size", "2", "--ceiling-seconds", "2",
                         "--ceiling-repeat", "1", "--device", "cpu"],
                "prosody_seconds": 2.0, "prosody_n": 1, "opensmile_workers": [1, 2],
                "opensmile_seconds": 1.0, "extract": ["--sessions", "1", "--class-seconds", "8",
                                                      "--device", "cpu"]}
    return {"track_minutes": 5.0, "whisper_batch": 16, "ceiling_windows": 16,
            "w2v2": ["--geometry", "base", "--batch-size", "16", "--device", "cuda"],
            "prosody_seconds": 60.0, "prosody_n": 8, "opensmile_workers": [1, 4, 8, 16],
            "opensmile_seconds": 30.0, "extract": ["--sessions", "8", "--class-seconds", "120",
                                                   "--device", "auto"]}


def _bench(name: str):
    """Import a sibling benchmark module (``bench_asr``, ``bench_prosody``)."""
    import importlib

    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    return importlib.import_module(name)


def _child_json(cmd: list[str], timeout: float) -> dict:
    """Run a benchmark script, return the JSON object its stdout ends with."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:3])} exited {proc.returncode}: "
                           f"{proc.stderr.strip()[-1500:]}")
    text = proc.stdout
    return json.loads(text[text.index("{"):])


# ------------------------------------------------------------------ sections
def sec_environment(dry: bool, work: Path, cap: float) -> dict:
    """Versions and the device."""
    import ctranslate2
    import torch

    cuda = torch.cuda.is_available()
    return {"torch": torch.__version__, "cuda_available": cuda,
            "cuda_version": torch.version.cuda,
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "gpu_memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
            if cuda else None,
            "ctranslate2": ctranslate2.__version__,
            "ctranslate2_cuda_devices": ctranslate2.get_cuda_device_count(),
            "cpus": os.cpu_count()}


def sec_whisper(dry: bool, work: Path, cap: float) -> dict:
    """Whisper backend throughput on a track and the model-only ceiling."""
    import ctranslate2
    import soundfile as sf
    from faster_whisper.audio import pad_or_trim

    from atrisk.asr.whisper import WhisperTranscriber

    sz = _sizes(dry)
    cuda = not dry and ctranslate2.get_cuda_device_count() > 0
    device, compute = ("cuda", "int8_float16") if cuda else ("cpu", "int8")
    track = work / "track.flac"
    meta = _bench("bench_asr").make_track(track, sz["track_minutes"] * 60)
    t0 = time.perf_counter()
    tr = WhisperTranscriber.from_pretrained(None, device=device, compute_type=compute,
                                            batch_size=sz["whisper_batch"])
    load_s = time.perf_counter() - t0
    tr.transcribe_signal(np.zeros(SR, np.float32))  # warm-up
    tr.timings.clear()
    t0 = time.perf_counter()
    segments = tr.transcribe_file(track)
    wall = time.perf_counter() - t0
    # model only: encoder + greedy decoding of full 30 s windows, batched, features ready
    x, _ = sf.read(track, dtype="float32")
    n = sz["ceiling_windows"]
    win = 30 * SR
    chunks = [x[(k * win) % max(1, x.size - win):][:win] for k in range(n)]
    feats = np.stack([pad_or_trim(tr.model.feature_extractor(c)[..., :-1]) for c in chunks])
    tok = tr.model.hf_tokenizer
    prompt = [tok.token_to_id("<|startoftranscript|>"), tok.token_to_id("<|notimestamps|>")]
    enc = tr.model.encode(feats[:1])  # warm-up
    tr.model.model.generate(enc, [prompt], beam_size=1, max_length=32)
    t0 = time.perf_counter()
    enc = tr.model.encode(feats)
    res = tr.model.model.generate(enc, [prompt] * n, beam_size=1, max_length=224)
    ceil_wall = time.perf_counter() - t0
    words = sum(len(r.sequences_ids[0]) for r in res)
    rate = meta["track_s"] / wall
    ceiling = n * 30 / ceil_wall
    return {"device": device, "compute_type": compute, "batch_size": sz["whisper_batch"],
            "beam_size": tr.beam_size, "model": tr.name, "track_s": meta["track_s"],
            "speech_fraction": meta["speech_fraction"], "utterances": len(segments),
            "model_load_s": round(load_s, 2), "wall_s": round(wall, 2),
            "audio_s_per_s": round(rate, 2),
            "stages_s": {k: round(v, 2) for k, v in tr.timings.items()},
            "model_only": {"windows": n, "window_s": 30, "wall_s": round(ceil_wall, 2),
                           "tokens": words, "audio_s_per_s": round(ceiling, 2),
                           "what": "encode + greedy generate on ready log-mel windows"},
            "ratio_to_model_ceiling": round(rate / ceiling, 3),
            "note": "the whole stage can beat the ceiling: the VAD skips the pauses"}


def sec_wav2vec2(dry: bool, work: Path, cap: float) -> dict:
    """bench_asr.py: random wav2vec2-base geometry, whole stage and model-only ceiling."""
    sz = _sizes(dry)
    out = _child_json([sys.executable, str(HERE / "bench_asr.py"), "--minutes",
                       str(sz["track_minutes"]), "--workdir", str(work / "w2v2"), *sz["w2v2"]],
                      timeout=cap - 2)
    out["weights"] = ("random (Wav2Vec2Config geometry, save_pretrained here): offline there "
                      "are no pretrained Wav2Vec2 weights; throughput only, text meaningless")
    return out


def sec_prosody_torch(dry: bool, work: Path, cap: float) -> dict:
    """bench_prosody.bench_torch: CPU one thread, all threads, CUDA batch 64."""
    sz = _sizes(dry)
    return _bench("bench_prosody").bench_torch(
        argparse.Namespace(seconds=sz["prosody_seconds"], n=sz["prosody_n"]))


def sec_gpu_tests(dry: bool, work: Path, cap: float) -> dict:
    """pytest -m gpu: CUDA vs CPU agreement and the other GPU tests."""
    import re

    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
           "-rs", *GPU_TEST_FILES]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=cap - 2, check=False,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|"
                                                r"deselected)", tail)}
    if proc.returncode not in (0, 5) or counts.get("failed") or counts.get("error"):
        raise RuntimeError(f"pytest -m gpu exited {proc.returncode}: "
                           f"{proc.stdout.strip()[-2000:]}")
    return {"command": " ".join(cmd[1:]), "returncode": proc.returncode, "summary": tail,
            **{k: counts.get(k, 0) for k in ("passed", "failed", "skipped", "deselected")}}


def sec_opensmile(dry: bool, work: Path, cap: float) -> dict:
    """openSMILE functionals in pools of 1/4/8/16 processes (2 signals per process)."""
    from concurrent.futures import ProcessPoolExecutor

    bp = _bench("bench_prosody")
    sz = _sizes(dry)
    out: dict = {"signal_s": sz["opensmile_seconds"], "cpus": os.cpu_count(), "pools": {}}
    for w in sz["opensmile_workers"]:
        m = 2 * w
        with ProcessPoolExecutor(max_workers=w) as pool:
            list(pool.map(bp._one, [(99, 1.0)] * w))  # warm-up: one Smile per worker
            t0 = time.perf_counter()
            times = np.array(list(pool.map(bp._one, [(i, sz["opensmile_seconds"])
                                                     for i in range(m)])))
            wall = time.perf_counter() - t0
        audio = m * sz["opensmile_seconds"]
        out["pools"][str(w)] = {"processes": w, "signals": m, "audio_s": audio,
                                "audio_s_per_s": round(audio / wall, 1),
                                "audio_s_per_cpu_s_per_process": round(audio / times[:, 1].sum(),
                                                                       1),
                                "load_avg": [round(v, 2) for v in os.getloadavg()]}
    out["note"] = "wall clock incl. building each test signal in the worker"
    return out


def sec_extract_ray(dry: bool, work: Path, cap: float) -> dict:
    """bench_extract.py --engine ray: end-to-end audio-s/s of atrisk extract."""
    from atrisk.registry import ASR_BACKENDS

    sz = _sizes(dry)
    base = [sys.executable, str(HERE / "bench_extract.py"), "--engine", "ray", "--no-bound",
            "--data", str(work / "classes"), *sz["extract"]]
    asr = "whisper" if "whisper" in ASR_BACKENDS else "transcripts"
    t0 = time.perf_counter()
    try:
        out = _child_json([*base, "--asr-backend", asr], timeout=cap - 2)
    except RuntimeError as exc:
        if asr == "transcripts" or "invalid choice" not in str(exc):
            raise
        asr = "transcripts"  # bench_extract.py does not offer whisper yet
        out = _child_json([*base, "--asr-backend", asr],
                          timeout=cap - 2 - (time.perf_counter() - t0))
    out["asr_backend_used"] = asr
    return out


FUNCS = {"environment": sec_environment, "whisper": sec_whisper, "wav2vec2": sec_wav2vec2,
         "prosody_torch": sec_prosody_torch, "gpu_tests": sec_gpu_tests,
         "opensmile": sec_opensmile, "extract_ray": sec_extract_ray}


# ------------------------------------------------------------------ driver
def run_section(name: str, dry: bool, work: Path, cap: float) -> dict:
    """Run one section in a child process (own session, killed at the cap)."""
    out_file = work / f"{name}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--section", name,
           "--section-out", str(out_file), "--work", str(work), "--cap", str(cap)]
    if dry:
        cmd.append("--dry-run")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=cap)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the child and whatever it started (ray, pools)
        proc.communicate()
        return {"status": "timeout", "cap_s": cap, "wall_s": round(time.perf_counter() - t0, 1),
                "error": f"stopped after its {cap:.0f} s cap"}
    wall = round(time.perf_counter() - t0, 1)
    if proc.returncode == 0 and out_file.is_file():
        return {"status": "ok", "cap_s": cap, "wall_s": wall,
                "result": json.loads(out_file.read_text())}
    return {"status": "error", "cap_s": cap, "wall_s": wall,
            "error": (err or "").strip()[-2000:] or f"exit code {proc.returncode}"}


def main(argv: list[str] | None = None) -> dict:
    """Run every section (or one, in a child) and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    ap.add_argument("--only", default=None, help="comma-separated sections (default: all)")
    ap.add_argument("--section", choices=SECTIONS, help=argparse.SUPPRESS)
    ap.add_argument("--section-out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cap", type=float, default=60.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.section:  # child: one section, result to --section-out
        result = FUNCS[args.section](args.dry_run, args.work, args.cap)
        args.section_out.write_text(json.dumps(result))
        return result
    names = SECTIONS if not args.only else tuple(s for s in args.only.split(",") if s)
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    t_start = time.perf_counter()
    out: dict = {"what": "GPU check (scripts/benchmarks/gpu_check.py)", "dry_run": args.dry_run,
                 "budget_s": BUDGET_S, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "platform": platform.platform(),
                             "load_avg_start": [round(v, 2) for v in os.getloadavg()]},
                 "sections": {}}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        for name in names:
            left = BUDGET_S - (time.perf_counter() - t_start)
            cap = min(CAPS_S[name], left)
            if cap < 5:
                out["sections"][name] = {"status": "timeout", "cap_s": 0, "wall_s": 0,
                                         "error": "no time left in the budget"}
                continue
            work = Path(tmp) / name
            work.mkdir()
            out["sections"][name] = res = run_section(name, args.dry_run, work, cap)
            print(f"{name}: {res['status']} in {res['wall_s']} s", file=sys.stderr)
    out["wall_s"] = round(time.perf_counter() - t_start, 1)
    out["machine"]["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    text = json.dumps(out, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return out


if __name__ == "__main__":
    main()
