"""In-class features: one row per session, and their mean over the latest classes.

:func:`build_in_class` joins the prosody table (indexed by ``(session_id, track)``,
the 88 eGeMAPS functionals), the text table (indexed by ``session_id``, columns
already prefixed ``teacher_``/``student_``/``inter_``), when given the ASR-independent
timing features of each track (:data:`TIMING_FEATURES`, prefixed ``teacher_``/
``student_``: speaking rate and pauses, usable whatever the word error rate) and the
means over each speaker's utterances of a few per-utterance functionals
(``teacher_utt_*``, ``student_utt_*``: the prosody of the student's answers, not of the
silence between them) into the ``in_class`` table.
:func:`in_class_at` gives each ``<student, t>`` key the mean of these columns over the
student's latest sessions that ended before ``t`` (prefix ``in_``).

:class:`InClassData` is what the risk model takes as in-class input: the ``in_class``
and ``sessions`` tables of a workspace.

This module imports without torch: it only reads tables made by the extractors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from atrisk.errors import AtriskError
from atrisk.features.logs import asof, to_utc
from atrisk.workspace import Workspace

#: Prefix of the in-class columns of a pair.
IN_PREFIX = "in_"

#: eGeMAPSv02 functionals averaged over a speaker's utterances (``<speaker>_utt_<name>``):
#: pitch level and variability, loudness, voice quality (HNR), and two rate measures
#: (loudness peaks and voiced stretches per second) plus the mean pause inside an answer.
UTTERANCE_FEATURES = (
    "F0semitoneFrom27.5Hz_sma3nz_amean",
    "F0semitoneFrom27.5Hz_sma3nz_stddevNorm",
    "loudness_sma3_amean",
    "HNRdBACF_sma3nz_amean",
    "loudnessPeaksPerSec",
    "VoicedSegmentsPerSec",
    "MeanUnvoicedSegmentLength",
)


#: Timing features (``timing`` table, :mod:`atrisk.extractors.timing`) kept per track as
#: ``<track>_<name>``: acoustic speaking rate (syllable nuclei per second of speech),
#: share of the track with speech, and the pauses inside speech.
TIMING_FEATURES = (
    "speech_rate_syll_s",
    "speech_ratio",
    "pause_count",
    "pause_mean_s",
    "pause_max_s",
    "pauses_per_min",
)


@dataclass(frozen=True)
class InClassData:
    """The in-class input of the risk model: per-session features and when sessions were.

    Attributes:
        table: The ``in_class`` table (indexed by ``session_id``), or ``None`` for none.
        sessions: The ``sessions`` table of the sessions that did not fail (``session_id``,
            ``student_id``, ``start_time``, ``duration_s``), or ``None``.
    """

    table: pd.DataFrame | None = None
    sessions: pd.DataFrame | None = None

    @classmethod
    def from_workspace(cls, workspace: Workspace | Path | str) -> InClassData:
        """Read the ``in_class`` and ``sessions`` tables of a workspace made by ``extract``.

        Failed sessions (and invalid manifest rows) are left out of ``sessions``; a
        workspace without those tables gives no in-class features.

        Args:
            workspace: The workspace folder.

        Returns:
            The in-class data.

        Raises:
            AtriskError: When the folder does not exist.
        """
        ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
        if not ws.root.is_dir():
            raise AtriskError(f"workspace {ws.root} does not exist: run "
                              f"`atrisk extract RECORDINGS --out {ws.root}` first")
        sessions = ws.read("sessions") if ws.has("sessions") else None
        table = ws.read("in_class") if ws.has("in_class") else None
        if sessions is not None:
            sessions = sessions[sessions["status"] != "failed"].dropna(subset=["student_id"])
        return cls(table=table, sessions=sessions)


def as_in_class(value: InClassData | Workspace | Path | str | None) -> InClassData:
    """Return ``value`` as :class:`InClassData` (a workspace folder is read).

    Args:
        value: In-class data, a workspace (folder), or ``None`` for no in-class features.

    Returns:
        The in-class data.

    Raises:
        AtriskError: When a workspace folder does not exist, or ``value`` is of
            another type.
    """
    if value is None:
        return InClassData()
    if isinstance(value, InClassData):
        return value
    if isinstance(value, (Workspace, Path, str)):
        return InClassData.from_workspace(value)
    raise AtriskError(f"in-class features must be a workspace folder or InClassData, got "
                      f"{type(value).__name__}")


def _numeric(df: pd.DataFrame) -> pd.DataFrame:
    return df.select_dtypes(include=["number", "bool"]).astype(float)


def build_in_class(sessions: pd.DataFrame, prosody: pd.DataFrame | None,
                   text: pd.DataFrame | None,
                   utterance_prosody: pd.DataFrame | None = None,
                   timing: pd.DataFrame | None = None) -> pd.DataFrame:
    """Return the in-class table: one row per session of ``sessions``.

    Sessions that failed (or have no prosody/text rows) still get a row, of NaNs.

    Args:
        sessions: The sessions table (``session_id`` column or index).
        prosody: Prosody functionals indexed by ``(session_id, track)`` (or with those
            columns), ``track`` in ``{"teacher", "student"}``; numeric columns are kept
            and prefixed ``teacher_``/``student_``.  ``None`` when not extracted.
        text: Text features indexed by ``session_id`` (or with that column), columns
            already prefixed; numeric columns are kept as given.  ``None`` when absent.
        utterance_prosody: Per-utterance functionals (the ``prosody_utterances`` table)
            indexed by (or with columns) ``session_id, speaker, …``; for each name of
            :data:`UTTERANCE_FEATURES` it holds, ``<speaker>_utt_<name>`` is the mean over
            that speaker's utterances in the session (NaN values skipped; NaN when none).
            ``None``: no such columns.
        timing: Timing features per track (the ``timing`` table) indexed by (or with
            columns) ``session_id, track``; the columns of :data:`TIMING_FEATURES` it
            holds become ``teacher_<name>``/``student_<name>``.  ``None``: no such columns.

    Returns:
        A float DataFrame indexed by ``session_id``.

    Example:
        Student utterances with F0 means 30 and 34 (and one too short to frame, NaN)
        give ``student_utt_F0semitoneFrom27.5Hz_sma3nz_amean = 32``.
    """
    ids = sessions.index if "session_id" not in sessions.columns else sessions["session_id"]
    index = pd.Index(pd.unique(pd.Series(ids).astype(str)), name="session_id", dtype=object)
    parts: list[pd.DataFrame] = []
    if prosody is not None and len(prosody):
        p = prosody
        if "session_id" in p.columns and "track" in p.columns:
            p = p.set_index(["session_id", "track"])
        vals = _numeric(p)
        tracks = p.index.get_level_values("track").astype(str)
        sids = p.index.get_level_values("session_id").astype(str)
        for track in ("teacher", "student"):
            sel = vals[tracks == track].copy()
            sel.index = pd.Index(sids[tracks == track], name="session_id")
            sel = sel[~sel.index.duplicated(keep="last")]
            parts.append(sel.add_prefix(f"{track}_"))
    if timing is not None and len(timing):
        parts += _per_track(timing, [n for n in TIMING_FEATURES if n in timing.columns])
    if utterance_prosody is not None:
        parts += _utterance_means(utterance_prosody)
    if text is not None and len(text.columns):
        tx = text.set_index("session_id") if "session_id" in text.columns else text
        tx = _numeric(tx)
        tx.index = pd.Index(tx.index.astype(str), name="session_id")
        parts.append(tx[~tx.index.duplicated(keep="last")])
    if not parts:
        return pd.DataFrame(index=index)
    out = pd.concat([p.reindex(index) for p in parts], axis=1)
    out.index.name = "session_id"
    return out


def _per_track(table: pd.DataFrame, names: list[str]) -> list[pd.DataFrame]:
    """``names`` of a ``(session_id, track)`` table as ``teacher_<name>``/``student_<name>``."""
    t = table
    if "session_id" in t.columns and "track" in t.columns:
        t = t.set_index(["session_id", "track"])
    vals = t[names].astype(float)
    tracks = t.index.get_level_values("track").astype(str)
    sids = t.index.get_level_values("session_id").astype(str)
    out = []
    for track in ("teacher", "student"):
        sel = vals[tracks == track].copy()
        sel.index = pd.Index(sids[tracks == track], name="session_id")
        out.append(sel[~sel.index.duplicated(keep="last")].add_prefix(f"{track}_"))
    return out


def _utterance_means(table: pd.DataFrame) -> list[pd.DataFrame]:
    """Per-session means of :data:`UTTERANCE_FEATURES` over each speaker's utterances."""
    up = table
    if "session_id" in up.columns and "speaker" in up.columns:
        up = up.set_index(["session_id", "speaker"])
    names = [n for n in UTTERANCE_FEATURES if n in up.columns]
    if not names:
        return []
    vals = up[names].astype(float)
    speakers = up.index.get_level_values("speaker").astype(str)
    sids = up.index.get_level_values("session_id").astype(str)
    out = []
    for speaker in ("teacher", "student"):
        sel = vals[speakers == speaker]
        means = sel.groupby(pd.Index(sids[speakers == speaker], name="session_id")).mean()
        out.append(means.add_prefix(f"{speaker}_utt_"))
    return out


def session_end(sessions: pd.DataFrame) -> pd.Series:
    """Return each session's end: ``start_time + duration_s`` (``start_time`` when unknown).

    Args:
        sessions: Table with ``start_time`` and optionally ``duration_s``.

    Returns:
        UTC timestamps aligned with ``sessions.index``.
    """
    start = to_utc(sessions["start_time"])
    start.index = sessions.index
    if "duration_s" not in sessions.columns:
        return start
    dur = pd.to_numeric(sessions["duration_s"], errors="coerce").fillna(0.0)
    return start + pd.to_timedelta(dur.to_numpy(), unit="s")


def in_class_at(in_class: pd.DataFrame, sessions: pd.DataFrame, keys: pd.DataFrame,
                n_latest: int) -> pd.DataFrame:
    """Mean in-class features of each student's latest sessions that ended before ``t``.

    Args:
        in_class: Table from :func:`build_in_class` (indexed by ``session_id``).
        sessions: Sessions table (``session_id``, ``student_id``, ``start_time``,
            optional ``duration_s``).
        keys: ``student_id`` and ``t`` (UTC) columns.
        n_latest: How many of the latest sessions (end < ``t``) are averaged; NaN values
            are skipped, and a pair with none gets NaN.

    Returns:
        A float DataFrame aligned with ``keys.index``, columns ``in_<in-class column>``.
    """
    cols = [f"{IN_PREFIX}{c}" for c in in_class.columns]
    if not len(in_class.columns) or sessions is None or not len(sessions):
        return pd.DataFrame(np.nan, index=keys.index, columns=cols)
    sess = pd.DataFrame({
        "session_id": sessions["session_id"].astype(str).to_numpy(),
        "student_id": sessions["student_id"].astype(str).to_numpy(),
        "end": session_end(sessions).to_numpy(),
    })
    sess = sess[sess["end"].notna()].sort_values(["student_id", "end"], kind="stable")
    sess = sess.reset_index(drop=True)
    sess["_pos"] = np.arange(len(sess), dtype=float)
    first_pos = sess.groupby("student_id")["_pos"].min()
    matrix = in_class.reindex(pd.Index(sess["session_id"])).to_numpy(dtype=float)

    last = asof(keys, "student_id", "t", sess, "student_id", "end", ["_pos"])["_pos"]
    start = keys["student_id"].astype(str).map(first_pos)
    total = np.zeros((len(keys), matrix.shape[1]))
    count = np.zeros_like(total)
    last_v = last.to_numpy(dtype=float)
    start_v = start.to_numpy(dtype=float)
    for k in range(n_latest):
        pos = last_v - k
        ok = ~np.isnan(pos) & (pos >= start_v)
        rows = matrix[pos[ok].astype(int)]
        present = ~np.isnan(rows)
        total[ok] += np.where(present, rows, 0.0)
        count[ok] += present
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return pd.DataFrame(mean, index=keys.index, columns=cols)
