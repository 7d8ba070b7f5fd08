"""The CLI contract: commands listed, exit codes, clear messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from atrisk.cli import app

runner = CliRunner()


def test_help_lists_commands_via_console_script():
    exe = Path(sys.executable).parent / "atrisk"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("demo", "extract", "train", "predict", "evaluate", "features"):
        assert cmd in out


def test_extract_without_manifest_is_usage_error(tmp_path):
    (tmp_path / "rec").mkdir()
    r = runner.invoke(
        app,
        [
            "extract",
            str(tmp_path / "rec"),
            "--out",
            str(tmp_path / "ws"),
            "--asr-backend",
            "pocketsphinx",
        ],
    )
    assert r.exit_code == 2
    assert "sessions.csv" in r.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[training]\nlookback = -3\n", ["training.lookback"]),
        # the device is --device now: a config that still sets another one is not ignored
        ('[prosody]\ndevice = "cuda"\n', ["prosody.device", "--device cuda"]),
    ],
)
def test_invalid_config_file_is_usage_error(tmp_path, text, expected):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    (tmp_path / "rec").mkdir()
    r = runner.invoke(
        app, ["extract", str(tmp_path / "rec"), "--out", str(tmp_path / "ws"), "--config", str(cfg)]
    )
    assert r.exit_code == 2
    for part in expected:
        assert part in r.output


def test_unknown_option_value_is_usage_error(tmp_path):
    r = runner.invoke(
        app, ["extract", str(tmp_path), "--out", str(tmp_path / "ws"), "--asr-backend", "espeak"]
    )
    assert r.exit_code == 2


def test_wav2vec2_unloadable_names_reason_and_choices(tmp_path, monkeypatch):
    from tests.conftest import make_bad_recordings

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rec = make_bad_recordings(tmp_path / "rec")
    r = runner.invoke(
        app,
        [
            "extract",
            str(rec),
            "--out",
            str(tmp_path / "ws"),
            "--asr-model",
            str(tmp_path / "no-such-model"),
        ],
    )
    assert r.exit_code == 2
    assert "no-such-model" in r.output
    assert "--asr-backend" in r.output and "pocketsphinx" in r.output
