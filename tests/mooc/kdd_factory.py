"""Tiny folders in the KDD Cup 2015 layout, generated inside the tests.

A latent engagement per enrollment drives its daily activity and its label (low
engagement and fading activity → dropout), and each course has its own activity
level, so course context matters.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd

from atrisk.mooc.kddcup import COURSE_COLUMNS

START = pd.Timestamp("2014-06-01")


def course_rows(eids, course_scale: float, rng: np.random.Generator,
                users=None) -> tuple[list[str], dict[int, int]]:
    """Return CSV lines (no header) of 30 days per enrollment and their labels."""
    lines, labels = [], {}
    for i, eid in enumerate(eids):
        eng = rng.beta(1.2, 2.5)
        fade = rng.uniform(0.0, 1.0)
        stop = int(30 * (1 - fade * (1 - eng))) if eng < 0.5 else 30
        for d in range(30):
            lam = course_scale * eng * (1.0 if d < stop else 0.05) * 3
            c = rng.poisson([lam, lam * 0.2, lam, lam * 0.8, lam * 0.5, lam * 0.6, lam * 0.1])
            date = (START + pd.Timedelta(days=d)).date()
            row = [str(eid), str(date)] + [str(int(v)) for v in c]
            if users is not None:
                row.append(str(users[i]))
            lines.append(",".join(row))
        p = 1 / (1 + np.exp(-(2.5 - 8 * eng - 2 * (stop == 30))))
        labels[int(eid)] = int(rng.random() < p)
    return lines, labels


def make_kdd_folder(root: Path, courses: dict[str, int], seed: int = 0, start_id: int = 1,
                    users: bool = False, truth: bool = True) -> tuple[Path, dict[int, int]]:
    """Write ``trainCourse<ID>.csv.gz`` files and ``truth.csv``; return (folder, labels)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    labels: dict[int, int] = {}
    eid = start_id
    for j, (cid, n) in enumerate(courses.items()):
        eids = list(range(eid, eid + n))
        eid += n
        us = [f"u{e % 7}" for e in eids] if users else None
        lines, lab = course_rows(eids, 0.5 + j, rng, us)
        labels.update(lab)
        header = ",".join(COURSE_COLUMNS + (["user_id"] if users else []))
        with gzip.open(root / f"trainCourse{cid}.csv.gz", "wt") as fh:
            fh.write(header + "\n" + "\n".join(lines) + "\n")
    if truth:
        pd.DataFrame({"enrollment_id": list(labels), "label": list(labels.values())}).to_csv(
            root / "truth.csv", index=False)
    return root, labels
