"""Linguistic counters per speaker (teacher, student) of each session.

Sentences, words, pause/filler words, sentence-length statistics, speaking
rate, question share, type/token ratio and the universal part-of-speech
distribution, computed with one spaCy pipeline that is loaded once (lazily) and
run over all utterances in batches (``nlp.pipe``).

Definitions (the column table is in ``docs/features.md``):

* **word**: a spaCy token that is neither punctuation nor whitespace nor only
  U+FFFD (the replacement of undecodable bytes) (``"don't"`` is two words,
  ``do`` + ``n't``; ``"uh-huh"`` is two, ``uh`` + ``huh``).  Characters
  (``chars_per_s``) likewise skip whitespace and U+FFFD.
* **sentence**: a span from spaCy's rule-based ``sentencizer`` holding at least
  one word.  ASR output has no punctuation, so each utterance is then one
  sentence; sentence statistics of ASR transcripts are therefore utterance
  statistics (accepted, documented).
* **filler**: a match of a ``text.filler_words`` entry, whole tokens,
  case-insensitive; multi-token entries (``uh-huh``) count once.
* **question sentence**: a sentence whose trailing punctuation contains ``?``;
  or, when the utterance has no punctuation at all (apostrophes and hyphens
  aside, i.e. ASR output), a sentence whose first word is one of
  ``text.question_words``.

Lexicons come from :class:`atrisk.config.TextConfig`, so another language plugs
in through the configuration (``text.spacy_model``, ``text.filler_words``,
``text.question_words``; see ``docs/languages.md``).  ``text.spacy_model`` is an
installed pipeline package (``de_core_news_sm``) or ``blank:<lang>`` (e.g.
``blank:de``: ``spacy.blank("de")``, tokenizer + sentencizer only, for a
language without an installed trained pipeline; the ``pos_*`` shares are then
``NaN``).
"""

from __future__ import annotations

import itertools
import math
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from atrisk.config import TextConfig
from atrisk.errors import ModelLoadError, TranscriptError
from atrisk.records import TRACKS

#: The 17 universal POS tags (Universal Dependencies v2); one ``pos_<TAG>`` column each.
POS_TAGS: tuple[str, ...] = (
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM",
    "PART", "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X",
)  # fmt: skip

#: ``text.spacy_model`` prefix for a blank pipeline: ``"blank:de"`` → ``spacy.blank("de")``.
BLANK_PREFIX = "blank:"

#: Columns of :meth:`LinguisticExtractor.transform`, in order.
LINGUISTIC_COLUMNS: list[str] = [
    "n_utterances",
    "n_sentences",
    "n_words",
    "n_filler",
    "filler_ratio",
    "sentence_len_mean",
    "sentence_len_std",
    "sentence_len_p50",
    "sentence_len_p90",
    "chars_per_s",
    "words_per_s",
    "speech_s",
    "question_share",
    "type_token_ratio",
    *[f"pos_{t}" for t in POS_TAGS],
]

_COUNT_COLUMNS = ("n_utterances", "n_sentences", "n_words", "n_filler")
_REQUIRED = ("session_id", "speaker", "start_s", "end_s", "text")
_DISABLED_COMPONENTS = ("parser", "ner", "lemmatizer", "senter")
_QUESTION_MARKS = frozenset("?？")
_NOT_PUNCTUATION = frozenset("'’-‐")
_REPLACEMENT = "\ufffd"


def prepare_utterances(utts: pd.DataFrame) -> pd.DataFrame:
    """Return a cleaned copy of an utterance table for the counters.

    The caller's DataFrame is not changed.  Speakers are stripped and
    lower-cased; rows whose speaker is not ``teacher``/``student`` or whose text
    is empty/whitespace are left out; times that are not finite numbers, a
    negative start or an end before the start become ``NaN`` (so time-based
    counters of that group are ``NaN``).  Rows are sorted by ``session_id`` then
    ``start_s`` (stable; missing times last) and a ``duration_s`` column is added.

    Args:
        utts: Utterances with at least ``session_id, speaker, start_s, end_s, text``
            (as returned by :func:`atrisk.ingest.utterances.load_utterances` or the
            ASR stage).

    Returns:
        The cleaned copy with a fresh ``RangeIndex``.

    Raises:
        TranscriptError: When required columns are missing.

    """
    missing = [c for c in _REQUIRED if c not in utts.columns]
    if missing:
        raise TranscriptError(
            f"utterance table lacks the column(s) {', '.join(missing)}; needs "
            f"{', '.join(_REQUIRED)}"
        )
    df = pd.DataFrame(
        {
            "session_id": utts["session_id"].astype(str).to_numpy(dtype=object),
            "speaker": utts["speaker"].astype(str).str.strip().str.lower().to_numpy(dtype=object),
            "start_s": pd.to_numeric(utts["start_s"], errors="coerce").astype("float64").to_numpy(),
            "end_s": pd.to_numeric(utts["end_s"], errors="coerce").astype("float64").to_numpy(),
            "text": utts["text"].fillna("").astype(str).to_numpy(dtype=object),
        }
    )
    keep = df["speaker"].isin(TRACKS) & (df["text"].str.strip() != "")
    df = df[keep]
    start, end = df["start_s"], df["end_s"]
    bad = ~np.isfinite(start) | ~np.isfinite(end) | (start < 0) | (end < start)
    df = df.assign(
        start_s=start.where(~bad), end_s=end.where(~bad), duration_s=(end - start).where(~bad)
    )
    return df.sort_values(
        ["session_id", "start_s"], kind="mergesort", na_position="last"
    ).reset_index(drop=True)


def session_list(prepared: pd.DataFrame, session_ids: Sequence[str] | None) -> list[str]:
    """Return the sessions to report: ``session_ids`` when given, else those in ``prepared``.

    Args:
        prepared: Output of :func:`prepare_utterances`.
        session_ids: Explicit session list (kept in its order), or ``None``.

    Returns:
        Session ids as strings, without duplicates.

    """
    if session_ids is None:
        return sorted(pd.unique(prepared["session_id"]).tolist())
    return list(dict.fromkeys(str(s) for s in session_ids))


def _is_punctuation(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P") and ch not in _NOT_PUNCTUATION


class LinguisticExtractor:
    """Per-speaker linguistic counters of each session, with one spaCy pipeline.

    The pipeline named by ``config.spacy_model`` is loaded on first use with
    only tokenizer, ``tok2vec``, ``tagger`` and ``attribute_ruler`` (for
    ``token.pos_``); parser, NER and lemmatizer are excluded and the rule-based
    ``sentencizer`` is added.  ``blank:<lang>`` makes ``spacy.blank(lang)``
    (tokenizer + sentencizer; no POS, so the ``pos_*`` shares are ``NaN``).
    All utterances go through ``nlp.pipe`` in batches.

    Args:
        config: Lexicons and model name; defaults to :class:`TextConfig()`.
        batch_size: Texts per ``nlp.pipe`` batch (speed only, not outputs).

    Example:
        >>> ext = LinguisticExtractor()
        >>> feats = ext.transform(utts)  # doctest: +SKIP
        >>> feats.loc[("s1", "student"), "n_filler"]  # doctest: +SKIP

    """

    def __init__(self, config: TextConfig | None = None, *, batch_size: int = 256):
        self.config = config if config is not None else TextConfig()
        self.batch_size = batch_size
        self._nlp: Any = None
        self._filler_matcher: Any = None

    # ------------------------------------------------------------------ model
    @property
    def nlp(self) -> Any:
        """The loaded spaCy ``Language`` (loaded on first access).

        Raises:
            ModelLoadError: When the pipeline in ``text.spacy_model`` cannot be loaded.

        """
        if self._nlp is None:
            self._nlp = self._load()
        return self._nlp

    def _load(self) -> Any:
        import spacy
        from spacy.matcher import PhraseMatcher

        name = self.config.spacy_model
        try:
            if name.startswith(BLANK_PREFIX):
                nlp = spacy.blank(name[len(BLANK_PREFIX) :].strip())
            else:
                nlp = spacy.load(name, exclude=list(_DISABLED_COMPONENTS))
        except (OSError, ImportError, ValueError, KeyError) as exc:
            raise ModelLoadError(
                f"spaCy pipeline {name!r} (config key text.spacy_model) cannot be loaded: "
                f"{exc}. Install the pipeline package or set text.spacy_model to an "
                "installed one."
            ) from None
        if "sentencizer" not in nlp.pipe_names:
            nlp.add_pipe("sentencizer")
        matcher = PhraseMatcher(nlp.vocab, attr="LOWER")
        fillers = [w.strip().lower() for w in self.config.filler_words if w.strip()]
        if fillers:
            matcher.add("FILLER", list(nlp.tokenizer.pipe(fillers)))
        self._filler_matcher = matcher
        return nlp

    # -------------------------------------------------------------- annotate
    def annotate(self, utts: pd.DataFrame) -> pd.DataFrame:
        """Run spaCy once over every utterance and return per-utterance counts.

        Args:
            utts: Utterances (see :func:`prepare_utterances`); not changed.

        Returns:
            The output of :func:`prepare_utterances` plus, per utterance:
            ``n_chars`` (non-whitespace characters), ``n_words``, ``n_filler``,
            ``n_sentences``, ``n_questions`` (question sentences), ``is_question``
            (at least one question sentence), ``n_tokens`` (non-whitespace tokens,
            punctuation included), ``pos_count_<TAG>`` for the 17 UD tags,
            ``has_pos`` (the pipeline set POS tags), ``sentence_lengths`` (list of
            words per sentence) and ``words`` (list of lower-cased words).
            Pass it to :meth:`aggregate` and
            :meth:`atrisk.extractors.interaction.InteractionExtractor.aggregate`
            to share one spaCy pass.

        Raises:
            TranscriptError: When required columns are missing.
            ModelLoadError: When the spaCy pipeline cannot be loaded.

        """
        df = prepare_utterances(utts)
        texts = df["text"].tolist()
        n = len(texts)
        ints = {
            k: np.zeros(n, dtype=np.int64)
            for k in ("n_chars", "n_words", "n_filler", "n_sentences", "n_questions", "n_tokens")
        }
        pos_counts = np.zeros((n, len(POS_TAGS)), dtype=np.int64)
        has_pos = np.zeros(n, dtype=bool)
        sentence_lengths: list[list[int]] = []
        words: list[list[str]] = []
        if n:
            nlp = self.nlp
            longest = max(len(t) for t in texts)
            if longest >= nlp.max_length:
                # Only tagger + sentencizer run, whose memory grows linearly.
                nlp.max_length = longest + 1
            qwords = {w.strip().lower() for w in self.config.question_words}
            pos_index = {t: i for i, t in enumerate(POS_TAGS)}
            x_index = pos_index["X"]
            for i, (text, doc) in enumerate(
                zip(texts, nlp.pipe(texts, batch_size=self.batch_size), strict=True)
            ):
                ints["n_chars"][i] = sum(
                    1 for ch in text if not ch.isspace() and ch != _REPLACEMENT
                )
                asr_like = not any(_is_punctuation(ch) for ch in text)
                lengths = []
                n_q = 0
                for sent in doc.sents:
                    sent_words = [t for t in sent if _is_word(t)]
                    if not sent_words:
                        continue
                    lengths.append(len(sent_words))
                    if _is_question(sent, sent_words, asr_like, qwords):
                        n_q += 1
                sentence_lengths.append(lengths)
                ints["n_sentences"][i] = len(lengths)
                ints["n_questions"][i] = n_q
                toks = [t for t in doc if not t.is_space]
                w = [t.lower_ for t in toks if _is_word(t)]
                words.append(w)
                ints["n_words"][i] = len(w)
                ints["n_tokens"][i] = len(toks)
                ints["n_filler"][i] = _count_fillers(doc, self._filler_matcher)
                has_pos[i] = doc.has_annotation("POS")
                if has_pos[i]:
                    for t in toks:
                        pos_counts[i, pos_index.get(t.pos_, x_index)] += 1
        out = df.assign(**ints)
        out["is_question"] = ints["n_questions"] > 0
        for j, tag in enumerate(POS_TAGS):
            out[f"pos_count_{tag}"] = pos_counts[:, j]
        out["has_pos"] = has_pos
        out["sentence_lengths"] = pd.Series(sentence_lengths, index=out.index, dtype=object)
        out["words"] = pd.Series(words, index=out.index, dtype=object)
        return out

    # ------------------------------------------------------------- aggregate
    def aggregate(
        self, annotations: pd.DataFrame, session_ids: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Turn per-utterance annotations into per-(session, speaker) counters.

        Args:
            annotations: Output of :meth:`annotate`.
            session_ids: Sessions to report (in this order); sessions without
                utterances get zero counts and ``NaN`` ratios.  ``None``: the
                sessions present in ``annotations``, sorted.  Utterances of other
                sessions are ignored.

        Returns:
            DataFrame indexed by ``(session_id, speaker)`` (both speakers for every
            session) with :data:`LINGUISTIC_COLUMNS`; counts are int64, the rest
            float64.

        """
        sessions = session_list(annotations, session_ids)
        index = pd.MultiIndex.from_product(
            [sessions, list(TRACKS)], names=["session_id", "speaker"]
        )
        rows = {key: _empty_row() for key in index}
        for key, g in annotations.groupby(["session_id", "speaker"], sort=False):
            if key in rows:
                rows[key] = _aggregate_group(g)
        out = pd.DataFrame([rows[k] for k in index], index=index, columns=LINGUISTIC_COLUMNS)
        return out.astype({c: ("int64" if c in _COUNT_COLUMNS else "float64") for c in out.columns})

    def transform(
        self, utts: pd.DataFrame, session_ids: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Compute the per-speaker counters of every session.

        Args:
            utts: Utterances with ``session_id, speaker, start_s, end_s, text``;
                not changed.
            session_ids: See :meth:`aggregate`.

        Returns:
            DataFrame indexed by ``(session_id, speaker)`` with :data:`LINGUISTIC_COLUMNS`.

        Raises:
            TranscriptError: When required columns are missing.
            ModelLoadError: When the spaCy pipeline cannot be loaded.

        """
        return self.aggregate(self.annotate(utts), session_ids)


def _is_word(tok: Any) -> bool:
    """Tell whether a token is a word (not punctuation/space, not only U+FFFD)."""
    return not (tok.is_punct or tok.is_space) and bool(tok.text.strip(_REPLACEMENT))


def _is_question(sent: Any, sent_words: list[Any], asr_like: bool, qwords: set[str]) -> bool:
    trailing = []
    for ch in reversed(sent.text.rstrip()):
        if not unicodedata.category(ch).startswith("P"):
            break
        trailing.append(ch)
    if _QUESTION_MARKS.intersection(trailing):
        return True
    return asr_like and sent_words[0].lower_ in qwords


def _count_fillers(doc: Any, matcher: Any) -> int:
    from spacy.util import filter_spans

    if matcher is None or len(matcher) == 0:
        return 0
    return len(filter_spans([doc[s:e] for _, s, e in matcher(doc)]))


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def _empty_row() -> dict[str, float]:
    row: dict[str, float] = {c: math.nan for c in LINGUISTIC_COLUMNS}
    row.update({c: 0 for c in _COUNT_COLUMNS})
    row["speech_s"] = 0.0
    return row


def _aggregate_group(g: pd.DataFrame) -> dict[str, float]:
    row = _empty_row()
    n_words = int(g["n_words"].sum())
    n_sent = int(g["n_sentences"].sum())
    n_filler = int(g["n_filler"].sum())
    row.update(n_utterances=len(g), n_sentences=n_sent, n_words=n_words, n_filler=n_filler)
    row["filler_ratio"] = _ratio(n_filler, n_words)
    lengths = np.fromiter(itertools.chain.from_iterable(g["sentence_lengths"]), dtype=np.float64)
    if lengths.size:
        row["sentence_len_mean"] = float(lengths.mean())
        row["sentence_len_std"] = float(lengths.std(ddof=0))
        row["sentence_len_p50"] = float(np.percentile(lengths, 50))
        row["sentence_len_p90"] = float(np.percentile(lengths, 90))
    if g["duration_s"].notna().all():
        speech = float(g["duration_s"].sum())
        row["speech_s"] = speech
        row["chars_per_s"] = _ratio(float(g["n_chars"].sum()), speech)
        row["words_per_s"] = _ratio(float(n_words), speech)
    else:
        row["speech_s"] = math.nan
    row["question_share"] = _ratio(float(g["n_questions"].sum()), n_sent)
    if n_words:
        types = set(itertools.chain.from_iterable(g["words"]))
        row["type_token_ratio"] = len(types) / n_words
    if g["has_pos"].all():
        n_tok = float(g["n_tokens"].sum())
        if n_tok:
            for tag in POS_TAGS:
                row[f"pos_{tag}"] = float(g[f"pos_count_{tag}"].sum()) / n_tok
    return row
