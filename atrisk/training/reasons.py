"""Reasons a teacher can read: which named features raise a student's risk, in plain words.

LightGBM gives per-feature contributions (SHAP values, ``pred_contrib=True``) of the
features it sees.  The in-class block reaches it as PCA components, which mean nothing to
a teacher, so each component's contribution is handed back to the in-class features it is
made of (:func:`feature_contributions`): a component's value is
``c = Σ_j W_j · z_j`` (``z`` = the student's imputed, scaled features minus the PCA mean,
``W`` = its loadings), and feature ``j`` gets the share ``W_j z_j / c`` of the component's
contribution (the exact split when the model is linear in ``c``; when the terms nearly
cancel, the shares ``|W_j z_j| / Σ|W z|`` are used instead).  Every contribution then
belongs to a named column.

In-class columns are many (eGeMAPS functionals, text counters), so they are summed into
a few groups a teacher knows (:data:`IN_CLASS_GROUPS`: "takes long to answer", "says
little in class", ...); the direction ("slowly" or "fast") comes from whether the
student's value is below or above the training students'.  Log and time columns are
phrased one by one with the student's value and the usual (median) value of the training
students: "no class for 9 days (usually 2)".
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from atrisk.training.model import RiskModel

#: Prefix of in-class columns.
IN_PREFIX = "in_"

#: In-class groups: ``(key, pattern on the column without "in_", polarity, words when the
#: student's value is low × polarity, words when high × polarity)``; the first matching
#: pattern wins.  Polarity −1 flips a column whose high value means the "low" words
#: (long pauses inside answers = slow speech).
IN_CLASS_GROUPS: list[tuple[str, str, int, str, str]] = [
    ("latency", r"^inter_(response_latency|longest_student_silence)", 1,
     "answers the teacher quickly", "takes long to answer the teacher"),
    ("repeat", r"repeat_requests", 1,
     "rarely asks the teacher to repeat", "often asks the teacher to repeat"),
    ("filler", r"^student_(n_filler|filler_ratio)", 1,
     "rarely hesitates (um, uh)", "hesitates a lot (um, uh)"),
    ("questions", r"^(student_question_share|inter_student_(initiated_)?questions)", 1,
     "asks the teacher few questions", "asks the teacher many questions"),
    ("notes", r"^inter_note_reminders", 1,
     "is rarely reminded to take notes", "is often reminded to take notes"),
    ("pace_pause", r"^student_utt_MeanUnvoicedSegmentLength", -1,
     "speaks slowly, with long pauses", "speaks fluently, with short pauses"),
    ("pace", r"^student_(words_per_s|chars_per_s|.*VoicedSegmentsPerSec|"
     r".*loudnessPeaksPerSec)", 1, "speaks slowly", "speaks fast"),
    ("talk", r"^(student_(n_words|n_utterances|n_sentences|speech_s)|inter_(talk_ratio|turns|"
     r"qa_rounds))", 1, "says little in class", "talks a lot in class"),
    ("answers", r"^student_(sentence_len|type_token_ratio|pos_)", 1,
     "gives short, simple answers", "gives long, varied answers"),
    ("pitch_var", r"^student_.*F0.*(stddev|Range|pctlrange)", 1,
     "speaks in a flat voice", "speaks with a lively voice"),
    ("loudness", r"^student_.*loudness", 1, "speaks quietly", "speaks loudly"),
    ("student_voice", r"^student_", 1, "the student's voice sounded unlike most students'",
     "the student's voice sounded unlike most students'"),
    ("teacher_questions", r"^(inter_teacher_questions|teacher_question_share)", 1,
     "the teacher asked few questions", "the teacher asked many questions"),
    ("teacher_talk", r"^teacher_(n_words|n_utterances|n_sentences|speech_s|words_per_s|"
     r"chars_per_s)", 1, "the teacher talked less than in most classes",
     "the teacher talked more than in most classes"),
    ("teacher", r"^teacher_", 1, "the teacher's voice sounded unlike most classes",
     "the teacher's voice sounded unlike most classes"),
    ("interaction", r".", 1, "the turn-taking was unlike most classes",
     "the turn-taking was unlike most classes"),
]
_GROUP_RE = [(key, re.compile(pat), pol, lo, hi) for key, pat, pol, lo, hi in IN_CLASS_GROUPS]


def in_class_group(column: str) -> tuple[str, int, str, str]:
    """Return ``(group key, polarity, low words, high words)`` of an in-class column.

    Args:
        column: An in-class column, with or without the ``in_`` prefix.

    Example:
        >>> in_class_group("in_inter_response_latency_s")[0]
        'latency'
    """
    name = column[len(IN_PREFIX):] if column.startswith(IN_PREFIX) else column
    for key, pat, pol, lo, hi in _GROUP_RE[:-1]:
        if pat.search(name):
            return key, pol, lo, hi
    key, _, pol, lo, hi = _GROUP_RE[-1]
    return key, pol, lo, hi


def _n(v: float) -> str:
    """Format a count or a day number: no decimals when whole, else one."""
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"


def _d(v: float) -> str:
    """Format a number of days: whole days."""
    return f"{round(v):.0f}"


def _pct(v: float) -> str:
    return f"{100 * v:.0f} %"


def _s(v: float, word: str, plural: str | None = None) -> str:
    return f"{_n(v)} {word if v == 1 else (plural or word + 's')}"


def _idle(v: float, recent: str, none: str) -> str:
    """Say a number of idle days: "<recent> within the past day" below one whole day."""
    days = round(v)
    return f"{recent} within the past day" if days < 1 else f"{none} for {_s(days, 'day')}"


#: Plain words of log and time columns: ``column → (phrase(value), typical(value))``.
_PHRASES: dict[str, tuple[Callable[[float], str], Callable[[float], str]]] = {
    "time_days_since_last_class": (lambda v: _idle(v, "a class", "no class"), _d),
    "time_classes_total": (lambda v: f"{_s(v, 'class', 'classes')} so far", _n),
    "time_mean_class_gap_30d": (
        lambda v: f"{_s(v, 'day')} between classes on average (past 30 days)", _n),
    "time_teacher_dropout_rate": (
        lambda v: f"{_pct(v)} of the teacher's past students dropped out", _pct),
    "time_teacher_students": (lambda v: f"the teacher has taught {_s(v, 'student')}", _n),
    "time_teacher_classes": (
        lambda v: f"the teacher has given {_s(v, 'class', 'classes')}", _n),
    "out_days_since_order": (lambda v: f"{_s(round(v), 'day')} since the latest order", _d),
    "out_order_n_courses": (
        lambda v: f"{_s(v, 'course')} bought in the latest order", _n),
    "out_order_n_sales_conversations": (
        lambda v: f"{_s(v, 'sales talk')} before buying", _n),
    "out_order_discount_ratio": (lambda v: f"bought at a {_pct(v)} discount", _pct),
    "out_courses_ordered": (lambda v: f"{_s(v, 'course')} ordered in total", _n),
    "out_grade": (lambda v: f"grade {_n(v)}", _n),
    "out_days_since_enrolment": (lambda v: f"enrolled {_s(round(v), 'day')} ago", _d),
    "out_follow_ups": (lambda v: f"{_s(v, 'follow-up report')} since the first class", _n),
    "out_last_follow_up_words": (
        lambda v: f"{_s(v, 'word')} in the latest follow-up report", _n),
    "out_reschedules": (lambda v: f"rescheduled {_s(v, 'time')} so far", _n),
    "out_follow_up_ratio": (lambda v: f"follow-up reports after {_pct(v)} of classes", _pct),
    "out_satisfaction": (lambda v: f"latest satisfaction score {_n(v)} of 5", _n),
    # KDD Cup daily pairs (atrisk.mooc.daily_pairs)
    "time_days_since_last_active": (lambda v: _idle(v, "active", "no activity"), _d),
    "out_active_days_total": (lambda v: f"{_s(v, 'active day')} so far", _n),
    "out_days_since_first_activity": (
        lambda v: f"{_s(v, 'day')} since the first activity", _n),
    "out_events_total": (lambda v: f"{_s(v, 'event')} so far", _n),
    "time_mean_active_gap_30d": (
        lambda v: f"{_s(v, 'day')} between active days on average", _n),
}
_WINDOW = re.compile(r"^time_(classes|follow_ups|reschedules|active_days|events|[a-z_]+?)_"
                     r"(\d+)d$")
_TOTAL = re.compile(r"^out_([a-z_]+)_total$")


def _window_phrase(kind: str, w: str) -> Callable[[float], str]:
    if kind == "classes":
        return lambda v: f"{_s(v, 'class', 'classes')} in the past {w} days"
    if kind == "follow_ups":
        return lambda v: f"{_s(v, 'follow-up report')} in the past {w} days"
    if kind == "reschedules":
        return lambda v: f"rescheduled {_s(v, 'time')} in the past {w} days"
    if kind == "active_days":
        return lambda v: f"{_s(v, 'active day')} in the past {w} days"
    if kind == "events":
        return lambda v: f"{_s(v, 'event')} in the past {w} days"
    return lambda v: f"{_s(v, kind.replace('_', ' ') + ' event')} in the past {w} days"


def phrase(column: str, value: float, typical: float | None = None) -> str:
    """Say what a log or time feature's value is, in plain words, with the usual value.

    Args:
        column: A feature column (``out_*`` / ``time_*``).
        value: The student's value (NaN: unknown).
        typical: The training students' median (omitted when ``None``).

    Returns:
        E.g. ``"no class for 9 days (usually 2)"``.

    Example:
        >>> phrase("time_days_since_last_class", 9, 2)
        'no class for 9 days (usually 2)'
        >>> phrase("time_days_since_last_class", 0.4, 2)
        'a class within the past day (usually 2)'
        >>> phrase("time_reschedules_7d", 2, 0)
        'rescheduled 2 times in the past 7 days (usually 0)'
    """
    if column in _PHRASES:
        say, typ = _PHRASES[column]
    elif (m := _WINDOW.match(column)) is not None:
        say, typ = _window_phrase(m.group(1), m.group(2)), _n
    elif (m := _TOTAL.match(column)) is not None:
        kind = m.group(1).replace("_", " ")
        say, typ = (lambda v, k=kind: f"{_s(v, k + ' event')} so far"), _n
    else:
        words = re.sub(r"^(out|time)_", "", column).replace("_", " ")
        say, typ = (lambda v, w=words: f"{w}: {_n(v)}"), _n
    if value is None or (isinstance(value, float) and math.isnan(value)):
        words = re.sub(r"^(out|time)_", "", column).replace("_", " ")
        return f"{words}: not known yet"
    text = say(float(value))
    if typical is not None and not (isinstance(typical, float) and math.isnan(typical)):
        text += f" (usually {typ(float(typical))})"
    return text


def feature_contributions(model: RiskModel, pairs: pd.DataFrame,
                          horizon: int) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Per pair, each named feature's contribution to the score (log-odds, SHAP).

    In-class PCA components are handed back to their features (module docstring).

    Args:
        model: A fitted :class:`~atrisk.training.model.RiskModel`.
        pairs: Pairs with the model's feature columns.
        horizon: A trained horizon.

    Returns:
        ``(contributions, z)``: a DataFrame with one column per model feature column
        (aligned with ``pairs``; the row sums plus the bias give the raw log-odds), and
        the in-class values ``z`` (imputed and scaled, minus the PCA mean; one column
        per in-class column the model uses) or ``None`` without in-class features.
    """
    pipe = model.pipeline(horizon)
    ct = pipe.named_steps["features"]
    x = model.design_matrix(pairs)
    xt = ct.transform(x)
    phi = np.asarray(pipe.named_steps["model"].predict(xt, pred_contrib=True))[:, :-1]
    cols = list(x.columns)
    pos = {c: i for i, c in enumerate(cols)}
    out = np.zeros((len(x), len(cols)))
    names = [str(n) for n in ct.get_feature_names_out()]
    z_full = None
    if "in_class" in ct.named_transformers_:
        inner = ct.named_transformers_["in_class"]
        in_cols = list(model.in_class_columns_)
        kept = [str(c) for c in inner.named_steps["impute"].get_feature_names_out(in_cols)]
        z = inner.named_steps["scale"].transform(
            inner.named_steps["impute"].transform(x[in_cols]))
        pca = inner.named_steps["pca"]
        z = z - pca.mean_
        z_full = pd.DataFrame(z, columns=kept, index=x.index)
        idx = np.array([pos[c] for c in kept])
        comp = [j for j, n in enumerate(names) if n.startswith("in_class__")]
        for k, j in enumerate(comp):
            a = z * pca.components_[k]
            total = a.sum(axis=1)
            spread = np.abs(a).sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                exact = a / total[:, None]
                safe = np.abs(a) / spread[:, None]
            use_exact = (np.abs(total) >= 0.1 * spread)[:, None]
            share = np.nan_to_num(np.where(use_exact, exact, safe))
            out[:, idx] += phi[:, j][:, None] * share
    for j, n in enumerate(names):
        block, _, col = n.partition("__")
        if block == "rest":
            out[:, pos[col]] += phi[:, j]
    return pd.DataFrame(out, columns=cols, index=x.index), z_full


def explain(model: RiskModel, pairs: pd.DataFrame, horizon: int, n_reasons: int = 3) -> list[str]:
    """Return, per pair, what raises its risk most, in words a teacher can act on.

    Args:
        model: The fitted model.
        pairs: Pairs with the model's feature columns.
        horizon: A trained horizon.
        n_reasons: How many reasons per pair.

    Returns:
        One non-empty string per pair, e.g. ``"no class for 9 days (usually 2); in
        recent classes: takes long to answer the teacher"``.
    """
    if len(pairs) == 0:
        return []
    contrib, z = feature_contributions(model, pairs, horizon)
    in_cols = [c for c in model.in_class_columns_ if c in contrib.columns]
    groups = {c: in_class_group(c) for c in in_cols}
    keys = list(dict.fromkeys(g[0] for g in groups.values()))
    words = {g[0]: (g[2], g[3]) for g in groups.values()}
    polarity = {c: g[1] for c, g in groups.items()}
    other = [c for c in contrib.columns if c not in groups]
    c_in = contrib[in_cols].to_numpy() if in_cols else np.zeros((len(contrib), 0))
    member = {k: [i for i, c in enumerate(in_cols) if groups[c][0] == k] for k in keys}
    group_sum = (np.column_stack([c_in[:, member[k]].sum(axis=1) for k in keys])
                 if keys else np.zeros((len(contrib), 0)))
    items = np.hstack([contrib[other].to_numpy(), group_sum])
    labels = other + [f"group:{k}" for k in keys]
    values = model.design_matrix(pairs)
    reference = getattr(model, "reference_", {})
    order = np.argsort(-items, axis=1, kind="stable")[:, :n_reasons]
    texts: list[str] = []
    for i in range(len(items)):
        parts = []
        for j in order[i]:
            if items[i, j] <= 0:
                break
            label = labels[j]
            if label.startswith("group:"):
                k = label[6:]
                top = max(member[k], key=lambda m: c_in[i, m])
                col = in_cols[top]
                sign = (np.sign(z[col].iloc[i]) if z is not None and col in z.columns
                        else 1.0)
                lo, hi = words[k]
                said = hi if sign * polarity[col] > 0 else lo
                parts.append(f"in recent classes: {said}")
            else:
                parts.append(phrase(label, float(values.iloc[i][label]),
                                    reference.get(label)))
        texts.append("; ".join(parts) if parts else "no single factor raises the risk")
    return texts
