import importlib.metadata
import sys

import pytest

from atrisk.errors import ConfigError
from atrisk.extras import EXTRAS, MissingExtraError, available, extra_for, require


def test_installed_module_is_imported_and_returned():
    # a core dependency stands in for an installed extra, so this holds in a core-only venv
    yaml = require("yaml", extra="serve", feature="atrisk serve")
    assert yaml is sys.modules["yaml"] and yaml.__file__
    assert require("yaml.constructor", extra="serve").__name__ == "yaml.constructor"


def test_missing_module_names_the_extra_and_the_command():
    with pytest.raises(MissingExtraError) as err:
        require("atrisk_absent_module", extra="serve", feature="atrisk serve")
    assert isinstance(err.value, ConfigError)
    assert str(err.value) == (
        "atrisk serve needs the optional dependency atrisk_absent_module, which is not "
        "installed: pip install 'atrisk[serve]'"
    )
    assert (err.value.module, err.value.extra, err.value.feature) == (
        "atrisk_absent_module", "serve", "atrisk serve")


def test_installed_but_broken_module_quotes_the_import_error(tmp_path, monkeypatch):
    # A real installed distribution (dist-info metadata) whose module needs a dependency
    # that is missing: the message says so instead of "not installed".
    (tmp_path / "brokenextra.py").write_text("import atrisk_absent_dependency\n")
    info = tmp_path / "brokenextra-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenextra\nVersion: 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert importlib.metadata.version("brokenextra") == "1.0"
    with pytest.raises(MissingExtraError) as err:
        require("brokenextra", extra="whisper", feature="asr.backend = 'whisper'")
    msg = str(err.value)
    assert msg.startswith("asr.backend = 'whisper' needs the optional dependency brokenextra, "
                          "which is installed but cannot be imported (ModuleNotFoundError: ")
    assert "atrisk_absent_dependency" in msg
    assert msg.endswith("reinstall it: pip install 'atrisk[whisper]'")


def test_stray_folder_of_that_name_is_not_the_package(tmp_path, monkeypatch):
    # Ray's temp folder /tmp/ray imports as a namespace package from a program run in /tmp.
    (tmp_path / "atrisk_stray").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    import atrisk_stray  # noqa: F401  (the namespace package that would fool a plain import)

    del sys.modules["atrisk_stray"]
    assert not available("atrisk_stray")
    expected = r"not installed \(the folder .*atrisk_stray is not the package\): pip install"
    with pytest.raises(MissingExtraError, match=expected):
        require("atrisk_stray", extra="ray", feature="engine = 'ray'")
    assert "atrisk_stray" not in sys.modules


def test_extra_lookup_and_availability():
    assert extra_for("ray.data") == "ray"
    assert extra_for("faster_whisper") == "whisper"
    assert {extra for _, extra in EXTRAS.values()} == {
        "serve", "ray", "pocketsphinx", "wav2vec2", "whisper"}
    with pytest.raises(KeyError):
        extra_for("pandas")
    assert available("yaml")
    assert not available("atrisk_absent_module")
