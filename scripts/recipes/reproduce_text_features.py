"""Reproduce the text counters on real classroom transcripts (TalkMoves, AMBER).

Writes ``docs/results/text_features.json`` and ``docs/results/text_features.md``:

1. distributions of every counter of :func:`atrisk.extractors.text.text_features`
   over the 567 TalkMoves K-12 math lessons and the 35 AMBER tutoring sessions,
   with plausibility checks (speeds, ratios, Q&A rounds ≤ teacher questions);
2. the question detector against what the human labels can tell:
   (a) the transcribers' own ``?`` in TalkMoves as ground truth for the detector
   in ASR mode (punctuation removed, lower case: the first-word rule);
   (b) the TalkMoves talk-move tags that imply a question;
   (c) a hand-check of 100 sampled sentences (``docs/results/question_handcheck.csv``,
   column ``my_label`` filled by a person; the script keeps those labels on rerun);
3. robustness to ASR: the first ``--asr-seconds`` of ``--asr-sessions`` AMBER
   sessions voiced with espeak-ng on two tracks, transcribed by pocketsphinx,
   and the relative difference of every counter against the voiced reference.

Command that made the committed results (from the repository root)::

    .venv/bin/python scripts/recipes/reproduce_text_features.py --out docs/results

The data are read from ``../shared/data`` (``--data``); nothing is copied.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from atrisk.config import TextConfig
from atrisk.extractors.interaction import TIME_COLUMNS
from atrisk.extractors.text import TEXT_FEATURE_COLUMNS, TextFeaturizer

# --------------------------------------------------------------------------- TalkMoves

#: Teacher talk moves whose definition (Suresh et al., TalkMoves) is an act of asking:
#: "Getting students to relate" (asking students to respond to another's idea),
#: "Press for accuracy" (asking for a mathematical answer), "Press for reasoning"
#: (asking to explain).  Student move "Asking for more information".
QUESTION_TAGS = {"teacher": (3, 8, 9), "student": (3,)}
#: Moves that are statements by definition: student "Making a claim" (4),
#: "Providing evidence / explaining reasoning" (5);
#: Teacher "Restating" (4) and "Revoicing" (5) repeat a student's words (< 1 % end
#: in "?"); "Context" (7) is tagged almost only on student sentences.
STATEMENT_TAGS = {"teacher": (4, 5, 7), "student": (4, 5)}

#: How TalkMoves speakers become teacher/student (see :func:`map_speaker`).
TALKMOVES_MAPPING = (
    "a sentence with a teacher talk-move tag → teacher, with a student tag → student "
    "(annotators fill exactly one side); otherwise by the Speaker code: T, T1, T2, "
    "Teacher, Tutor, R1/T/R1 (researcher teaching) or a title (Mr., Ms., Mrs., Miss, Dr.) "
    "→ teacher; S, SS, SN, "
    "Student(s) and first names → student; empty code → dropped"
)
#: Why TalkMoves has no time-based counters (shown in the summary).
TALKMOVES_TIMES = (
    "**No usable times.** TalkMoves transcripts carry at most a turn-level `HH:MM:SS` "
    "start stamp (about 61 % of sentences; several sentences share one stamp) and no end "
    "times, so no utterance has a duration. The utterance table therefore leaves "
    "`start_s`/`end_s` empty (nothing is invented), and every time-based counter "
    "(chars/s, words/s, speech time, Q&A rounds, latencies, turns, talk ratio, silences, "
    "overlaps, student-initiated questions) is NaN in all lessons, with "
    "`inter_untimed_utterances` = the lesson's utterance count as the reason. The "
    "time-based plausibility checks are therefore not applicable to TalkMoves; they are "
    "made on AMBER below."
)
_TEACHER_CODE = re.compile(r"^(t\s*\d*|teacher\s*\d*|tutor|t/r\s*\d*|r\d+)\W*$", re.IGNORECASE)
_TEACHER_TITLE = re.compile(r"^(mr|mrs|ms|miss|dr|mx)\b\.?", re.IGNORECASE)
_STUDENT_CODE = re.compile(r"^(s\d*|ss|sn|students?|class|group)$", re.IGNORECASE)


def tag_number(tag: object) -> float:
    """Leading number of a TalkMoves tag (``"8 - press for accuracy"`` → 8), else NaN."""
    if not isinstance(tag, str):
        return math.nan
    m = re.match(r"\s*(\d+)", tag)
    return float(m.group(1)) if m else math.nan


def map_speaker(code: object, teacher_tag: object, student_tag: object) -> str | None:
    """Map a TalkMoves speaker to ``teacher``/``student`` (``None``: unknown).

    Rule, in order: the human annotators tagged a sentence with a *teacher* talk move
    → teacher; with a *student* talk move → student (the tag columns are filled for
    exactly one side); else the speaker code: ``T``, ``T1``, ``T2``, ``Teacher``, or a
    title (``Mr.``, ``Ms.``, ``Mrs.``, ``Miss``, ``Dr.``) → teacher; ``S``, ``SS``,
    ``SN``, ``Student(s)`` → student; any other first name → student (the transcripts
    name pupils by first name and teachers by title).
    """
    t_ok = not math.isnan(tag_number(teacher_tag))
    s_ok = not math.isnan(tag_number(student_tag))
    if t_ok and not s_ok:
        return "teacher"
    if s_ok and not t_ok:
        return "student"
    c = str(code).strip() if isinstance(code, str) else ""
    if not c:
        return None
    if _TEACHER_CODE.match(c) or _TEACHER_TITLE.match(c):
        return "teacher"
    return "student"


def load_talkmoves(data: Path) -> pd.DataFrame:
    """TalkMoves sentences as an utterance table (times missing: TalkMoves has turn-level
    ``HH:MM:SS`` stamps for 61 % of sentences and no end times, so ``start_s``/``end_s``
    are left empty and the time-based counters are NaN by rule)."""
    raw = pd.read_parquet(data / "talkmoves" / "sentences.parquet")
    speaker = [
        map_speaker(c, t, s)
        for c, t, s in zip(raw["Speaker"], raw["Teacher Tag"], raw["Student Tag"], strict=True)
    ]
    df = pd.DataFrame(
        {
            "session_id": raw["file"].astype(str),
            "speaker": speaker,
            "start_s": np.nan,
            "end_s": np.nan,
            "text": raw["Sentence"].fillna("").astype(str),
            "code": raw["Speaker"].fillna("").astype(str).str.strip(),
            "t_tag": raw["Teacher Tag"].map(tag_number),
            "s_tag": raw["Student Tag"].map(tag_number),
        }
    )
    code_side = np.array([map_speaker(c, None, None) for c in raw["Speaker"]], dtype=object)
    one_side = df["t_tag"].notna() ^ df["s_tag"].notna()
    df.attrs["mapping_agreement"] = {
        "sentences_with_one_side_tagged": int(one_side.sum()),
        "code_rule_agrees_with_tag_side": round(
            float((code_side[one_side.to_numpy()] == df["speaker"][one_side].to_numpy()).mean()), 4
        ),
        "decided_by_code": int((~one_side).sum()),
    }
    return df[df["speaker"].notna()].reset_index(drop=True)


# --------------------------------------------------------------------------- AMBER


def _mmss(value: str) -> float:
    parts = [float(p) for p in str(value).strip().split(":")]
    sec = 0.0
    for p in parts:
        sec = sec * 60 + p
    return sec


def load_amber(data: Path) -> pd.DataFrame:
    """AMBER sessions as an utterance table (``Tutor`` → teacher, ``Student`` → student)."""
    rows = []
    for f in sorted((data / "amber").glob("*.json")):
        for u in json.loads(f.read_text(encoding="utf-8")):
            spk = {"tutor": "teacher", "student": "student"}.get(str(u["speaker"]).lower())
            if spk is None:
                continue
            rows.append((f.stem, spk, _mmss(u["start"]), _mmss(u["stop"]), u["dialogue"] or ""))
    return pd.DataFrame(rows, columns=["session_id", "speaker", "start_s", "end_s", "text"])


# --------------------------------------------------------------------------- summaries


def describe(table: pd.DataFrame) -> dict[str, dict[str, float | int | None]]:
    """Per-column n, NaN count, mean and quantiles."""
    out: dict[str, dict[str, float | int | None]] = {}
    for col in table.columns:
        x = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=float)
        ok = x[np.isfinite(x)]
        d: dict[str, float | int | None] = {"n": int(x.size), "nan": int(x.size - ok.size)}
        if ok.size:
            q = np.percentile(ok, [0, 5, 50, 95, 100])
            d.update(mean=float(ok.mean()), min=float(q[0]), p5=float(q[1]), p50=float(q[2]),
                     p95=float(q[3]), max=float(q[4]))
        out[col] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}
    return out


def plausibility(table: pd.DataFrame, utts: pd.DataFrame | None = None) -> dict[str, object]:
    """The acceptance checks: speeds 5–30 chars/s, ratios in [0, 1], rounds ≤ questions.

    Time-based checks count only sessions whose utterances all have times; a
    check with no such session is reported as not applicable (with the reason),
    never as a pass.  Sessions outside the speed range are listed with their
    value and, when ``utts`` is given, the speaker's speech time and longest
    utterance (seconds and characters), which shows whether the times or the
    counting are at fault.
    """
    timed = int((table["inter_untimed_utterances"] == 0).sum())
    res: dict[str, object] = {"sessions": len(table), "timed_sessions": timed}
    for spk in ("teacher", "student"):
        cps = table[f"{spk}_chars_per_s"].dropna()
        key = f"{spk}_chars_per_s_in_5_30"
        if cps.empty:
            res[key] = ("not applicable: no session has utterance times "
                        f"({len(table) - timed}/{len(table)} untimed), so chars/s is NaN")
            continue
        outside = cps[~cps.between(5, 30)]
        res[key] = f"{len(cps) - len(outside)}/{len(cps)}"
        res[f"{spk}_chars_per_s_outside"] = {
            str(k): _speed_detail(utts, str(k), spk, float(v)) for k, v in outside.items()}
    ratio_cols = [c for c in table.columns if c.endswith(("_ratio", "_share")) or "_pos_" in c]
    vals = table[ratio_cols].to_numpy(dtype=float)
    vals = vals[np.isfinite(vals)]
    res["ratio_values_in_0_1"] = f"{int(((vals >= 0) & (vals <= 1)).sum())}/{vals.size}"
    qa, tq = table["inter_qa_rounds"], table["inter_teacher_questions"]
    ok = qa.notna()
    if ok.any():
        res["qa_rounds_le_teacher_questions"] = f"{int((qa[ok] <= tq[ok]).sum())}/{int(ok.sum())}"
    else:
        res["qa_rounds_le_teacher_questions"] = (
            "not applicable: Q&A rounds need utterance times and no session has them")
    return res


def _speed_detail(utts: pd.DataFrame | None, sid: str, spk: str, cps: float) -> object:
    if utts is None:
        return round(cps, 2)
    g = utts[(utts["session_id"].astype(str) == sid) & (utts["speaker"] == spk)]
    dur = g["end_s"] - g["start_s"]
    i = dur.idxmax()
    return {"chars_per_s": round(cps, 2), "utterances": len(g),
            "speech_s": round(float(dur.sum()), 2),
            "longest_utterance_s": round(float(dur[i]), 2),
            "longest_utterance_chars": len(str(g.loc[i, "text"]).replace(" ", ""))}


def prf(truth: np.ndarray, pred: np.ndarray) -> dict[str, float | int]:
    """Precision, recall, F1 and the confusion counts."""
    truth, pred = truth.astype(bool), pred.astype(bool)
    tp = int((truth & pred).sum())
    fp = int((~truth & pred).sum())
    fn = int((truth & ~pred).sum())
    p = tp / (tp + fp) if tp + fp else math.nan
    r = tp / (tp + fn) if tp + fn else math.nan
    f = 2 * p * r / (p + r) if p + r else math.nan
    return {"n": int(truth.size), "positives": int(truth.sum()), "tp": tp, "fp": fp, "fn": fn,
            "precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4)}


_PUNCT = re.compile(r"[^\w\s'’-]+")


def asr_like(text: str) -> str:
    """What ASR would give: punctuation removed (apostrophes kept), lower case."""
    return re.sub(r"\s+", " ", _PUNCT.sub(" ", text)).strip().lower()


def detect(featurizer: TextFeaturizer, texts: list[str]) -> np.ndarray:
    """The detector's per-text output: at least one question sentence."""
    df = pd.DataFrame({"session_id": "q", "speaker": "teacher", "start_s": np.nan,
                       "end_s": np.nan, "text": texts})
    df["session_id"] = [f"{i:07d}" for i in range(len(texts))]
    ann = featurizer.linguistic.annotate(df)
    got = dict(zip(ann["session_id"], ann["is_question"], strict=True))
    return np.array([bool(got.get(f"{i:07d}", False)) for i in range(len(texts))])


def question_check(featurizer: TextFeaturizer, tm: pd.DataFrame, n_sample: int, seed: int,
                   handcheck: Path) -> dict[str, object]:
    """Measure the question detector against the TalkMoves labels and the hand-check."""
    res: dict[str, object] = {}
    sample = tm[tm["text"].str.strip() != ""].sample(n=min(n_sample, len(tm)), random_state=seed)
    texts = sample["text"].tolist()
    has_qmark = sample["text"].str.contains(r"[?？]", regex=True).to_numpy()
    det_punct = detect(featurizer, texts)
    det_asr = detect(featurizer, [asr_like(t) for t in texts])
    res["sample_sentences"] = len(sample)
    res["a_transcriber_qmark_vs_asr_mode"] = prf(has_qmark, det_asr)
    res["a_transcriber_qmark_vs_punctuated_mode"] = prf(has_qmark, det_punct)
    tags = {}
    for spk, col in (("teacher", "t_tag"), ("student", "s_tag")):
        sel = (sample["speaker"] == spk).to_numpy()
        num = sample[col].to_numpy()
        pos = sel & np.isin(num, QUESTION_TAGS[spk])
        neg = sel & np.isin(num, STATEMENT_TAGS[spk])
        keep = pos | neg
        tags[spk] = {
            "question_tags": list(QUESTION_TAGS[spk]),
            "statement_tags": list(STATEMENT_TAGS[spk]),
            "punctuated_mode": prf(pos[keep], det_punct[keep]),
            "asr_mode": prf(pos[keep], det_asr[keep]),
            "qmark_share_per_tag": {
                str(int(t)): round(float(has_qmark[sel & (num == t)].mean()), 3)
                for t in sorted(set(num[sel & np.isfinite(num)]))
                if (sel & (num == t)).sum() >= 20
            },
            "detected_share_per_tag_punctuated": {
                str(int(t)): round(float(det_punct[sel & (num == t)].mean()), 3)
                for t in sorted(set(num[sel & np.isfinite(num)]))
                if (sel & (num == t)).sum() >= 20
            },
        }
    res["b_talk_move_tags"] = tags

    # (c) hand-check of 100 sentences: a fixed sample, labels kept across reruns.
    hc = tm[tm["text"].str.strip() != ""].sample(n=100, random_state=seed + 1)
    hc_texts = hc["text"].tolist()
    table = pd.DataFrame(
        {
            "row": hc.index.to_numpy(),
            "session_id": hc["session_id"].to_numpy(),
            "speaker": hc["speaker"].to_numpy(),
            "sentence": hc_texts,
            "my_label": pd.NA,
            "detector_punctuated": detect(featurizer, hc_texts).astype(int),
            "detector_asr_mode": detect(featurizer, [asr_like(t) for t in hc_texts]).astype(int),
        }
    )
    if handcheck.is_file():
        old = pd.read_csv(handcheck)
        labels = dict(zip(old["row"], old["my_label"], strict=True))
        table["my_label"] = table["row"].map(labels)
    table.to_csv(handcheck, index=False)
    lab = pd.to_numeric(table["my_label"], errors="coerce")
    done = lab.notna().to_numpy()
    res["c_handcheck"] = {
        "file": str(handcheck),
        "labelled": int(done.sum()),
        "punctuated_mode": prf(lab[done].to_numpy() > 0, table["detector_punctuated"][done]
                               .to_numpy()) if done.any() else None,
        "asr_mode": prf(lab[done].to_numpy() > 0, table["detector_asr_mode"][done].to_numpy())
        if done.any() else None,
    }
    return res


# --------------------------------------------------------------------------- ASR robustness


def asr_robustness(featurizer: TextFeaturizer, amber: pd.DataFrame, n_sessions: int,
                   seconds: float, seed: int, backend: str = "pocketsphinx"
                   ) -> dict[str, object]:
    """Voice AMBER excerpts with espeak-ng, transcribe (pocketsphinx fast, or ``backend``
    with its default settings), compare counters."""
    from atrisk.asr import load_transcriber
    from atrisk.asr.base import segments_to_utterances
    from atrisk.config import ASRConfig
    from atrisk.synthetic import SpeechSynth, Turn, Voice, render_session

    voices = {"teacher": Voice("en-us+m3", 45, 160), "student": Voice("en-us+f3", 70, 165)}
    synth = SpeechSynth(workers=2)
    if backend == "pocketsphinx":
        asr = load_transcriber("pocketsphinx", config=ASRConfig(pocketsphinx_search="fast"))
        asr_name = "pocketsphinx fast"
    else:
        asr = load_transcriber(backend, device="cpu", config=ASRConfig())
        asr_name = asr.name
    # The sessions with the most student utterances in the excerpt (several open with
    # minutes of tutor-only set-up talk, which would leave the student counters empty).
    head = amber[amber["start_s"] < seconds]
    n_student = head[head["speaker"] == "student"].groupby("session_id").size()
    sessions = sorted(n_student.sort_values(ascending=False, kind="mergesort")
                      .index[:n_sessions].tolist())
    refs, hyps, timing = [], [], {}
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="atrisk-asr-rob-") as tmp:
        for sid in sessions:
            g = amber[(amber["session_id"] == sid) & (amber["start_s"] < seconds)]
            turns, prev_end = [], 0.0
            for u in g.itertuples():
                text = re.sub(r"\s+", " ", str(u.text)).strip()
                if not text:
                    continue
                gap = max(0.0, min(2.0, float(u.start_s) - prev_end))
                turns.append(Turn(u.speaker, text, voices[u.speaker], gap))
                prev_end = float(u.end_s)
            t0 = time.perf_counter()
            rows = render_session(turns, synth, Path(tmp) / sid, rng, max_track_s=seconds * 1.5,
                                  session_id=sid)
            t1 = time.perf_counter()
            refs.append(pd.DataFrame(rows))
            for spk in ("teacher", "student"):
                segs = asr.transcribe_file(Path(tmp) / sid / f"{spk}.wav")
                hyps.append(pd.DataFrame(
                    [{"session_id": u.session_id, "speaker": u.speaker, "start_s": u.start_s,
                      "end_s": u.end_s, "text": u.text}
                     for u in segments_to_utterances(sid, spk, segs)],
                    columns=["session_id", "speaker", "start_s", "end_s", "text"]))
            timing[sid] = {"voiced_s": round(float(refs[-1]["end_s"].max()), 1),
                           "tts_s": round(t1 - t0, 1),
                           "asr_s": round(time.perf_counter() - t1, 1)}
    ref = featurizer.transform(pd.concat(refs), sessions)
    hyp = featurizer.transform(pd.concat(hyps), sessions)
    try:
        import jiwer

        wer = {}
        for sid in sessions:
            r = " ".join(asr_like(t) for t in pd.concat(refs).query("session_id == @sid")["text"])
            h = " ".join(asr_like(t) for t in pd.concat(hyps).query("session_id == @sid")["text"])
            wer[sid] = round(float(jiwer.wer(r, h)), 3)
    except ImportError:  # pragma: no cover
        wer = {}
    rel = {}
    for col in TEXT_FEATURE_COLUMNS:
        r, h = ref[col].to_numpy(dtype=float), hyp[col].to_numpy(dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.abs(h - r) / np.abs(r)
        d[(r == 0) & (h == 0)] = 0.0
        d[~np.isfinite(d)] = np.nan  # reference 0 (or NaN): no relative difference
        a = np.abs(h - r)
        rel[col] = {
            "ref_mean": round(float(np.nanmean(r)), 4) if np.isfinite(r).any() else None,
            "asr_mean": round(float(np.nanmean(h)), 4) if np.isfinite(h).any() else None,
            "rel_diff_median": round(float(np.nanmedian(d)), 4) if np.isfinite(d).any() else None,
            "abs_diff_mean": round(float(np.nanmean(a)), 4) if np.isfinite(a).any() else None,
        }
    return {"sessions": sessions, "seconds": seconds, "asr": asr_name,
            "tts": "espeak-ng en-us+m3 (teacher) / en-us+f3 (student)", "timing": timing,
            "wer_vs_reference": wer, "relative_difference": rel}


# --------------------------------------------------------------------------- main


def _md_plausibility(p: dict) -> list[str]:
    lines = [f"Plausibility ({p.get('timed_sessions', '?')} of {p.get('sessions', '?')} sessions "
             "have utterance times; time-based checks use only those):", ""]
    for spk in ("teacher", "student"):
        lines.append(f"- {spk} chars/s in [5, 30]: {p[f'{spk}_chars_per_s_in_5_30']}")
        for sid, det in p.get(f"{spk}_chars_per_s_outside", {}).items():
            if isinstance(det, dict):
                lines.append(f"  - outside: session {sid}: {det['chars_per_s']} chars/s over "
                             f"{det['utterances']} utterances, {det['speech_s']} s of speech; "
                             f"longest utterance {det['longest_utterance_s']} s for "
                             f"{det['longest_utterance_chars']} characters")
            else:
                lines.append(f"  - outside: session {sid}: {det} chars/s")
    ratios = p.get("ratio_values_in_0_1", p.get("ratios_in_0_1"))
    lines += [f"- ratio/share values (talk ratio, filler ratio, type/token, question and "
              f"POS shares) in [0, 1]: {ratios}",
              f"- Q&A rounds ≤ teacher questions: {p['qa_rounds_le_teacher_questions']}", ""]
    if any(p.get(f"{spk}_chars_per_s_outside") for spk in ("teacher", "student")):
        lines += ["A session outside the speed range whose longest utterance holds a few "
                  "characters over tens of seconds is a time-stamp artefact of the transcript "
                  "(a stamp that spans silence or inaudible speech), not a counting error.", ""]
    return lines


#: Interaction counters computed from times and speaker labels only (no words).
_TIME_ONLY = ("inter_turns", "inter_talk_ratio", "inter_longest_student_silence_s",
              "inter_overlaps", "inter_overlap_s", "teacher_speech_s", "student_speech_s")


def _md_asr_verdict(a: dict) -> list[str]:
    wer = list(a["wer_vs_reference"].values())
    rel = a["relative_difference"]
    robust = [c for c, s in rel.items() if s["rel_diff_median"] is not None
              and s["rel_diff_median"] <= 0.1 and s["ref_mean"] and s["asr_mean"]]
    poor = [c for c, s in rel.items() if s["rel_diff_median"] is not None
            and s["rel_diff_median"] > 0.3 and "_pos_" not in c]
    def r(col: str) -> str:
        return f"{rel[col]['rel_diff_median']:.2f}"

    time_only = ", ".join(f"{c.removeprefix('inter_')} {r(c)}" for c in _TIME_ONLY[:3])
    return [
        f"**Verdict.** The ASR here is bad: WER {min(wer):.2f}–{max(wer):.2f} (pocketsphinx on "
        "synthetic espeak-ng voices; it is ≈ 0.41 on read human speech). At that WER every "
        "counter that depends on *which* words were said is unreliable: fillers (pocketsphinx "
        f"rarely outputs them: relative difference {r('teacher_n_filler')} / "
        f"{r('student_n_filler')} teacher / student), question counts and shares, Q&A rounds "
        "and student-initiated questions (they hang on the question detector, which on "
        "unpunctuated text sees only the first word), POS shares, chars/s and sentence-length "
        "quantiles.  Word *counts* move less than the WER suggests "
        f"({r('teacher_n_words')} / {r('student_n_words')}), because substitutions keep the "
        "count; they are still not trustworthy for content.  The counters computed from "
        f"utterance times and speaker labels alone are robust: {time_only} (median relative "
        "difference); speech time less so (teacher "
        f"{r('teacher_speech_s')}, student {r('student_speech_s')}: VAD segments are padded "
        "and split differently from the reference turns).  "
        "Response latency is not: the references laid turns end to end with gaps ≤ 2 s, so "
        "latencies are a few tenths of a second and VAD padding changes them by more than "
        "their size.  Overlaps are 0 in the reference by construction (turns end to end) and "
        "non-zero in the ASR output only because VAD segments are padded; they have no "
        "relative difference.",
        "",
        f"- median relative difference ≤ 0.1 (reference not 0): {', '.join(robust)}",
        f"- median relative difference > 0.3 (POS shares aside): {', '.join(poor)}",
        f"- time/speaker-only counters: {', '.join(c for c in _TIME_ONLY if c in rel)}",
        "",
    ]


def _md(results: dict) -> str:
    lines = ["# Text counters on real transcripts", "",
             f"Made by `{results['command']}` from the repository root ({results['date']}, on a "
             "shared 2-core machine under load; `.venv/bin/python` is the interpreter).", ""]
    if results.get("reruns"):
        lines += ["Parts rerun with: " + "; ".join(f"`{c}`" for c in results["reruns"]), ""]
    for name in ("talkmoves", "amber"):
        d = results["datasets"].get(name)
        if not d:
            continue
        lines += [f"## {name}: {d['sessions']} sessions, {d['utterances']} utterances "
                  f"({d['utterances_per_s']} utt/s wall-clock on the loaded machine; per-CPU "
                  "rates: `text_bench.json`)", "", f"Speaker mapping: {d['mapping']}", "",
                  *([TALKMOVES_TIMES, ""] if name == "talkmoves" else []),
                  *_md_plausibility(d["plausibility"]),
                  "| counter | NaN | p5 | median | p95 |", "|---|---|---|---|---|"]
        for col, s in d["distribution"].items():
            if "_pos_" in col and not col.endswith(("NOUN", "VERB", "PRON", "INTJ")):
                continue
            lines.append(f"| {col} | {s['nan']}/{s['n']} | {s.get('p5', '')} | "
                         f"{s.get('p50', '')} | {s.get('p95', '')} |")
        lines.append("")
    q = results.get("questions")
    if q:
        lines += ["## Question detector", "",
                  "What the human labels can tell, and what was used as ground truth:",
                  "",
                  "- (a) The TalkMoves transcribers ended questions with `?`. On punctuated "
                  "text our detector *is* that `?` rule, so the informative test is the "
                  "detector in ASR mode (punctuation stripped, lower case: first-word rule "
                  "with `text.question_words`) against the transcribers' `?`.",
                  "- (b) TalkMoves talk-move tags are not question labels, but some moves are "
                  "acts of asking by definition: teacher *Getting students to relate* (3), "
                  "*Press for accuracy* (8), *Press for reasoning* (9); student *Asking for "
                  "more information* (3). As negatives we use moves that are statements: "
                  "teacher *Restating* (4), *Revoicing* (5), *Context* (7); student *Making a "
                  "claim* (4), *Providing evidence* (5). *None* (1) and teacher *Keeping "
                  "everyone together* (2, 82 % end in `?`) are left out as mixed.",
                  "- (c) 100 sentences sampled with a fixed seed and labelled by hand "
                  "(question = the speaker asks for an answer, including tag questions and "
                  "calling on a student by name with rising intonation `Lorraine?`); the "
                  "labeller saw the punctuated sentence, so (c) punctuated mode is close to "
                  "circular and the ASR-mode figure is the informative one.",
                  "",
                  f"(a) transcribers' `?` as truth, {q['sample_sentences']} sampled TalkMoves "
                  f"sentences, detector on unpunctuated lower-case text (ASR mode): "
                  f"`{json.dumps(q['a_transcriber_qmark_vs_asr_mode'])}`", ""]
        for spk, t in q["b_talk_move_tags"].items():
            lines.append(f"(b) {spk} talk moves {t['question_tags']} = question vs "
                         f"{t['statement_tags']} = statement: punctuated "
                         f"`{json.dumps(t['punctuated_mode'])}`; ASR mode "
                         f"`{json.dumps(t['asr_mode'])}`; share with `?` per tag "
                         f"`{json.dumps(t['qmark_share_per_tag'])}`")
            lines.append("")
        c = q["c_handcheck"]
        lines += [f"(c) hand-check ({c['labelled']} labelled, `{c['file']}`): punctuated "
                  f"`{json.dumps(c['punctuated_mode'])}`; ASR mode `{json.dumps(c['asr_mode'])}`",
                  ""]
    a = results.get("asr_robustness")
    if a:
        lines += [f"## Robustness to ASR ({a['asr']}, {a['tts']}; first {a['seconds']} s of "
                  f"{', '.join(a['sessions'])}; WER {json.dumps(a['wer_vs_reference'])})", "",
                  "Reference = the AMBER text with the times of its espeak-ng rendering "
                  "(turns laid end to end, gaps capped at 2 s); ASR = pocketsphinx on the two "
                  "voiced tracks (silero-vad segments). Relative difference = |ASR − ref| / "
                  "|ref| per session, median over sessions (empty where the reference is 0).",
                  "", *_md_asr_verdict(a),
                  "| counter | reference mean | ASR mean | median relative difference | "
                  "mean absolute difference |",
                  "|---|---|---|---|---|"]
        for col, s in a["relative_difference"].items():
            if "_pos_" in col and not col.endswith(("NOUN", "VERB", "PRON")):
                continue
            lines.append(f"| {col} | {s['ref_mean']} | {s['asr_mean']} | "
                         f"{s['rel_diff_median']} | {s.get('abs_diff_mean')} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the reproduction; see the module docstring."""
    here = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=here.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=here / "docs" / "results")
    ap.add_argument("--talkmoves-lessons", type=int, default=0,
                    help="0 = all 567; else a fixed random sample of this many lessons")
    ap.add_argument("--question-sample", type=int, default=20000)
    ap.add_argument("--asr-sessions", type=int, default=3, help="0 skips the ASR step")
    ap.add_argument("--asr-seconds", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stages", default="distributions,questions,asr",
                    help="comma list; stages left out keep their results from an existing JSON")
    args = ap.parse_args(argv)
    stages = {x.strip() for x in args.stages.split(",") if x.strip()}
    if not (args.data / "amber").is_dir() or not (args.data / "talkmoves").is_dir():
        print(f"no data under {args.data}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    featurizer = TextFeaturizer(TextConfig())
    results: dict[str, object] = {"date": time.strftime("%Y-%m-%d"), "datasets": {},
                                  "config": TextConfig().model_dump()}
    json_path = args.out / "text_features.json"
    if stages != {"distributions", "questions", "asr"} and json_path.is_file():
        old = json.loads(json_path.read_text())
        for key in ("command", "reruns", "datasets", "questions", "asr_robustness"):
            if key in old:
                results[key] = old[key]

    cmd = ("python scripts/recipes/reproduce_text_features.py " + " ".join(argv or sys.argv[1:])).strip()
    if "command" in results:  # a partial rerun: keep the first command, list the rerun
        results["reruns"] = list(dict.fromkeys([*results.get("reruns", []), cmd]))
    else:
        results["command"] = cmd

    def save() -> None:
        results["seconds_last_run"] = round(time.perf_counter() - t_all, 1)
        json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
        (args.out / "text_features.md").write_text(_md(results) + "\n")

    amber = load_amber(args.data)
    tm = load_talkmoves(args.data)
    datasets = {"amber": (amber, "Tutor → teacher, Student → student"),
                "talkmoves": (tm, TALKMOVES_MAPPING)}
    if args.talkmoves_lessons:
        keep = pd.Series(tm["session_id"].unique()).sample(
            n=args.talkmoves_lessons, random_state=args.seed)
        datasets["talkmoves"] = (tm[tm["session_id"].isin(set(keep))], datasets["talkmoves"][1])
    for name, (df, mapping) in datasets.items() if "distributions" in stages else ():
        t0 = time.perf_counter()
        table = featurizer.transform(df[["session_id", "speaker", "start_s", "end_s",
                                                  "text"]])
        dt = time.perf_counter() - t0
        results["datasets"][name] = {
            "sessions": len(table), "utterances": len(df), "seconds": round(dt, 1),
            "utterances_per_s": round(len(df) / dt, 1), "mapping": mapping,
            "time_columns_nan_when_untimed": list(TIME_COLUMNS),
            "plausibility": plausibility(table, df), "distribution": describe(table),
        }
        if name == "talkmoves":
            codes = df.groupby("speaker")["code"].agg(lambda s: s.value_counts().head(8).to_dict())
            results["datasets"][name]["top_codes_per_side"] = codes.to_dict()
            results["datasets"][name]["mapping_agreement"] = tm.attrs.get("mapping_agreement")
        save()
        print(f"{name}: {len(table)} sessions, {len(df)} utterances in {dt:.1f} s", flush=True)
    if "questions" in stages:
        results["questions"] = question_check(featurizer, tm, args.question_sample, args.seed,
                                              args.out / "question_handcheck.csv")
        save()
        print("questions:", json.dumps(results["questions"]["a_transcriber_qmark_vs_asr_mode"]),
              flush=True)
    if args.asr_sessions and "asr" in stages:
        results["asr_robustness"] = asr_robustness(featurizer, amber, args.asr_sessions,
                                                   args.asr_seconds, args.seed)
        save()
    print(f"wrote {json_path} in {time.perf_counter() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
