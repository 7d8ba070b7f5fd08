"""The service's data root: every file the API touches lies inside it.

Layout (folders ``0700``, files ``0600``)::

    DATA_ROOT/
      orgs/<org_id>/                 one folder per organisation; clients' paths are
                                     relative to it and never leave it
        uploads/<session_id>/<track>.<ext>   tracks uploaded through the API
        workspace/                   the tables extract jobs write and predict jobs read
        <anything the operator puts there, e.g. recordings/ with a sessions.csv>

A path a client sends is text relative to its organisation's folder: absolute paths,
``..``, NUL bytes and symlinks that resolve outside the folder are refused
(:class:`PathRejected`, a 422 naming the field).  Messages name the client's relative
path, never a server path (:meth:`DataRoot.redact`).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath, PureWindowsPath

from atrisk.errors import AtriskError
from atrisk.ingest.manifest import AUDIO_EXTENSIONS
from atrisk.serve.keys import check_id
from atrisk.workspace import private_dir

#: Extensions an uploaded track may have: those the decoder reads (``atrisk.ingest``).
UPLOAD_EXTENSIONS = tuple(e.lstrip(".") for e in AUDIO_EXTENSIONS)
#: Longest relative path a client may send.
MAX_PATH_CHARS = 512
#: The organisation's workspace when a job names none.
DEFAULT_WORKSPACE = "workspace"


class PathRejected(AtriskError):
    """A client's path is not a path inside its organisation's folder.

    Attributes:
        field: The request field that held it (e.g. ``teacher_path``).
        reason: Why (names the client's text only).
    """

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def check_relative(value: str) -> str:
    """Return ``value`` when it is a relative path that stays inside its base folder.

    Used by the request models (a ``ValueError`` becomes a 422 naming the field).

    Raises:
        ValueError: Empty, too long, absolute, with ``..``, a NUL byte or a backslash.
    """
    if not value or not value.strip():
        raise ValueError("empty path")
    if len(value) > MAX_PATH_CHARS:
        raise ValueError(f"longer than {MAX_PATH_CHARS} characters")
    if "\x00" in value:
        raise ValueError("contains a NUL byte")
    if "\\" in value:
        raise ValueError("use '/' between folders")
    if PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute() or \
            re.match(r"^[A-Za-z]:", value) or value.startswith("~"):
        raise ValueError("must be a path relative to the organisation's folder of the "
                         "data root, not an absolute path")
    if ".." in PurePosixPath(value).parts:
        raise ValueError("must not contain '..'")
    return value


class DataRoot:
    """The folder holding every file the service reads or writes for clients.

    Args:
        root: The folder (created ``0700`` when missing).
    """

    def __init__(self, root: Path | str):
        self.root = private_dir(Path(root)).resolve()
        private_dir(self.root / "orgs")

    def org_dir(self, org_id: str) -> Path:
        """Return (and create) the folder of organisation ``org_id``."""
        check_id(org_id, "organisation")
        return private_dir(self.root / "orgs" / org_id)

    def uploads(self, org_id: str, session_id: str | None = None) -> Path:
        """Return the uploads folder of an organisation (or of one of its sessions)."""
        base = self.org_dir(org_id) / "uploads"
        if session_id is None:
            return base
        check_id(session_id, "session_id")
        return base / session_id

    def resolve(self, org_id: str, rel: str, field: str, must_exist: str | None = None) -> Path:
        """Return the absolute path of a client's relative path, checked.

        Args:
            org_id: The organisation whose folder ``rel`` is relative to.
            rel: The client's text.
            field: The request field (named in the error).
            must_exist: ``"file"`` or ``"dir"`` to require one; ``None``: may be absent.

        Returns:
            The resolved path (symlinks followed), inside the organisation's folder.

        Raises:
            PathRejected: Not relative, leaves the folder (also through a symlink), or
                does not exist as required.
        """
        try:
            check_relative(rel)
        except ValueError as exc:
            raise PathRejected(field, f"{rel!r}: {exc}") from None
        base = self.org_dir(org_id).resolve()
        try:
            path = (base / rel).resolve()
        except (OSError, RuntimeError):  # a symlink loop
            raise PathRejected(field, f"{rel!r} cannot be resolved (a symlink loop?)") from None
        if not path.is_relative_to(base):
            raise PathRejected(field, f"{rel!r} leaves the organisation's folder (a symlink "
                               "pointing out of the data root?)")
        if must_exist == "dir" and not path.is_dir():
            raise PathRejected(field, f"{rel!r} is not a folder in the organisation's folder "
                               "of the data root")
        if must_exist == "file" and not path.is_file():
            raise PathRejected(field, f"{rel!r} is not a file in the organisation's folder "
                               "of the data root")
        return path

    def inside(self, org_id: str, path: Path | str) -> bool:
        """Whether ``path`` (symlinks followed) lies in the organisation's folder."""
        base = self.org_dir(org_id).resolve()
        try:
            return Path(path).resolve().is_relative_to(base)
        except (OSError, RuntimeError):
            return False

    def relative(self, org_id: str, path: Path | str) -> str:
        """Return ``path`` relative to the organisation's folder (as clients name it)."""
        base = self.org_dir(org_id)
        p = Path(path)
        for b in (base, base.resolve()):
            if p.is_relative_to(b):
                return p.relative_to(b).as_posix()
        return p.name

    def redact(self, text: str, org_id: str | None = None) -> str:
        """Replace server paths in ``text`` (the organisation's folder, the data root).

        Paths inside the organisation's folder become relative; the root becomes
        ``<data-root>``.
        """
        if org_id is not None:
            base = self.org_dir(org_id)
            for b in {str(base.resolve()), str(base)}:
                text = text.replace(b + "/", "").replace(b, ".")
        return text.replace(str(self.root), "<data-root>")
