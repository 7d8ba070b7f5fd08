"""The workspace folder: Parquet tables, failures, and the run's provenance.

Every write is atomic (written to a temporary file in the same folder, then
renamed), so a crash never leaves a partial file that a later run reads as
complete.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from atrisk.errors import AtriskError
from atrisk.version import __version__

#: Tables the workspace holds, in the order the pipeline makes them.
TABLES = ("sessions", "prosody", "timing", "utterances", "prosody_utterances", "in_class",
          "pairs")


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are ordinary files
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
        self.root.mkdir(parents=True, exist_ok=True)
        return write_parquet(df, self.table_path(name))

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
        self.root.mkdir(parents=True, exist_ok=True)
        write_text(config_toml, self.root / "config.toml")
        info = {
            "atrisk_version": __version__,
            "git_commit": git_commit(),
            "finished_at": datetime.now(UTC).isoformat(),
            **(extra or {}),
        }
        write_text(json.dumps(info, indent=2, sort_keys=True, default=str), self.root / "run.json")
