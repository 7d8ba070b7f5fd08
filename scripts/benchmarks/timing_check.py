"""Check the ASR-free timing features (:mod:`atrisk.extractors.timing`) against transcripts.

Writes ``<out>/timing_features.json`` and ``<out>/timing_features.md``:

1. **speechocean762_kids** (240 read utterances, 12 child speakers, ``transcripts.tsv``):
   Spearman rho between the acoustic speaking rate ``speech_rate_syll_s`` and the
   transcript's letters per second of the utterance span (``librosa.effects.trim``,
   top_db 35), letters per second of the whole file, and text syllables (espeak-ng
   ``--ipa`` vowel groups) per second of span; rho between counted nuclei and text
   syllables.  Bootstrap 95 % CIs over utterances and over speakers (cluster).  The
   detector's settings were chosen on the first 6 speakers (sorted ids), espeak-ng
   sentences not used here and speechbrain's 10 utterances; the other 6 speakers are
   reported apart as held out.
2. **speechbrain samples**: the 10 aligned utterances (TIMIT-style phones): counted
   nuclei against vowel phones, rates against letters/s and vowels/s of the span;
   the 6 VAD examples: speech time and pause count against the annotated boundaries.
3. **synthetic cohort** (:func:`atrisk.synthetic.generate_cohort`, espeak-ng voices whose
   speed follows the class's engagement): per student utterance (cut at the true times)
   and per track (the whole track, speech found from the level, or from the true
   utterance times), rate against letters/s and against the true espeak-ng speed (wpm);
   pauses and speech ratio of the student track against the gaps between the student's
   true utterances.
4. **espeak-ng sweep**: 10 sentences x 7 speeds (80-260 wpm) x 2 voices: rho of the rate
   with the speed and with letters/s; the 220/110 wpm rate ratio per sentence.
5. **CPU cost**: CPU seconds per audio second of :meth:`TimingFeatures.process_signal`
   (utterances) and :meth:`TimingFeatures.process_stream` (a 10-minute track in 60 s
   blocks), with the machine's load average.

Command that made the committed results (from the repository root)::

    PYTHONPATH=$PWD .venv/bin/python scripts/benchmarks/timing_check.py --out docs/results

The data are read from ``../shared/data`` (``--data``); nothing is copied.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import soundfile as sf
from scipy.stats import spearmanr

from atrisk.extractors.timing import TimingConfig, TimingFeatures
from atrisk.synthetic import generate_cohort, student_speed
from atrisk.testing import espeak_wav

SR = 16000
#: IPA vowel letters; a run of them (with length marks) is one syllable nucleus.
IPA_VOWELS = set("aeiouyæɑɐɒɔəɘɚɛɜɝɞɤɨɪʊʉʌʏøœɶɵɯ")
#: TIMIT vowels and syllabic consonants (speechbrain's aligned phones).
TIMIT_NUCLEI = set("iy ih eh ey ae aa aw ay ah ao oy ow uh uw ux er ax ix axr ax-h el em en "
                   "eng".split())
#: Sentences of the espeak-ng sweep (none was used to choose the detector's settings).
SWEEP_TEXTS = (
    "the quick brown fox jumps over the lazy dog near the river bank",
    "seven times eight is fifty six and nine times nine is eighty one",
    "can you tell me what you did in school yesterday afternoon",
    "my sister likes to read books about dinosaurs and space",
    "we will practise adding fractions with different denominators",
    "I forgot my homework at home this morning",
    "the capital of france is paris",
    "open your notebook and write the date at the top of the page",
    "how many legs does a spider have",
    "photosynthesis turns sunlight water and carbon dioxide into sugar",
)
SWEEP_SPEEDS = (80, 110, 140, 170, 200, 230, 260)
SWEEP_VOICES = ("en-us", "en-us+f4")


# --------------------------------------------------------------------------- statistics


def letters(text: str) -> int:
    """Letters and digits of ``text`` (spaces and punctuation left out)."""
    return len(re.sub(r"[^0-9A-Za-z]", "", text))


def ipa_syllables(texts: Sequence[str]) -> list[int]:
    """Syllables of each text: runs of IPA vowels in espeak-ng's ``--ipa`` output."""
    out = []
    for text in texts:
        ipa = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", "en-us", text.lower()],
                             capture_output=True, text=True, check=True).stdout
        n, prev = 0, False
        for ch in ipa:
            vowel = ch in IPA_VOWELS
            if vowel and not prev:
                n += 1
            if ch in "ˈˌ \n":  # a stress mark or a space starts a new syllable
                prev = False
            elif ch != "ː":
                prev = vowel
        out.append(n)
    return out


def rho_ci(a: Sequence[float], b: Sequence[float], groups: Sequence[str] | None = None,
           n_boot: int = 2000, seed: int = 0) -> dict:
    """Spearman rho of ``a`` and ``b`` (finite pairs) with bootstrap 95 % CIs.

    Args:
        a: First variable.
        b: Second variable.
        groups: Cluster of each pair (e.g. speaker); when given, a second CI resamples
            whole clusters.
        n_boot: Bootstrap resamples.
        seed: Seed of the resampling.

    Returns:
        ``{"rho", "n", "ci95", "ci95_cluster", "n_clusters"}`` (CIs as ``[lo, hi]``).
    """
    x, y = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    out: dict = {"n": int(x.size), "rho": math.nan, "ci95": [math.nan, math.nan]}
    if x.size < 3:
        return out
    out["rho"] = round(float(spearmanr(x, y)[0]), 4)
    rng = np.random.default_rng(seed)

    def boot(index_sets: list[np.ndarray]) -> list[float]:
        vals = []
        for idx in index_sets:
            if np.ptp(x[idx]) > 0 and np.ptp(y[idx]) > 0:
                vals.append(spearmanr(x[idx], y[idx])[0])
        return [round(float(v), 4) for v in np.percentile(vals, [2.5, 97.5])]

    out["ci95"] = boot([rng.integers(0, x.size, x.size) for _ in range(n_boot)])
    if groups is not None:
        g = np.asarray(groups)[ok]
        members = [np.flatnonzero(g == k) for k in np.unique(g)]
        sets = []
        for _ in range(n_boot):
            pick = rng.integers(0, len(members), len(members))
            sets.append(np.concatenate([members[i] for i in pick]))
        out["ci95_cluster"] = boot(sets)
        out["n_clusters"] = len(members)
    return out


def mean_abs_rel(counted: Sequence[float], truth: Sequence[float]) -> dict:
    """Mean |counted/truth - 1| and mean signed relative error, with n."""
    c, t = np.asarray(counted, float), np.asarray(truth, float)
    ok = np.isfinite(c) & np.isfinite(t) & (t > 0)
    rel = c[ok] / t[ok] - 1
    return {"n": int(ok.sum()), "mean_abs_rel_error": round(float(np.mean(np.abs(rel))), 4),
            "mean_rel_error": round(float(np.mean(rel)), 4)}


class CpuMeter:
    """Accumulates CPU seconds of the timing calls and the audio seconds they covered."""

    def __init__(self) -> None:
        self.cpu_s = 0.0
        self.audio_s = 0.0

    def row(self, tf: TimingFeatures, x: np.ndarray, sr: int = SR, **kw) -> pd.Series:
        """Run ``tf.process_signal`` on ``x``, counting its CPU time."""
        c0 = time.process_time()
        r = tf.process_signal(x, sr, **kw)
        self.cpu_s += time.process_time() - c0
        self.audio_s += x.size / sr
        return r

    def summary(self) -> dict:
        """CPU seconds per audio second over everything measured."""
        return {"cpu_s": round(self.cpu_s, 3), "audio_s": round(self.audio_s, 2),
                "cpu_s_per_audio_s": round(self.cpu_s / max(self.audio_s, 1e-9), 5)}


# --------------------------------------------------------------------------- datasets


def speechocean(root: Path, tf: TimingFeatures, meter: CpuMeter, n_boot: int) -> dict:
    """Section 1: children's read speech with transcripts."""
    table = pd.read_csv(root / "transcripts.tsv", sep="\t")
    dev = set(sorted(table["speaker"].unique())[:6])
    rows = []
    for r in table.itertuples():
        x, sr = sf.read(root / r.path, dtype="float32")
        row = meter.row(tf, x, sr)
        _, (a, b) = librosa.effects.trim(x, top_db=35)
        rows.append({"path": r.path, "speaker": r.speaker, "age": r.age, "text": r.text,
                     "file_s": x.size / sr, "span_s": (b - a) / sr, **row.to_dict()})
    d = pd.DataFrame(rows)
    d["letters"] = d["text"].map(letters)
    d["text_syllables"] = ipa_syllables(list(d["text"]))
    d["letters_per_span_s"] = d["letters"] / d["span_s"]
    d["letters_per_file_s"] = d["letters"] / d["file_s"]
    d["text_syll_per_span_s"] = d["text_syllables"] / d["span_s"]
    out: dict = {"n_utterances": len(d), "n_speakers": int(d["speaker"].nunique()),
                 "dev_speakers": sorted(dev)}
    for part, sel in (("all", d), ("dev_speakers", d[d["speaker"].isin(dev)]),
                      ("held_out_speakers", d[~d["speaker"].isin(dev)])):
        rate = sel["speech_rate_syll_s"]
        out[part] = {
            "rate_vs_letters_per_span_s": rho_ci(rate, sel["letters_per_span_s"],
                                                 sel["speaker"], n_boot),
            "rate_vs_letters_per_file_s": rho_ci(rate, sel["letters_per_file_s"],
                                                 sel["speaker"], n_boot),
            "rate_vs_text_syll_per_span_s": rho_ci(rate, sel["text_syll_per_span_s"],
                                                   sel["speaker"], n_boot),
            "syllables_vs_text_syllables": rho_ci(sel["syllables"], sel["text_syllables"],
                                                  sel["speaker"], n_boot),
            "syllable_count_error": mean_abs_rel(sel["syllables"], sel["text_syllables"]),
        }
    # within speaker: rho over each speaker's 20 utterances, then the mean
    within = [spearmanr(g["speech_rate_syll_s"], g["letters_per_span_s"])[0]
              for _, g in d.groupby("speaker")]
    out["within_speaker_rate_vs_letters_per_span_s"] = {
        "n_speakers": len(within), "mean_rho": round(float(np.mean(within)), 4),
        "min_rho": round(float(np.min(within)), 4), "max_rho": round(float(np.max(within)), 4)}
    out["medians"] = {c: round(float(d[c].median()), 3) for c in (
        "speech_rate_syll_s", "syllables", "text_syllables", "letters_per_span_s",
        "speech_ratio", "pause_count")}
    return out


def speechbrain(root: Path, tf: TimingFeatures, meter: CpuMeter, n_boot: int) -> dict:
    """Section 2: aligned read utterances and VAD examples."""
    ann: dict = {}
    for name in ("ASR_train.json", "ASR_dev.json"):
        ann.update(json.loads((root / "annotation" / name).read_text()))
    rows = []
    for key, item in ann.items():
        x, sr = sf.read(root / "ASR" / f"{key}.wav", dtype="float32")
        row = meter.row(tf, x, sr)
        phones = item["phn"].split()
        _, (a, b) = librosa.effects.trim(x, top_db=35)  # 2 of 10 have no phone times
        span = (b - a) / sr
        vowels = sum(p in TIMIT_NUCLEI for p in phones)
        rows.append({"key": key, "vowels": vowels, "span_s": span,
                     "letters": letters(item["wrd"]), **row.to_dict()})
    d = pd.DataFrame(rows)
    out = {
        "asr_utterances": {
            "n": len(d),
            "syllable_count_error_vs_vowel_phones": mean_abs_rel(d["syllables"], d["vowels"]),
            "rate_vs_vowels_per_span_s": rho_ci(d["speech_rate_syll_s"],
                                                        d["vowels"] / d["span_s"],
                                                        n_boot=n_boot),
            "rate_vs_letters_per_span_s": rho_ci(d["speech_rate_syll_s"],
                                                         d["letters"] / d["span_s"],
                                                         n_boot=n_boot),
            "used_to_choose_settings": True,
        }
    }
    vad = []
    for name in ("VAD_train.json", "VAD_dev.json"):
        for key, item in json.loads((root / "annotation" / name).read_text()).items():
            wav = root / "VAD" / Path(item["wav"]["file"]).name
            x, sr = sf.read(wav, dtype="float32", start=item["wav"]["start"],
                            stop=item["wav"]["stop"])
            bounds = [float(v) for v in item["speech"].split()]
            segs = list(zip(bounds[::2], bounds[1::2], strict=True))
            ref_speech = sum(b - a for a, b in segs)
            ref_pauses = sum(1 for i in range(len(segs) - 1)
                             if segs[i + 1][0] - segs[i][1] >= tf.config.min_pause_s)
            row = meter.row(tf, x, sr)
            vad.append({"example": f"{Path(name).stem}/{key}", "ref_speech_s": ref_speech,
                        "speech_s": None if math.isnan(row["speech_s"]) else
                        round(float(row["speech_s"]), 3),
                        "ref_pauses": ref_pauses,
                        "pause_count": None if math.isnan(row["pause_count"]) else
                        int(row["pause_count"])})
    out["vad_examples"] = vad
    return out


def cohort(folder: Path, tf: TimingFeatures, meter: CpuMeter, n_students: int, seed: int,
           n_boot: int) -> dict:
    """Section 3: the synthetic cohort's espeak-ng classes."""
    t0 = time.perf_counter()
    summary = generate_cohort(folder, n_students=n_students, seed=seed)
    gen_s = time.perf_counter() - t0
    utt = pd.read_csv(folder / "utterances.csv")
    truth = json.loads((folder / "ground_truth.json").read_text())
    eng = {s["student_id"]: s["class_engagement"] for s in truth["students"]}

    def wpm(session_id: str) -> int:
        student, cls = session_id.rsplit("-C", 1)
        return student_speed(eng[student][int(cls) - 1])

    # per student utterance, cut at its true times
    tracks: dict[tuple[str, str], np.ndarray] = {}
    for sid in utt["session_id"].unique():
        for track in ("teacher", "student"):
            tracks[(sid, track)] = sf.read(folder / "recordings" / sid / f"{track}.wav",
                                           dtype="float32")[0]
    rows = []
    for u in utt[utt["speaker"] == "student"].itertuples():
        x = tracks[(u.session_id, "student")]
        cut = x[int(round(u.start_s * SR)):int(round(u.end_s * SR))]
        row = meter.row(tf, cut)
        rows.append({"session_id": u.session_id, "text": u.text, "dur_s": u.end_s - u.start_s,
                     "wpm": wpm(u.session_id), **row.to_dict()})
    d = pd.DataFrame(rows)
    d["letters_per_s"] = d["text"].map(letters) / d["dur_s"]
    d["student"] = d["session_id"].str.split("-C").str[0]
    d["text_syllables"] = ipa_syllables(list(d["text"]))
    utterances = {
        "n": len(d), "n_students": int(d["student"].nunique()),
        "rate_vs_letters_per_s": rho_ci(d["speech_rate_syll_s"], d["letters_per_s"],
                                        d["student"], n_boot),
        "rate_vs_text_syll_per_s": rho_ci(d["speech_rate_syll_s"],
                                          d["text_syllables"] / d["dur_s"], d["student"],
                                          n_boot),
        "rate_vs_true_wpm": rho_ci(d["speech_rate_syll_s"], d["wpm"], d["student"], n_boot),
        "letters_per_s_vs_true_wpm": rho_ci(d["letters_per_s"], d["wpm"], d["student"],
                                            n_boot),
        "syllable_count_error": mean_abs_rel(d["syllables"], d["text_syllables"]),
    }
    # per track: whole track, speech from the level or from the true utterance times
    track_rows = []
    for (sid, track), x in tracks.items():
        mine = utt[(utt["session_id"] == sid) & (utt["speaker"] == track)].sort_values("start_s")
        segs = list(zip(mine["start_s"], mine["end_s"], strict=True))
        level = meter.row(tf, x)
        given = meter.row(tf, x, speech_segments=segs)
        gaps = np.array([segs[i + 1][0] - segs[i][1] for i in range(len(segs) - 1)])
        gaps = gaps[gaps >= tf.config.min_pause_s]
        dur = float((mine["end_s"] - mine["start_s"]).sum())
        track_rows.append({
            "session_id": sid, "track": track, "student": sid.split("-C")[0],
            "wpm": wpm(sid) if track == "student" else math.nan,
            "letters_per_s": mine["text"].map(letters).sum() / dur if dur else math.nan,
            "ref_speech_ratio": dur / (x.size / SR), "ref_pause_count": gaps.size,
            "ref_pause_mean_s": gaps.mean() if gaps.size else math.nan,
            **level.to_dict(), **given.add_prefix("given_").to_dict()})
    t = pd.DataFrame(track_rows)
    per_track = {}
    for track in ("student", "teacher"):
        s = t[t["track"] == track]
        rec = {
            "n_tracks": len(s),
            "rate_vs_letters_per_s": rho_ci(s["speech_rate_syll_s"], s["letters_per_s"],
                                            s["student"], n_boot),
            "rate_given_segments_vs_letters_per_s": rho_ci(
                s["given_speech_rate_syll_s"], s["letters_per_s"], s["student"], n_boot),
            "speech_ratio_vs_ref": rho_ci(s["speech_ratio"], s["ref_speech_ratio"],
                                          s["student"], n_boot),
            "speech_ratio_mean_abs_diff": round(float(
                (s["speech_ratio"] - s["ref_speech_ratio"]).abs().mean()), 4),
            "pause_count_vs_ref": rho_ci(s["pause_count"], s["ref_pause_count"],
                                         s["student"], n_boot),
            "pause_count_exact": f"{int((s['pause_count'] == s['ref_pause_count']).sum())}"
                                 f"/{int(s['pause_count'].notna().sum())}",
            "pause_count_minus_ref_median": float((s["pause_count"]
                                                   - s["ref_pause_count"]).median()),
            "pause_mean_vs_ref": rho_ci(s["pause_mean_s"], s["ref_pause_mean_s"],
                                        s["student"], n_boot),
            "nan_rows": int(s["speech_rate_syll_s"].isna().sum()),
        }
        if track == "student":
            rec["rate_vs_true_wpm"] = rho_ci(s["speech_rate_syll_s"], s["wpm"], s["student"],
                                             n_boot)
            rec["letters_per_s_vs_true_wpm"] = rho_ci(s["letters_per_s"], s["wpm"],
                                                      s["student"], n_boot)
        per_track[track] = rec
    return {"n_students": n_students, "seed": seed, "n_sessions": summary.n_sessions,
            "generate_s": round(gen_s, 1), "student_utterances": utterances,
            "tracks": per_track}


def sweep(folder: Path, tf: TimingFeatures, meter: CpuMeter, n_boot: int) -> dict:
    """Section 4: espeak-ng at 7 speeds."""
    rows = []
    for i, text in enumerate(SWEEP_TEXTS):
        for voice in SWEEP_VOICES:
            for speed in SWEEP_SPEEDS:
                path = espeak_wav(text, folder / f"{i}_{voice}_{speed}.wav", voice=voice,
                                  speed=speed)
                x, sr = sf.read(path, dtype="float32")
                row = meter.row(tf, x, sr)
                _, (a, b) = librosa.effects.trim(x, top_db=35)
                rows.append({"text": i, "voice": voice, "wpm": speed,
                             "letters_per_s": letters(text) / ((b - a) / sr), **row.to_dict()})
    d = pd.DataFrame(rows)
    ratio = (d[d["wpm"] == 230].set_index(["text", "voice"])["speech_rate_syll_s"]
             / d[d["wpm"] == 110].set_index(["text", "voice"])["speech_rate_syll_s"])
    by_speed = d.groupby("wpm")["speech_rate_syll_s"].median().round(3)
    return {
        "n": len(d), "texts": len(SWEEP_TEXTS), "speeds": list(SWEEP_SPEEDS),
        "voices": list(SWEEP_VOICES),
        "rate_vs_wpm": rho_ci(d["speech_rate_syll_s"], d["wpm"], d["text"], n_boot),
        "rate_vs_letters_per_s": rho_ci(d["speech_rate_syll_s"], d["letters_per_s"],
                                        d["text"], n_boot),
        "median_rate_by_wpm": {int(k): float(v) for k, v in by_speed.items()},
        "rate_ratio_230_vs_110": {"n": int(ratio.size), "median": round(float(ratio.median()), 3),
                                  "min": round(float(ratio.min()), 3),
                                  "max": round(float(ratio.max()), 3)},
        "pause_count_nonzero": f"{int((d['pause_count'] > 0).sum())}/{len(d)}",
    }


def stream_cost(folder: Path, tf: TimingFeatures) -> dict:
    """Section 5: a 10-minute track of cohort audio in 60-s blocks."""
    parts = [sf.read(p, dtype="float32")[0]
             for p in sorted((folder / "recordings").rglob("*.wav"))]
    x = np.concatenate(parts)
    reps = int(math.ceil(600 * SR / x.size))
    x = np.tile(x, reps)[:600 * SR]
    c0, w0 = time.process_time(), time.perf_counter()
    blocks = (x[i:i + 60 * SR] for i in range(0, x.size, 60 * SR))
    tf.process_stream(blocks, SR, "long", "student")
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {"audio_s": 600, "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
            "cpu_s_per_audio_s": round(cpu / 600, 5)}


# --------------------------------------------------------------------------- report


def _fmt(r: dict) -> str:
    s = f"{r['rho']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] (n={r['n']}"
    if "ci95_cluster" in r:
        s += (f"; by {r['n_clusters']} clusters [{r['ci95_cluster'][0]:.3f}, "
              f"{r['ci95_cluster'][1]:.3f}]")
    return s + ")"


def markdown(res: dict) -> str:
    """Render the results as the short ``timing_features.md``."""
    so, sb, co, sw = (res.get(k, {}) for k in ("speechocean762_kids", "speechbrain",
                                                 "synthetic_cohort", "espeak_sweep"))
    lines = [
        "# Timing features without words (librosa): checks",
        "",
        f"Made by `{res['command']}` ({res['date']}, {res['machine']}, load average "
        f"{res['loadavg_before']} before / {res['loadavg_after']} after).",
        "",
        "Spearman rho with bootstrap 95 % CI over items (and over speakers/students/texts as "
        "clusters where given); n = items with a finite value on both sides.",
        "",
    ]
    if so:
        lines += ["## speechocean762_kids (children's read speech, 240 utterances)", "",
                  "| set | rate vs letters/s (span) | rate vs letters/s (file) | "
                  "rate vs text syllables/s | nuclei vs text syllables | count error |",
                  "|---|---|---|---|---|---|"]
        for part in ("all", "dev_speakers", "held_out_speakers"):
            p = so[part]
            lines.append(
                f"| {part} | {_fmt(p['rate_vs_letters_per_span_s'])} | "
                f"{_fmt(p['rate_vs_letters_per_file_s'])} | "
                f"{_fmt(p['rate_vs_text_syll_per_span_s'])} | "
                f"{_fmt(p['syllables_vs_text_syllables'])} | "
                f"{p['syllable_count_error']['mean_rel_error']:+.2f} mean rel. |")
        w = so["within_speaker_rate_vs_letters_per_span_s"]
        lines += ["", f"Within speaker (20 utterances each): mean rho {w['mean_rho']:.3f} "
                  f"(min {w['min_rho']:.3f}, max {w['max_rho']:.3f}, {w['n_speakers']} "
                  "speakers).  The detector's settings were chosen on the dev speakers.", ""]
    if sb:
        a = sb["asr_utterances"]
        lines += ["## speechbrain samples", "",
                  f"- 10 aligned utterances: nuclei vs vowel phones, mean |rel. error| "
                  f"{a['syllable_count_error_vs_vowel_phones']['mean_abs_rel_error']:.3f}; "
                  f"rate vs vowels/s {_fmt(a['rate_vs_vowels_per_span_s'])}; rate vs "
                  f"letters/s {_fmt(a['rate_vs_letters_per_span_s'])} (used to choose "
                  "the settings)",
                  "- VAD examples (speech s / pauses, reference vs detected): " + "; ".join(
                      f"{v['example']}: {v['ref_speech_s']:.2f}/{v['ref_pauses']} vs "
                      f"{v['speech_s']}/{v['pause_count']}" for v in sb["vad_examples"]), ""]
    if co:
        u = co["student_utterances"]
        lines += [f"## Synthetic cohort ({co['n_students']} students, seed {co['seed']}, "
                  f"{co['n_sessions']} sessions)", "",
                  f"Student utterances: rate vs letters/s {_fmt(u['rate_vs_letters_per_s'])}; "
                  f"vs true espeak wpm {_fmt(u['rate_vs_true_wpm'])} (letters/s vs wpm: "
                  f"{_fmt(u['letters_per_s_vs_true_wpm'])}); count error "
                  f"{u['syllable_count_error']['mean_rel_error']:+.2f} mean rel.", "",
                  "| track | n | rate vs letters/s | rate (true segments) vs letters/s | "
                  "speech ratio vs true | pauses vs true (exact) | pause mean vs true |",
                  "|---|---|---|---|---|---|---|"]
        for track, r in co["tracks"].items():
            lines.append(
                f"| {track} | {r['n_tracks']} | {_fmt(r['rate_vs_letters_per_s'])} | "
                f"{_fmt(r['rate_given_segments_vs_letters_per_s'])} | "
                f"{_fmt(r['speech_ratio_vs_ref'])}, mean abs diff "
                f"{r['speech_ratio_mean_abs_diff']:.3f} | {_fmt(r['pause_count_vs_ref'])} "
                f"({r['pause_count_exact']}) | {_fmt(r['pause_mean_vs_ref'])} |")
        s = co["tracks"]["student"]
        lines += ["", f"Student track rate vs true wpm: {_fmt(s['rate_vs_true_wpm'])}; "
                  f"letters/s of the true utterances vs wpm: "
                  f"{_fmt(s['letters_per_s_vs_true_wpm'])}.", ""]
    if sw:
        r = sw["rate_ratio_230_vs_110"]
        lines += [f"## espeak-ng sweep ({sw['texts']} texts x {len(sw['speeds'])} speeds x "
                  f"{len(sw['voices'])} voices)", "",
                  f"rate vs wpm {_fmt(sw['rate_vs_wpm'])}; rate vs letters/s "
                  f"{_fmt(sw['rate_vs_letters_per_s'])}; rate ratio 230/110 wpm median "
                  f"{r['median']} (min {r['min']}, max {r['max']}, n={r['n']}); median rate "
                  f"by wpm {sw['median_rate_by_wpm']}.", ""]
    c = res["cpu"]
    lines += ["## CPU cost", "",
              f"- utterances/tracks above (process_signal): {c['signals']['cpu_s_per_audio_s']} "
              f"CPU-s per audio-s ({c['signals']['audio_s']} audio s)",
              f"- a 10-minute track in 60-s blocks (process_stream): "
              f"{c['stream_10min']['cpu_s_per_audio_s']} CPU-s per audio-s", "",
              "## Notes", "",
              "- References: letters/s = letters and digits of the transcript over the "
              "utterance span (librosa.effects.trim, top_db 35) or the whole file; text "
              "syllables = vowel groups of espeak-ng --ipa; cohort references are the true "
              "utterance times and the espeak-ng speed each class was voiced at.",
              "- Reference pauses in the cohort are only the gaps between a speaker's "
              "utterances; espeak-ng also pauses at punctuation inside one teacher "
              "utterance (\"Good afternoon. Today we ...\"), which the detector counts, "
              "hence fewer exact pause counts on teacher tracks.",
              "- The detector over-counts nuclei on the children's recordings (breaths, "
              "noise between words, drawn-out vowels); the count error is relative to the "
              "text's syllables.",
              ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the checks and write the JSON and Markdown results."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path,
                    default=Path(__file__).resolve().parents[3] / "shared" / "data")
    ap.add_argument("--out", type=Path, default=Path("docs/results"))
    ap.add_argument("--students", type=int, default=80, help="synthetic cohort size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    ap.add_argument("--sections", default="speechocean,speechbrain,cohort,sweep")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite timing_features.md from the existing JSON")
    args = ap.parse_args(argv)
    if args.render:
        res = json.loads((args.out / "timing_features.json").read_text())
        (args.out / "timing_features.md").write_text(markdown(res) + "\n")
        return 0
    sections = set(args.sections.split(","))
    tf = TimingFeatures(TimingConfig())
    tf.process_signal(np.zeros(SR, np.float32), SR)  # load librosa's numba caches first
    meter = CpuMeter()
    res: dict = {
        "command": "PYTHONPATH=$PWD .venv/bin/python scripts/benchmarks/timing_check.py "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "loadavg_before": round(os.getloadavg()[0], 2),
        "config": tf.config.model_dump(mode="json"),
        "librosa": librosa.__version__,
    }
    speech = args.data / "speech"
    if "speechocean" in sections:
        print("speechocean762_kids ...", file=sys.stderr, flush=True)
        res["speechocean762_kids"] = speechocean(speech / "speechocean762_kids", tf, meter,
                                                 args.boot)
    if "speechbrain" in sections:
        print("speechbrain ...", file=sys.stderr, flush=True)
        res["speechbrain"] = speechbrain(speech / "speechbrain" / "tests" / "samples", tf,
                                         meter, args.boot)
    with tempfile.TemporaryDirectory(prefix="timing-check-") as tmp:
        if "cohort" in sections:
            print("synthetic cohort ...", file=sys.stderr, flush=True)
            res["synthetic_cohort"] = cohort(Path(tmp) / "cohort", tf, meter, args.students,
                                             args.seed, args.boot)
        if "sweep" in sections:
            print("espeak-ng sweep ...", file=sys.stderr, flush=True)
            res["espeak_sweep"] = sweep(Path(tmp) / "sweep", tf, meter, args.boot)
        stream = (stream_cost(Path(tmp) / "cohort", tf) if "cohort" in sections
                  else {"skipped": "needs the cohort section"})
    res["cpu"] = {"signals": meter.summary(), "stream_10min": stream}
    res["loadavg_after"] = round(os.getloadavg()[0], 2)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "timing_features.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / "timing_features.md").write_text(markdown(res) + "\n")
    print(json.dumps({k: res[k] for k in ("cpu", "loadavg_before", "loadavg_after")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
