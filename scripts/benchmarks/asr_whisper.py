"""Word/character error rates and CPU real-time factor of the Whisper and pocketsphinx backends.

Two measurements, each written as JSON:

``sets``
    Every public speech set with transcripts under ``<data>/speech``:
    ``speechbrain`` (the 10 transcribed utterances of speechbrain's
    ``tests/samples/ASR``, 2 adult speakers; transcripts from
    ``annotation/ASR_{train,dev}.json``), ``kids`` (speechocean762, 240
    utterances, 12 children aged 6-12, ``transcripts.tsv``) and ``jfk``
    (``jfk.flac`` with its known text).  Each utterance is decoded to 16 kHz,
    transcribed by each variant, and scored with :func:`atrisk.asr.evaluate.score`
    (both sides normalised by :func:`atrisk.asr.normalize.normalize_text`):
    corpus WER/CER with their counts, a 95 % bootstrap interval of the WER over
    utterances (and over speakers when there are more than 2), per speaker, a
    secondary WER/CER with digits written as English words on both sides
    (``numbers_spelled``: Whisper writes "6 7 8 9" where the references say "six
    seven eight nine"), and ``cpu_rtf`` = CPU seconds of this process (all
    threads) / audio seconds.

``longtrack``
    One two-speaker track of ``--minutes`` (3) built from the same data (an
    adult utterance, a pause, a child's utterance, a pause, ...; the adults'
    11 and the children's 240 utterances in a cycle; pauses 0.4-2.0 s from a
    seeded generator), written as WAV to a temp folder; each variant runs in
    its own child process (``transcribe_file``), which reports its CPU time, wall
    time, peak RSS (``VmHWM``: model, VAD, torch and the track) and the WER of
    the joined text against the joined references.

Variants: ``whisper-vad`` (default segmentation: atrisk VAD segments packed into
windows of at most 20 s, ``-cN``: N s), ``whisper-vadsingle`` (one VAD segment per window),
``whisper-builtin`` (faster-whisper's own VAD and chunking), ``whisper-whole``
(no VAD: the whole signal to ``WhisperModel.transcribe``), each with ``-b1`` /
``-b5`` for the beam width and optionally ``-bsN`` for the batch size, and
``pocketsphinx``.

The machine may be shared: the load average is recorded before and after each
run; compare ``cpu_rtf``, not wall-clock figures.

Usage (repository root)::

    .venv/bin/python scripts/benchmarks/asr_whisper.py sets --out docs/results/asr_whisper_sets.json
        [--data ../shared/data] [--sets speechbrain,kids,jfk] [--variants whisper-vad-b1,...]
        [--per-speaker N]
    .venv/bin/python scripts/benchmarks/asr_whisper.py longtrack \
        --out docs/results/asr_whisper_longtrack.json [--minutes 3]
    .venv/bin/python scripts/benchmarks/asr_whisper.py compare whisper-vad-b1 --hyps DIR \
        --out docs/results/asr_whisper_paired.json   # paired bootstrap of WER differences
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
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
JFK_TEXT = ("And so my fellow Americans, ask not what your country can do for you, "
            "ask what you can do for your country.")
DEFAULT_VARIANTS = ("whisper-vad-b1", "whisper-vad-b5", "whisper-vadsingle-b1",
                    "whisper-builtin-b1", "whisper-whole-b1", "pocketsphinx")
FILES_PER_BATCH = 16
N_BOOT = 2000


# ----------------------------------------------------------------------------- data
def speechbrain_rows(data: Path) -> list[tuple[Path, str, str]]:
    """``(wav, speaker, text)`` of the transcribed speechbrain ASR samples."""
    root = data / "speech" / "speechbrain" / "tests" / "samples"
    rows = []
    for name in ("ASR_train.json", "ASR_dev.json"):
        with (root / "annotation" / name).open(encoding="utf-8") as fh:
            for v in json.load(fh).values():
                wav = Path(v["wav"].replace("{data_root}", str(root / "ASR")))
                rows.append((wav, v["spk_id"], v["wrd"]))
    return sorted(rows)


def kids_rows(data: Path) -> list[tuple[Path, str, str]]:
    """``(wav, speaker, text)`` of speechocean762 kids (via atrisk's manifest reader)."""
    from atrisk.asr.evaluate import read_manifest

    rows, errors = read_manifest(data / "speech" / "speechocean762_kids" / "transcripts.tsv")
    if errors:
        raise SystemExit(f"manifest errors: {errors[:3]}")
    return [(r.path, r.speaker, r.text) for r in rows]


def jfk_rows(data: Path) -> list[tuple[Path, str, str]]:
    """The one jfk.flac row."""
    return [(data / "speech" / "jfk.flac", "jfk", JFK_TEXT)]


SETS = {"speechbrain": speechbrain_rows, "kids": kids_rows, "jfk": jfk_rows}


def per_speaker_limit(rows: list[tuple[Path, str, str]], n: int) -> list[tuple[Path, str, str]]:
    """The first ``n`` rows of each speaker (0: all)."""
    if n <= 0:
        return rows
    seen: dict[str, int] = {}
    out = []
    for r in rows:
        if seen.get(r[1], 0) < n:
            out.append(r)
            seen[r[1]] = seen.get(r[1], 0) + 1
    return out


# -------------------------------------------------------------------------- variants
def variant_kwargs(variant: str, threads: int | None) -> tuple[str, dict]:
    """``whisper-<mode>-b<beam>[-bs<batch>][-c<max_chunk_s>][-ts]`` -> (mode, arguments).

    ``-ts`` (Whisper's timestamps inside windows) is not a ``from_pretrained``
    argument: it is returned as ``kwargs["timestamps"]`` and set on the transcriber.
    """
    _, mode, beam, *rest = variant.split("-")
    kwargs: dict = {"device": "cpu", "beam_size": int(beam.lstrip("b")), "cpu_threads": threads}
    for r in rest:
        if r.startswith("bs"):
            kwargs["batch_size"] = int(r[2:])
        elif r.startswith("c"):
            kwargs["max_chunk_s"] = float(r[1:])
        elif r == "ts":
            kwargs["timestamps"] = True
    if mode == "builtin":
        kwargs["segmentation"] = "builtin"
    elif mode == "vadsingle":
        kwargs["max_chunk_s"] = 0.0
    return mode, kwargs


def make_whisper(kwargs: dict):
    """``WhisperTranscriber.from_pretrained(**kwargs)`` plus the ``timestamps`` switch."""
    from atrisk.asr.whisper import WhisperTranscriber

    kwargs = dict(kwargs)
    timestamps = kwargs.pop("timestamps", False)
    t = WhisperTranscriber.from_pretrained(**kwargs)
    t.timestamps = timestamps
    return t


def load_variant(variant: str, threads: int | None):
    """Return ``(transcribe_batch_fn, name)`` for a variant name."""
    if variant == "pocketsphinx":
        from atrisk.asr.sphinx import PocketsphinxTranscriber

        t = PocketsphinxTranscriber()
        return t.transcribe_batch, t.name

    mode, kwargs = variant_kwargs(variant, threads)
    t = make_whisper(kwargs)
    if mode == "whole":
        def fn(signals, sr):
            return [t.transcribe_whole(x, sr) for x in signals]
        return fn, t.name
    return t.transcribe_batch, t.name


# ---------------------------------------------------------------------------- scoring
_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """English words of 0 <= n < 10**9 (``21`` -> ``"twenty one"``)."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, word in ((10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            rest = n % size
            return (number_words(n // size) + " " + word
                    + ("" if rest == 0 else " " + number_words(rest)))
    raise ValueError(n)  # pragma: no cover


def spell_numbers(text: str) -> str:
    """Normalise ``text`` and write every run of digits as English words (secondary WER)."""
    import re

    from atrisk.asr.normalize import normalize_text

    def words(m: re.Match) -> str:
        n = int(m.group(0))
        return number_words(n) if n < 10**9 else " ".join(_ONES[int(d)] for d in m.group(0))

    return re.sub(r"\d+", words, normalize_text(text))


def boot_ci(errors: np.ndarray, words: np.ndarray, groups: np.ndarray | None,
            seed: int = 0) -> list[float]:
    """95 % percentile bootstrap interval of sum(errors)/sum(words), resampling units."""
    rng = np.random.default_rng(seed)
    if groups is not None:
        keys = np.unique(groups)
        e = np.array([errors[groups == k].sum() for k in keys])
        w = np.array([words[groups == k].sum() for k in keys])
    else:
        e, w = errors, words
    idx = rng.integers(0, e.size, size=(N_BOOT, e.size))
    rates = e[idx].sum(axis=1) / np.maximum(w[idx].sum(axis=1), 1)
    return [round(float(np.percentile(rates, 2.5)), 4), round(float(np.percentile(rates, 97.5)), 4)]


def score_rows(refs: list[str], hyps: list[str], speakers: list[str]) -> dict:
    """Corpus scores, bootstrap intervals and per-speaker scores."""
    from atrisk.asr.evaluate import score
    from atrisk.asr.normalize import normalize_text

    out = score(refs, hyps)
    per = [score([r], [h]) for r, h in zip(refs, hyps, strict=True)]
    err = np.array([p["substitutions"] + p["deletions"] + p["insertions"] for p in per], float)
    words = np.array([p["words"] for p in per], float)
    spk = np.array(speakers)
    out["wer_ci95_utterances"] = boot_ci(err, words, None)
    if len(set(speakers)) > 2:
        out["wer_ci95_speakers"] = boot_ci(err, words, spk)
    spelled = score([spell_numbers(r) for r in refs], [spell_numbers(h) for h in hyps])
    out["numbers_spelled"] = {k: spelled[k] for k in ("wer", "cer", "words", "substitutions",
                                                      "deletions", "insertions")}
    out["per_speaker"] = {
        s: score([r for r, k in zip(refs, speakers, strict=True) if k == s],
                 [h for h, k in zip(hyps, speakers, strict=True) if k == s])
        for s in sorted(set(speakers))
    }
    out["examples"] = [{"reference": normalize_text(r), "hypothesis": normalize_text(h)}
                       for r, h in list(zip(refs, hyps, strict=True))[:5]]
    return out


def run_sets(args: argparse.Namespace) -> dict:
    from atrisk.ingest.audio import load_audio

    data = Path(args.data)
    result: dict = {"machine": machine(), "data": str(data), "sets": {}}
    audio: dict[str, list[tuple[np.ndarray, str, str]]] = {}
    for name in args.sets.split(","):
        rows = per_speaker_limit(SETS[name](data), args.per_speaker)
        audio[name] = [(load_audio(p, sample_rate=SR), spk, text) for p, spk, text in rows]
    for variant in args.variants.split(","):
        t0 = time.perf_counter()
        fn, model_name = load_variant(variant, args.threads)
        load_s = time.perf_counter() - t0
        for name, items in audio.items():
            load0 = os.getloadavg()
            hyps, cpu, wall = [], 0.0, 0.0
            for k in range(0, len(items), FILES_PER_BATCH):
                batch = [x for x, _, _ in items[k : k + FILES_PER_BATCH]]
                c0, w0 = time.process_time(), time.perf_counter()
                out = fn(batch, SR)
                cpu += time.process_time() - c0
                wall += time.perf_counter() - w0
                hyps += [" ".join(s.text for s in segs) for segs in out]
            audio_s = sum(x.size for x, _, _ in items) / SR
            entry = score_rows([t for _, _, t in items], hyps, [s for _, s, _ in items])
            if args.hyps:
                Path(args.hyps).mkdir(parents=True, exist_ok=True)
                with (Path(args.hyps) / f"{name}_{variant}.tsv").open("w") as fh:
                    fh.write("speaker\treference\thypothesis\n")
                    for (_, spk, ref), hyp in zip(items, hyps, strict=True):
                        fh.write(f"{spk}\t{ref}\t{' '.join(hyp.split())}\n")
            entry.update({
                "asr_model": model_name, "variant": variant, "utterances": len(items),
                "audio_s": round(audio_s, 2), "cpu_s": round(cpu, 2),
                "cpu_rtf": round(cpu / audio_s, 4), "wall_s": round(wall, 2),
                "rtf": round(wall / audio_s, 4), "load_s": round(load_s, 2),
                "loadavg_before": [round(v, 2) for v in load0],
                "loadavg_after": [round(v, 2) for v in os.getloadavg()],
            })
            result["sets"].setdefault(name, {})[variant] = entry
            print(f"{name:12s} {variant:22s} WER {entry['wer']:.3f} ({entry['words']} words) "
                  f"CER {entry['cer']:.3f} cpu_rtf {entry['cpu_rtf']:.3f} "
                  f"load {load0[0]:.1f}", file=sys.stderr, flush=True)
            write(args.out, result)
    return result


# --------------------------------------------------------------------------- long track
def build_track(data: Path, minutes: float, path: Path, seed: int = 0) -> list[str]:
    """Write an adult/child alternating track of ``minutes``; return the references in order."""
    import soundfile as sf

    from atrisk.ingest.audio import load_audio

    rng = np.random.default_rng(seed)
    adults = speechbrain_rows(data) + jfk_rows(data)
    kids = kids_rows(data)
    kids = [kids[i] for i in rng.permutation(len(kids))]
    parts, refs, n, turn = [], [], 0, 0
    while n < minutes * 60 * SR:
        p, _, text = adults[(turn // 2) % len(adults)] if turn % 2 == 0 \
            else kids[(turn // 2) % len(kids)]
        x = load_audio(p, sample_rate=SR)
        pause = np.zeros(int(rng.uniform(0.4, 2.0) * SR), dtype=np.float32)
        parts += [x, pause]
        refs.append(text)
        n += x.size + pause.size
        turn += 1
    sf.write(path, np.concatenate(parts), SR, subtype="PCM_16")
    return refs


def child_longtrack(variant: str, track: str, threads: int | None) -> None:
    """Child process: transcribe ``track`` with ``variant``; print one JSON line."""
    t0 = time.perf_counter()
    c_start = time.process_time()
    if variant == "pocketsphinx":
        from atrisk.asr.sphinx import PocketsphinxTranscriber

        t = PocketsphinxTranscriber()
        run = t.transcribe_file
    else:

        mode, kwargs = variant_kwargs(variant, threads)
        t = make_whisper(kwargs)
        if mode == "whole":
            from atrisk.ingest.audio import load_audio

            def run(p):
                return t.transcribe_whole(load_audio(p, sample_rate=SR), SR)
        else:
            run = t.transcribe_file
    load_s, load_cpu = time.perf_counter() - t0, time.process_time() - c_start
    load0 = os.getloadavg()
    c0, w0 = time.process_time(), time.perf_counter()
    segs = run(track)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    print(json.dumps({
        "asr_model": t.name, "load_s": round(load_s, 2), "load_cpu_s": round(load_cpu, 2),
        "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
        "peak_rss_mb": peak_rss_mb(),
        "segments": len(segs), "hypothesis": " ".join(s.text for s in segs),
        "timings": {k: round(v, 2) for k, v in getattr(t, "timings", {}).items()},
        "loadavg_before": [round(v, 2) for v in load0],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
    }))


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MB), from ``VmHWM``.

    ``ru_maxrss`` is not used: Linux keeps it across ``execve``, so a child
    started by a big parent would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_longtrack(args: argparse.Namespace) -> dict:
    import soundfile as sf

    from atrisk.asr.evaluate import score

    result: dict = {"machine": machine(), "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        track = Path(tmp) / "two_speakers.wav"
        refs = build_track(Path(args.data), args.minutes, track)
        audio_s = sf.info(str(track)).duration
        result["track"] = {"audio_s": round(audio_s, 2), "turns": len(refs),
                           "made_of": "alternating adult (speechbrain ASR samples, jfk.flac) "
                                      "and child (speechocean762 kids, seeded order) utterances, "
                                      "pauses uniform 0.4-2.0 s (seed 0)"}
        for variant in args.variants.split(","):
            cmd = [sys.executable, __file__, "_child", variant, str(track)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                result["variants"][variant] = {"error": proc.stderr[-2000:]}
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            s = score([" ".join(refs)], [r.pop("hypothesis")])
            r.update({k: s[k] for k in ("wer", "cer", "words", "substitutions", "deletions",
                                        "insertions", "chars", "char_errors")})
            r["cpu_rtf"] = round(r["cpu_s"] / audio_s, 4)
            r["rtf"] = round(r["wall_s"] / audio_s, 4)
            result["variants"][variant] = r
            print(f"longtrack {variant:22s} WER {r['wer']:.3f} ({r['words']} words) "
                  f"cpu_rtf {r['cpu_rtf']:.3f} peak RSS {r['peak_rss_mb']} MB",
                  file=sys.stderr, flush=True)
            write(args.out, result)
    return result


# ----------------------------------------------------------------------------- paired
def _errors(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-utterance word errors, reference words and speakers of a hypotheses TSV."""
    import csv

    from atrisk.asr.evaluate import score

    with path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    per = [score([r["reference"]], [r["hypothesis"]]) for r in rows]
    e = np.array([p["substitutions"] + p["deletions"] + p["insertions"] for p in per], float)
    return e, np.array([p["words"] for p in per], float), np.array([r["speaker"] for r in rows])


def run_compare(args: argparse.Namespace) -> dict:
    """Paired bootstrap of WER differences between variants, from the ``--hyps`` TSV files."""
    base = args.rest[0]
    folder = Path(args.hyps)
    result: dict = {"baseline": base, "n_boot": N_BOOT, "pairs": {}}
    for name in args.sets.split(","):
        e0, w, spk = _errors(folder / f"{name}_{base}.tsv")
        for variant in args.variants.split(","):
            if variant == base or not (folder / f"{name}_{variant}.tsv").is_file():
                continue
            e1, w1, _ = _errors(folder / f"{name}_{variant}.tsv")
            assert np.array_equal(w, w1)  # same utterances in the same order
            rng = np.random.default_rng(0)
            idx = rng.integers(0, w.size, size=(N_BOOT, w.size))
            d = (e1[idx].sum(1) - e0[idx].sum(1)) / w[idx].sum(1)
            entry = {"wer_base": round(float(e0.sum() / w.sum()), 4),
                     "wer_variant": round(float(e1.sum() / w.sum()), 4),
                     "diff": round(float((e1.sum() - e0.sum()) / w.sum()), 4),
                     "diff_ci95_utterances": [round(float(np.percentile(d, 2.5)), 4),
                                              round(float(np.percentile(d, 97.5)), 4)],
                     "words": int(w.sum()), "utterances": int(w.size)}
            keys = np.unique(spk)
            if keys.size > 2:
                es0 = np.array([e0[spk == k].sum() for k in keys])
                es1 = np.array([e1[spk == k].sum() for k in keys])
                ws = np.array([w[spk == k].sum() for k in keys])
                idx = rng.integers(0, keys.size, size=(N_BOOT, keys.size))
                d = (es1[idx].sum(1) - es0[idx].sum(1)) / ws[idx].sum(1)
                entry["diff_ci95_speakers"] = [round(float(np.percentile(d, 2.5)), 4),
                                               round(float(np.percentile(d, 97.5)), 4)]
                entry["speakers_better"] = int(((es1 - es0) < 0).sum())
                entry["speakers_worse"] = int(((es1 - es0) > 0).sum())
            result["pairs"].setdefault(name, {})[variant] = entry
    write(args.out, result)
    return result


# ----------------------------------------------------------------------------- common
def machine() -> dict:
    """Facts about the machine and the packages."""
    import ctranslate2
    import faster_whisper

    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "faster_whisper": faster_whisper.__version__, "ctranslate2": ctranslate2.__version__,
            "loadavg_start": [round(v, 2) for v in os.getloadavg()],
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def write(out: str | None, result: dict) -> None:
    """Write ``result`` to ``out`` (JSON) when given."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    """Command line entry (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("sets", "longtrack", "compare", "_child"))
    ap.add_argument("rest", nargs="*")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--sets", default="speechbrain,jfk,kids")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    ap.add_argument("--per-speaker", type=int, default=0, help="first N utterances per speaker")
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--hyps", default=None, help="folder for per-utterance hypotheses (TSV)")
    args = ap.parse_args(argv)
    if args.what == "_child":
        child_longtrack(args.rest[0], args.rest[1], args.threads)
        return
    run = {"sets": run_sets, "longtrack": run_longtrack, "compare": run_compare}[args.what]
    result = run(args)
    if not args.out:
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
