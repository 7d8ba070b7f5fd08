"""Fixtures of the features tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .logs_factory import write_logs


@pytest.fixture
def tiny_logs_dir(tmp_path: Path) -> Path:
    return write_logs(tmp_path / "logs")
