"""The configuration: what belongs to it (outputs) and what is a run option (device)."""

from __future__ import annotations

import pytest

from atrisk.config import Config, load_config
from atrisk.errors import ConfigError


def test_device_is_not_a_config_setting():
    """The device is the run's --device: not in the saved config, not in the resume key."""
    assert "device" not in Config().model_dump()["prosody"]
    assert "device" not in Config().to_toml()
    with pytest.raises(ConfigError, match="unknown configuration key 'prosody.device'"):
        Config().override({"prosody.device": "cpu"})


def test_config_file_with_the_old_default_device_warns_and_loads(tmp_path):
    """Configs saved before hold prosody.device = "auto" (= --device's default): dropped, said."""
    path = tmp_path / "config.toml"
    path.write_text('[prosody]\nbackend = "torch"\ndevice = "auto"\n')
    with pytest.warns(FutureWarning, match=r"prosody.device is no longer a config setting"):
        cfg = load_config(path)
    expected = Config().override({"prosody.backend": "torch"})
    assert cfg == expected
    # same resume key as a config that never had the key
    assert cfg.section_hash("audio", "prosody", "asr") == expected.section_hash(
        "audio", "prosody", "asr")


@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_config_file_with_another_device_is_an_error_naming_the_option(tmp_path, suffix):
    """Ignoring ``cpu`` could put the model on CUDA: an error that names --device instead."""
    path = tmp_path / f"config{suffix}"
    path.write_text('[prosody]\ndevice = "cpu"\n' if suffix == ".toml"
                    else "prosody:\n  device: cpu\n")
    with pytest.raises(ConfigError, match=r"prosody.device = 'cpu'.*--device cpu"):
        load_config(path)
