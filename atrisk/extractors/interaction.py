"""Interaction counters per session: Q&A rounds, reminders, repeat requests, turns.

Definitions (the column table is in ``docs/features.md``):

* **question utterance**: an utterance holding at least one question sentence
  (see :mod:`atrisk.extractors.linguistic`: trailing ``?``, or for unpunctuated
  ASR text a first word from ``text.question_words``).
* **Q&A round**: a teacher question utterance answered by a student utterance
  that starts after the question starts, no later than ``text.qa_window_s``
  seconds after the question ends, and before the next teacher question
  starts.  Each question counts at most once (the first such student utterance
  answers it).  Student speech that overlaps the end of the question counts,
  because the two tracks are recorded separately and often overlap.
* **note reminder**: a teacher utterance matching one of ``text.note_patterns``;
  **repeat request**: an utterance of either speaker matching one of
  ``text.repeat_patterns`` (regular expressions, case-insensitive; one count per
  utterance however many patterns match).
* **turns**: speaker changes + 1 over the session's utterances in start-time order.
* **student-initiated question**: a student question utterance that is not the
  reply of a Q&A round (the student asks on their own, not in answer to a
  teacher question).
* **overlap**: a stretch of time in which the union of the teacher's utterance
  intervals and the union of the student's intersect (the tracks are separate,
  so both can speak at once); ``overlaps`` counts such stretches, ``overlap_s``
  sums their length.
* **longest student silence**: the longest stretch of the session span (first
  utterance start to last utterance end, either speaker) that no student
  utterance covers.

Time-based counters (:data:`TIME_COLUMNS`) are ``NaN`` for a session where any
utterance lacks a valid start/end time (missing, not a number, negative start or
end before start); ``untimed_utterances`` says how many such utterances there
were, so a ``NaN`` there is explained in the same row (``0`` means the times were
complete and a ``NaN`` has another documented cause, e.g. no Q&A round).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from atrisk.config import TextConfig
from atrisk.errors import ConfigError
from atrisk.extractors.linguistic import LinguisticExtractor, session_list

#: Columns of :meth:`InteractionExtractor.transform`, in order.
INTERACTION_COLUMNS: list[str] = [
    "qa_rounds",
    "response_latency_s",
    "response_latency_max_s",
    "teacher_questions",
    "student_questions",
    "student_initiated_questions",
    "note_reminders",
    "repeat_requests",
    "teacher_repeat_requests",
    "student_repeat_requests",
    "turns",
    "talk_ratio",
    "longest_student_silence_s",
    "overlaps",
    "overlap_s",
    "untimed_utterances",
]

#: Interaction columns that need utterance times (``NaN`` when any time is missing).
TIME_COLUMNS: tuple[str, ...] = (
    "qa_rounds",
    "response_latency_s",
    "response_latency_max_s",
    "student_initiated_questions",
    "turns",
    "talk_ratio",
    "longest_student_silence_s",
    "overlaps",
    "overlap_s",
)

_INT_COLUMNS = (
    "teacher_questions",
    "student_questions",
    "note_reminders",
    "repeat_requests",
    "teacher_repeat_requests",
    "student_repeat_requests",
    "untimed_utterances",
)


def _compile(patterns: list[str], key: str) -> re.Pattern[str] | None:
    for i, p in enumerate(patterns):
        try:
            re.compile(p)
        except re.error as exc:
            raise ConfigError(f"invalid regular expression in {key}[{i}] ({p!r}): {exc}") from None
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


class InteractionExtractor:
    """Per-session interaction counters between teacher and student.

    Args:
        config: Patterns, question words and Q&A window; defaults to ``TextConfig()``.
        linguistic: The :class:`LinguisticExtractor` used to find question
            sentences (shared so that spaCy loads once); one is made from
            ``config`` when ``None``.

    Raises:
        ConfigError: When a note/repeat pattern is not a valid regular expression.

    Example:
        >>> inter = InteractionExtractor()
        >>> inter.transform(utts, session_ids=["s1", "s2"])  # doctest: +SKIP

    """

    def __init__(
        self, config: TextConfig | None = None, linguistic: LinguisticExtractor | None = None
    ):
        self.config = config if config is not None else TextConfig()
        self.linguistic = linguistic if linguistic is not None else LinguisticExtractor(self.config)
        self._note_re = _compile(self.config.note_patterns, "text.note_patterns")
        self._repeat_re = _compile(self.config.repeat_patterns, "text.repeat_patterns")

    def aggregate(
        self, annotations: pd.DataFrame, session_ids: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Compute the counters from per-utterance annotations.

        Args:
            annotations: Output of :meth:`LinguisticExtractor.annotate`.
            session_ids: Sessions to report (in this order); sessions without
                utterances get zero counts (``turns``, ``qa_rounds``,
                ``overlaps``, ``overlap_s`` 0) and ``NaN`` for ``talk_ratio``,
                the latencies and ``longest_student_silence_s``.  ``None``:
                the sessions present, sorted.  Utterances of other sessions are
                ignored.

        Returns:
            DataFrame indexed by ``session_id`` with :data:`INTERACTION_COLUMNS`
            (question/reminder/repeat counts and ``untimed_utterances`` int64,
            the rest float64).

        """
        sessions = session_list(annotations, session_ids)
        ann = annotations.assign(
            is_note=self._matches(annotations["text"], self._note_re),
            is_repeat=self._matches(annotations["text"], self._repeat_re),
        )
        rows = {s: _empty_row() for s in sessions}
        for sid, g in ann.groupby("session_id", sort=False):
            if sid in rows:
                rows[sid] = self._session_row(g)
        index = pd.Index(sessions, name="session_id", dtype=object)
        out = pd.DataFrame([rows[s] for s in sessions], index=index, columns=INTERACTION_COLUMNS)
        return out.astype(
            {c: ("int64" if c in _INT_COLUMNS else "float64") for c in INTERACTION_COLUMNS}
        )

    def transform(
        self, utts: pd.DataFrame, session_ids: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Compute the interaction counters of every session.

        Args:
            utts: Utterances with ``session_id, speaker, start_s, end_s, text``;
                not changed.
            session_ids: See :meth:`aggregate`.

        Returns:
            DataFrame indexed by ``session_id`` with :data:`INTERACTION_COLUMNS`.

        Raises:
            TranscriptError: When required columns are missing.
            ModelLoadError: When the spaCy pipeline cannot be loaded.

        """
        return self.aggregate(self.linguistic.annotate(utts), session_ids)

    @staticmethod
    def _matches(texts: pd.Series, pattern: re.Pattern[str] | None) -> np.ndarray:
        if pattern is None or texts.empty:
            return np.zeros(len(texts), dtype=bool)
        return np.fromiter((pattern.search(t) is not None for t in texts), bool, len(texts))

    def _session_row(self, g: pd.DataFrame) -> dict[str, float]:
        row = _empty_row()
        teacher = (g["speaker"] == "teacher").to_numpy()
        student = ~teacher
        is_q = g["is_question"].to_numpy(dtype=bool)
        is_rep = g["is_repeat"].to_numpy(dtype=bool)
        row["teacher_questions"] = int((teacher & is_q).sum())
        row["student_questions"] = int((student & is_q).sum())
        row["note_reminders"] = int((teacher & g["is_note"].to_numpy(dtype=bool)).sum())
        row["teacher_repeat_requests"] = int((teacher & is_rep).sum())
        row["student_repeat_requests"] = int((student & is_rep).sum())
        row["repeat_requests"] = row["teacher_repeat_requests"] + row["student_repeat_requests"]

        untimed = int(g["duration_s"].isna().sum())
        row["untimed_utterances"] = untimed
        if untimed:
            row.update({c: math.nan for c in TIME_COLUMNS})
            return row
        order = np.lexsort((g["end_s"].to_numpy(), g["start_s"].to_numpy()))
        start = g["start_s"].to_numpy()[order]
        end = g["end_s"].to_numpy()[order]
        dur = g["duration_s"].to_numpy()[order]
        teacher, student, is_q = teacher[order], student[order], is_q[order]

        row["turns"] = float(1 + np.count_nonzero(teacher[1:] != teacher[:-1]))
        total = float(dur.sum())
        row["talk_ratio"] = float(dur[student].sum()) / total if total > 0 else math.nan

        q = teacher & is_q
        q_start, q_end = start[q], end[q]
        s_pos = np.flatnonzero(student)  # already in start order
        s_start = start[s_pos]
        replied = np.zeros(len(start), dtype=bool)
        row["qa_rounds"] = 0.0
        if q_start.size and s_start.size:
            next_q = np.append(q_start[1:], np.inf)
            idx = np.searchsorted(s_start, q_start, side="right")
            has = idx < s_start.size
            j = np.minimum(idx, s_start.size - 1)
            reply = s_start[j]
            ok = has & (reply <= q_end + self.config.qa_window_s) & (reply < next_q)
            row["qa_rounds"] = float(ok.sum())
            if ok.any():
                lat = reply[ok] - q_end[ok]
                row["response_latency_s"] = float(np.mean(lat))
                row["response_latency_max_s"] = float(np.max(lat))
                replied[s_pos[j[ok]]] = True
        row["student_initiated_questions"] = float((student & is_q & ~replied).sum())

        t_iv = _union(start[teacher], end[teacher])
        s_iv = _union(start[student], end[student])
        n_ov, ov_s = _overlap(t_iv, s_iv)
        row["overlaps"] = float(n_ov)
        row["overlap_s"] = ov_s
        row["longest_student_silence_s"] = _longest_gap(s_iv, float(start.min()), float(end.max()))
        return row


def _union(start: np.ndarray, end: np.ndarray) -> list[tuple[float, float]]:
    """Merge intervals into disjoint, sorted ones (touching intervals merge)."""
    out: list[tuple[float, float]] = []
    for a, b in sorted(zip(start.tolist(), end.tolist(), strict=True)):
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _overlap(x: list[tuple[float, float]], y: list[tuple[float, float]]) -> tuple[int, float]:
    """Count and sum the positive-length intersections of two disjoint interval sets."""
    i = j = n = 0
    total = 0.0
    while i < len(x) and j < len(y):
        lo, hi = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        if hi > lo:
            n += 1
            total += hi - lo
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return n, total


def _longest_gap(iv: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Longest part of ``[lo, hi]`` not covered by the disjoint sorted intervals ``iv``."""
    best, cursor = 0.0, lo
    for a, b in iv:
        best = max(best, min(a, hi) - cursor)
        cursor = max(cursor, b)
    return max(best, hi - cursor, 0.0)


def _empty_row() -> dict[str, float]:
    row: dict[str, float] = {c: 0 for c in INTERACTION_COLUMNS}
    row.update(
        qa_rounds=0.0,
        turns=0.0,
        student_initiated_questions=0.0,
        overlaps=0.0,
        overlap_s=0.0,
        talk_ratio=math.nan,
        response_latency_s=math.nan,
        response_latency_max_s=math.nan,
        longest_student_silence_s=math.nan,
    )
    return row
