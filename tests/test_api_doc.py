"""The example of docs/api.md runs as written and does what it says."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    return max(blocks, key=len)


def test_public_names_import():
    import atrisk

    for name in ("Config", "Extractor", "Logs", "RiskModel", "MoocModel", "Session",
                 "Utterance"):
        assert name in atrisk.__all__ and getattr(atrisk, name) is not None


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_api_example_runs(capsys):
    scope: dict = {}
    exec(compile(_example(), str(DOC), "exec"), scope)  # noqa: S102 - our own docs
    out = capsys.readouterr().out
    result, risk, features = scope["result"], scope["risk"], scope["features"]
    assert result.n_sessions >= 12 and result.n_ok == result.n_sessions
    assert result.failures == []
    assert len(risk) > 0 and risk["probability"].between(0, 1).all()
    assert list(risk["rank"]) == list(range(1, len(risk) + 1))
    assert features.status == "ok" and features.in_class.shape[0] == 1
    assert features.in_class.shape[1] > 100  # prosody of both tracks + text counters
    assert "held-out AUC by horizon" in out
    assert scope["model"].features == scope["config"].features
