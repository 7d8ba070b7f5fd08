"""Planning a run: resume keys, the part store, and the lazy plan over the sessions.

Each finished session is written to ``WORKSPACE/parts/<session>/<key>.json`` (atomic);
its key hashes everything that decides the result (track contents, session row,
output-changing config, package version, ASR model, code fingerprint), so a rerun
reuses exactly the sessions whose inputs and settings are unchanged.  Part files are
plain JSON with the key inside — nothing in a workspace is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from atrisk import fingerprint
from atrisk.config import Config
from atrisk.extract.session import SessionResult
from atrisk.records import TRACKS, Session, Utterance, Word
from atrisk.version import __version__
from atrisk.workspace import Workspace, atomic_path

#: Format tag of part files; a part of another format is recomputed, never misread.
PART_FORMAT = "atrisk-part-3"


def file_digest(path: Path | None, cache: dict[Path, str] | None = None) -> str:
    """Return the SHA-256 of a file's content (``"missing"``/``"unreadable:…"`` otherwise).

    Args:
        path: The file, or ``None`` for a missing track.
        cache: Digests of files already hashed in this run (shared tracks).

    Returns:
        The hex digest, or a marker that is never equal to a digest.
    """
    if path is None:
        return "missing"
    if cache is not None and path in cache:
        return cache[path]
    try:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
    except OSError as exc:
        digest = f"unreadable:{type(exc).__name__}"
    if cache is not None:
        cache[path] = digest
    return digest


def session_key(
    session: Session,
    config: Config,
    asr_identity: str,
    given: list[Utterance] | None,
    digests: dict[Path, str] | None = None,
) -> str:
    """Return the resume key of a session.

    The key hashes the inputs' content, the output-changing config, the package
    version, the ASR model and the fingerprint of the code and packages that compute
    the session's results (:func:`atrisk.fingerprint.extract_fingerprint`: a backend
    changed without a version bump is recomputed, not reused).

    Args:
        session: The session.
        config: Output-changing settings.
        asr_identity: The ASR backend and model (``Transcriber.name``).
        given: Given utterances (transcripts backend) or ``None``.
        digests: Cache of file digests shared between calls.

    Returns:
        A 20-hex-digit key.
    """
    payload = {
        "session": [
            session.session_id,
            session.student_id,
            session.teacher_id,
            session.start_time.isoformat(),
        ],
        "tracks": [file_digest(session.track_path(t), digests) for t in TRACKS],
        "config": config.section_hash("audio", "prosody", "asr", "timing"),
        "asr": asr_identity,
        "given": None
        if given is None
        else [(u.speaker, u.start_s, u.end_s, u.text) for u in given],
        "version": __version__,
        "code": fingerprint.extract_fingerprint(config),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# --------------------------------------------------------------------------- part store


def part_path(workspace: Path | str, session_id: str, key: str) -> Path:
    """Return the part file of ``session_id`` under resume key ``key``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", session_id)[:80]
    sid_hash = hashlib.sha1(session_id.encode()).hexdigest()[:8]
    return Path(workspace) / "parts" / f"{safe}-{sid_hash}" / f"{key}.json"


def _frame_dump(frame: pd.DataFrame | None) -> dict | None:
    if frame is None:
        return None
    return {
        "index_names": list(frame.index.names),
        "index": [list(k) if isinstance(k, tuple) else [k] for k in frame.index],
        "columns": [str(c) for c in frame.columns],
        "data": frame.to_numpy(dtype="float64").tolist(),
    }


def _frame_load(obj: dict | None) -> pd.DataFrame | None:
    if obj is None:
        return None
    names, columns = obj["index_names"], obj["columns"]
    if obj["index"]:
        index = pd.MultiIndex.from_tuples([tuple(k) for k in obj["index"]], names=names)
    else:
        index = pd.MultiIndex.from_arrays([[] for _ in names], names=names)
    data = np.asarray(obj["data"], dtype="float64").reshape(-1, len(columns))
    return pd.DataFrame(data, index=index, columns=columns)


def write_part(path: Path, result: SessionResult, key: str | None = None) -> None:
    """Write one session's result to its part file (atomic; JSON, key inside).

    Args:
        path: The part file (:func:`part_path`).
        result: The session's result.
        key: Its resume key (default: the file name's stem).
    """
    payload = {
        "format": PART_FORMAT,
        "key": key or Path(path).stem,
        "session_id": result.session_id,
        "status": result.status,
        "error": result.error,
        "duration_s": result.duration_s,
        "track_errors": result.track_errors,
        "timings": result.timings,
        "utterances": [
            [u.session_id, u.speaker, u.start_s, u.end_s, u.text, u.confidence,
             [[w.text, w.start_s, w.end_s] for w in u.words]]
            for u in result.utterances
        ],
        "prosody": _frame_dump(result.prosody),
        "utterance_prosody": _frame_dump(result.utterance_prosody),
        "timing": _frame_dump(result.timing),
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload), encoding="utf-8")


def read_part(path: Path) -> SessionResult | None:
    """Read a part file; ``None`` when it is missing, unreadable, of another format or key.

    Args:
        path: The part file.

    Returns:
        The cached result, or ``None`` (the session is then computed again).
    """
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
        if obj.get("format") != PART_FORMAT or obj.get("key") != Path(path).stem:
            return None
        utterances = [
            Utterance(session_id=str(sid), speaker=speaker, start_s=float(a), end_s=float(b),
                      text=str(text), confidence=float(conf),
                      words=tuple(Word(str(w), float(ws), float(we)) for w, ws, we in words))
            for sid, speaker, a, b, text, conf, words in obj["utterances"]
        ]
        return SessionResult(
            session_id=str(obj["session_id"]),
            status=str(obj["status"]),
            error=str(obj["error"]),
            duration_s=float(obj["duration_s"]) if obj["duration_s"] is not None else math.nan,
            prosody=_frame_load(obj["prosody"]),
            utterances=utterances,
            track_errors={str(k): str(v) for k, v in obj["track_errors"].items()},
            timings={str(k): float(v) for k, v in obj["timings"].items()},
            utterance_prosody=_frame_load(obj["utterance_prosody"]),
            timing=_frame_load(obj["timing"]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


# --------------------------------------------------------------------------- the plan


@dataclass
class PlannedSession:
    """One manifest session with its part file and, when done before, its result.

    Attributes:
        index: Position of the session in the manifest.
        session: The session.
        given: Given utterances (transcripts backend) or ``None``.
        part: Its part file under the current resume key.
        cached: The earlier result under that key, or ``None`` (to be processed).
    """

    index: int
    session: Session
    given: list[Utterance] | None
    part: Path
    cached: SessionResult | None

    @property
    def key(self) -> str:
        """The session's resume key."""
        return self.part.stem


def lookup_session(
    index: int,
    session: Session,
    given: list[Utterance] | None,
    workspace: Path,
    config: Config,
    asr_identity: str,
    digests: dict[Path, str] | None = None,
) -> PlannedSession:
    """Compute the resume key of one session and read its earlier result, if any.

    Only the track files are hashed (read in 1 MiB chunks); nothing is decoded.

    Args:
        index: Position of the session in the manifest.
        session: The session.
        given: Given utterances (transcripts backend) or ``None``.
        workspace: Workspace folder holding ``parts/``.
        config: Output-changing settings.
        asr_identity: Name of the ASR model (part of the key).
        digests: Cache of file digests shared between calls.

    Returns:
        The planned session (``cached`` is ``None`` when it must be processed).
    """
    key = session_key(session, config, asr_identity, given, digests)
    part = part_path(Workspace(workspace).root, session.session_id, key)
    cached = read_part(part) if part.is_file() else None
    return PlannedSession(index, session, given, part, cached)


def iter_plan(
    sessions: Iterable[Session],
    workspace: Path,
    config: Config,
    asr_identity: str,
    given_by_session: dict[str, list[Utterance]] | None,
) -> Iterator[PlannedSession]:
    """Yield the sessions one at a time with their resume lookups (lazy: O(1) sessions held).

    Args:
        sessions: Sessions in manifest order (any iterable; consumed lazily).
        workspace: Workspace folder.
        config: Output-changing settings.
        asr_identity: Name of the ASR model.
        given_by_session: Given utterances per session (transcripts backend), else ``None``.

    Yields:
        One :class:`PlannedSession` per session, in order.
    """
    digests: dict[Path, str] = {}
    for i, s in enumerate(sessions):
        given = None if given_by_session is None else given_by_session.get(s.session_id, [])
        yield lookup_session(i, s, given, workspace, config, asr_identity, digests)
        if len(digests) > 256:  # only shared files need the cache; keep it bounded
            digests.clear()
