"""The code fingerprint of extract's resume key: code changes count, comments do not."""

from __future__ import annotations

import sys

import pytest

from atrisk import fingerprint
from atrisk.config import Config
from atrisk.fingerprint import extract_fingerprint, module_fingerprint

B_CODE = '''"""Module b."""
# a comment
from .c import k


def f(x):
    """Double it."""
    return 2 * x + k
'''


@pytest.fixture
def pkg(tmp_path, monkeypatch):
    """A package ``fpkg``: ``a`` imports ``b`` at module level and ``d`` inside a function."""
    root = tmp_path / "fpkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("")
    (root / "a.py").write_text(
        "import json\nfrom fpkg.b import f\n\n\ndef g():\n    from fpkg.sub import d\n"
        "    return d.h(f(1))\n")
    (root / "b.py").write_text(B_CODE)
    (root / "c.py").write_text("k = 1\n")
    (root / "sub" / "d.py").write_text("def h(x):\n    return x\n")
    (root / "other.py").write_text("z = 0\n")  # imported by nobody
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "fpkg" or m.startswith("fpkg.")]:
        monkeypatch.delitem(sys.modules, name)
    return root


def _fp(excluded=()):
    return module_fingerprint(["fpkg.a"], "fpkg", excluded)


@pytest.mark.parametrize(
    ("path", "edit", "changes"),
    [
        ("b.py", lambda s: s.replace("2 * x", "3 * x"), True),  # code
        ("c.py", lambda s: "k = 2\n", True),  # relative import, followed
        ("sub/d.py", lambda s: s.replace("return x", "return -x"), True),  # inside a function
        ("b.py", lambda s: s.replace("# a comment", "# another comment"), False),
        ("b.py", lambda s: s.replace("Double it.", "Twice x."), False),  # docstring
        ("b.py", lambda s: s.replace('"""Module b."""\n', ""), False),  # module docstring
        ("b.py", lambda s: s.replace("return 2 * x + k", "return (2 * x\n            + k)"),
         False),  # formatting
        ("other.py", lambda s: "z = 1\n", False),  # not imported by the closure
    ],
)
def test_fingerprint_follows_code_not_comments(pkg, path, edit, changes):
    before = _fp()
    assert _fp() == before  # stable
    file = pkg / path
    file.write_text(edit(file.read_text()))
    assert (_fp() != before) is changes


def test_excluded_modules_are_neither_hashed_nor_followed(pkg):
    before = _fp(excluded=["fpkg.b"])
    (pkg / "c.py").write_text("k = 5\n")  # only reachable through b
    assert _fp(excluded=["fpkg.b"]) == before
    assert _fp() != _fp(excluded=["fpkg.b"])


def test_missing_entry_module_is_an_error(pkg):
    with pytest.raises(ModuleNotFoundError, match="fpkg.nope"):
        module_fingerprint(["fpkg.nope"], "fpkg")


def test_extract_fingerprint_depends_on_the_backends_and_package_versions(monkeypatch):
    base = Config()
    torch_cfg = base.override({"prosody.backend": "torch"})
    sphinx_cfg = base.override({"asr.backend": "pocketsphinx"})
    before = {name: extract_fingerprint(c)
              for name, c in (("base", base), ("torch", torch_cfg), ("sphinx", sphinx_cfg))}
    assert len(set(before.values())) == 3 and all(len(f) == 16 for f in before.values())
    # settings that do not pick other code: the same fingerprint
    assert extract_fingerprint(base.override({"training.lookback": 3})) == before["base"]
    # another openSMILE version: another fingerprint for openSMILE runs only
    real = fingerprint._version
    monkeypatch.setattr(fingerprint, "_version",
                        lambda d: "9.9" if d == "opensmile" else real(d))
    fingerprint._fingerprint.cache_clear()
    try:
        assert extract_fingerprint(base) != before["base"]
        assert extract_fingerprint(torch_cfg) == before["torch"]
    finally:
        fingerprint._fingerprint.cache_clear()
