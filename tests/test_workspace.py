"""The workspace helpers: private files and folders, CSV cells a spreadsheet cannot run."""

from __future__ import annotations

import csv
import os
import stat

import pandas as pd

from atrisk.workspace import atomic_path, escape_csv_cell, private_dir, write_csv, write_text


def _mode(p) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_files_are_0600_and_new_folders_0700_whatever_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        out = write_text("x", tmp_path / "a" / "b" / "f.txt")
        with atomic_path(tmp_path / "a" / "g.bin") as tmp:
            tmp.write_bytes(b"1")
    finally:
        os.umask(old)
    assert _mode(out) == 0o600 and _mode(tmp_path / "a" / "g.bin") == 0o600
    assert _mode(tmp_path / "a") == 0o700 and _mode(tmp_path / "a" / "b") == 0o700
    existing = tmp_path / "kept"
    existing.mkdir(mode=0o755)
    os.chmod(existing, 0o755)
    private_dir(existing / "new")
    assert _mode(existing) == 0o755 and _mode(existing / "new") == 0o700


def test_csv_cells_starting_with_a_formula_character_are_escaped(tmp_path):
    df = pd.DataFrame({"student_id": ["=1+2", "+A1", "-2+3", "@SUM(A1)", "S1", "\tx"],
                       "probability": [0.9, 0.8, -0.5, 0.6, 0.5, 0.4],
                       "top_reasons": ['=HYPERLINK("http://x")', "fine", None, "ok", "a", "b"]})
    write_csv(df, tmp_path / "r.csv")
    with open(tmp_path / "r.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["student_id"] for r in rows] == ["'=1+2", "'+A1", "'-2+3", "'@SUM(A1)", "S1",
                                               "'\tx"]
    assert rows[0]["top_reasons"] == "'=HYPERLINK(\"http://x\")"
    assert [r["probability"] for r in rows][2] == "-0.5"  # numbers are left alone
    assert df["student_id"].iloc[0] == "=1+2"  # the caller's frame is not changed
    assert escape_csv_cell(-3) == -3 and escape_csv_cell("x=1") == "x=1"
    assert _mode(tmp_path / "r.csv") == 0o600
