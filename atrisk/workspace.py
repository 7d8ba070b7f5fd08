"""The workspace folder: Parquet tables, failures, and the run's provenance.

Every write is atomic (written to a temporary file in the same folder, then
renamed), so a crash never leaves a partial file that a later run reads as
complete.  A run's outputs are written together into a staging folder and then
switched into place (:meth:`Workspace.staging`), so a run that fails half-way (a
full disk) leaves the previous tables and their ``run.json`` as they were.

Workspaces hold children's transcripts and features: files are created ``0600`` and
folders ``0700`` (owner only), whatever the umask.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from atrisk.errors import AtriskError
from atrisk.version import __version__

#: Tables the workspace holds, in the order the pipeline makes them.
TABLES = ("sessions", "prosody", "timing", "utterances", "prosody_utterances", "in_class",
          "pairs")


#: Mode of the files atrisk writes (owner read/write only: they hold student data).
FILE_MODE = 0o600
#: Mode of the folders atrisk creates.
DIR_MODE = 0o700
#: Characters that make a spreadsheet read a CSV cell as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def private_dir(path: Path | str) -> Path:
    """Create ``path`` and its missing parents with mode ``0700``; return it.

    Folders that exist already keep their mode (``os.makedirs`` would give the
    parents the umask's mode).

    Args:
        path: The folder.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
        except FileExistsError:  # made by another process meanwhile
            pass
    if not path.is_dir():
        raise AtriskError(f"{path} exists and is not a folder")
    return path


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The file is created with mode ``0600`` (``mkstemp``) and keeps it; missing
    folders are created ``0700``.
    """
    path = Path(path)
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_parquet(df: pd.DataFrame, path: Path) -> Path:
    """Write ``df`` to ``path`` atomically (index kept when it is named)."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=any(n is not None for n in df.index.names))
    return Path(path)


def write_text(text: str, path: Path) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def escape_csv_cell(value: object) -> object:
    """Return ``value`` safe to open in a spreadsheet: text starting ``= + - @`` gets a ``'``.

    A cell such as ``=HYPERLINK(...)`` or ``=1+2`` would otherwise run as a formula
    (CSV injection).  Numbers and other values are returned unchanged.

    Args:
        value: A cell.

    Returns:
        The cell, text prefixed with ``'`` when it starts with a formula character.
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def write_csv(df: pd.DataFrame, path: Path | str) -> Path:
    """Write ``df`` as CSV atomically, text cells escaped (:func:`escape_csv_cell`), no index.

    Args:
        df: The table (not changed).
        path: Output file.

    Returns:
        ``path``.
    """
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col].dtype):
            out[col] = out[col].map(escape_csv_cell)
    with atomic_path(Path(path)) as tmp:
        out.to_csv(tmp, index=False)
    return Path(path)


def git_commit() -> str | None:
    """Return the git commit of the installed source tree, or ``None`` outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


class Workspace:
    """A folder of Parquet tables made by ``atrisk extract`` and ``atrisk train``.

    Args:
        root: The folder; created when missing.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def table_path(self, name: str) -> Path:
        """Return the Parquet file of table ``name``."""
        return self.root / f"{name}.parquet"

    def has(self, name: str) -> bool:
        """Whether table ``name`` exists."""
        return self.table_path(name).is_file()

    def read(self, name: str) -> pd.DataFrame:
        """Read table ``name``.

        Raises:
            AtriskError: When the table does not exist (names the command that makes it).
        """
        path = self.table_path(name)
        if not path.is_file():
            raise AtriskError(
                f"{path} does not exist: run `atrisk extract RECORDINGS --out {self.root}` first"
            )
        return pd.read_parquet(path)

    def write(self, name: str, df: pd.DataFrame) -> Path:
        """Write table ``name`` atomically and return its path."""
        private_dir(self.root)
        return write_parquet(df, self.table_path(name))

    #: Prefix of the staging folders :meth:`staging` makes inside the workspace.
    STAGING_PREFIX = ".staging-"

    @contextmanager
    def staging(self) -> Iterator[Workspace]:
        """Yield a staging workspace; when the block ends without error, switch its files in.

        Write a run's tables, ``failures.jsonl``, ``config.toml`` and ``run.json`` into
        the yielded workspace (a hidden folder inside this one).  On success they replace
        this workspace's files by renames within one file system (no new data blocks
        are needed, so a full disk cannot stop the switch half-way); a staged
        ``run.json`` replaces the old one last, the old one being removed first, so it
        never describes tables of another run.
        On an error nothing here changes and the staging folder is removed.  Staging
        folders a killed run left behind are removed when the next one starts.

        Yields:
            The staging :class:`Workspace`.
        """
        private_dir(self.root)
        for old in self.root.glob(self.STAGING_PREFIX + "*"):
            shutil.rmtree(old, ignore_errors=True)
        stage = Path(tempfile.mkdtemp(prefix=self.STAGING_PREFIX, dir=self.root))
        try:
            yield Workspace(stage)
            files = sorted(p.name for p in stage.iterdir() if p.is_file())
            if "run.json" in files:
                (self.root / "run.json").unlink(missing_ok=True)
            for name in files:
                if name != "run.json":
                    os.replace(stage / name, self.root / name)
            if "run.json" in files:
                os.replace(stage / "run.json", self.root / "run.json")
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    @property
    def failures_path(self) -> Path:
        """``failures.jsonl``: one JSON object per failed file/row of the last run."""
        return self.root / "failures.jsonl"

    def write_failures(self, failures: Iterable[dict]) -> Path:
        """Replace ``failures.jsonl`` with ``failures`` (atomic)."""
        text = "".join(json.dumps(f, sort_keys=True, default=str) + "\n" for f in failures)
        return write_text(text, self.failures_path)

    def write_provenance(self, config_toml: str, extra: dict | None = None) -> None:
        """Save the resolved config and a ``run.json`` (version, commit, time)."""
        private_dir(self.root)
        write_text(config_toml, self.root / "config.toml")
        info = {
            "atrisk_version": __version__,
            "git_commit": git_commit(),
            "finished_at": datetime.now(UTC).isoformat(),
            **(extra or {}),
        }
        write_text(json.dumps(info, indent=2, sort_keys=True, default=str), self.root / "run.json")
