"""scripts/README.md names a command for every file in docs/results/; scripts are sorted."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _covered(name: str, table: str) -> bool:
    """A file is covered by its own name, its folder (``k12_kddcup/``) or a ``{md,json}`` row."""
    path = Path(name)
    stem = path.name.split(".")[0]
    if f"`{name}`" in table or f"`{path.parts[0]}/`" in table:
        return True
    return f"`{stem}." in table and "{" in table.split(f"`{stem}.", 1)[1].split("`")[0]


def test_every_result_file_has_its_command():
    table = (ROOT / "scripts" / "README.md").read_text(encoding="utf-8")
    results = ROOT / "docs" / "results"
    files = sorted(str(p.relative_to(results)) for p in results.rglob("*") if p.is_file())
    assert files, "docs/results is empty"
    missing = [f for f in files if not _covered(f, table)]
    assert missing == []


def test_scripts_are_benchmarks_or_recipes():
    loose = sorted(p.name for p in (ROOT / "scripts").glob("*.py"))
    assert loose == ["lock.py"]  # set-up, beside setup.sh
    assert (ROOT / "scripts" / "benchmarks").is_dir() and (ROOT / "scripts" / "recipes").is_dir()
