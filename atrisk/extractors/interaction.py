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

Time-based counters (``qa_rounds``, ``response_latency_s``, ``turns``,
``talk_ratio``) are ``NaN`` for a session where any utterance lacks a valid
start/end time.
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

#: Columns of :meth:`InteractionExtractor.process_utterances`, in order.
INTERACTION_COLUMNS: list[str] = [
    "qa_rounds",
    "response_latency_s",
    "teacher_questions",
    "student_questions",
    "note_reminders",
    "repeat_requests",
    "teacher_repeat_requests",
    "student_repeat_requests",
    "turns",
    "talk_ratio",
]

_INT_COLUMNS = (
    "teacher_questions",
    "student_questions",
    "note_reminders",
    "repeat_requests",
    "teacher_repeat_requests",
    "student_repeat_requests",
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
        >>> inter.process_utterances(utts, session_ids=["s1", "s2"])  # doctest: +SKIP

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
                utterances get zero counts (``turns`` and ``qa_rounds`` 0) and
                ``NaN`` for ``talk_ratio`` and ``response_latency_s``.  ``None``:
                the sessions present, sorted.  Utterances of other sessions are
                ignored.

        Returns:
            DataFrame indexed by ``session_id`` with :data:`INTERACTION_COLUMNS`
            (question/reminder/repeat counts int64, the rest float64).

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

    def process_utterances(
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

        if g["duration_s"].isna().any():
            row.update(qa_rounds=math.nan, turns=math.nan, talk_ratio=math.nan)
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
        s_start = np.sort(start[student])
        if q_start.size and s_start.size:
            next_q = np.append(q_start[1:], np.inf)
            idx = np.searchsorted(s_start, q_start, side="right")
            has = idx < s_start.size
            reply = s_start[np.minimum(idx, s_start.size - 1)]
            ok = has & (reply <= q_end + self.config.qa_window_s) & (reply < next_q)
            row["qa_rounds"] = float(ok.sum())
            if ok.any():
                row["response_latency_s"] = float(np.mean(reply[ok] - q_end[ok]))
        return row


def _empty_row() -> dict[str, float]:
    row: dict[str, float] = {c: 0 for c in INTERACTION_COLUMNS}
    row.update(qa_rounds=0.0, turns=0.0, talk_ratio=math.nan, response_latency_s=math.nan)
    return row
