"""Extra students.csv columns are kept as student attributes (for the fairness table)."""

from __future__ import annotations

import pandas as pd

from atrisk.ingest.logs import Logs, load_logs
from tests.features.logs_factory import random_logs


def test_extra_student_columns_are_kept_as_text(tmp_path):
    folder = random_logs(tmp_path / "logs", n_students=6, seed=1)
    st = pd.read_csv(folder / "students.csv")
    st["school"] = ["A", "B", "", "A", "B", "A"]
    st["region"] = [1, 2, 1, 2, 1, 2]
    st.to_csv(folder / "students.csv", index=False)
    logs = load_logs(folder)
    assert list(logs.students.columns) == ["student_id", "enrolled_at", "grade", "school",
                                           "region"]
    assert logs.students["school"].tolist() == ["A", "B", None, "A", "B", "A"]
    assert logs.students["region"].tolist() == ["1", "2", "1", "2", "1", "2"]
    # the same from frames
    raw = pd.read_csv(folder / "students.csv", keep_default_na=False)
    framed = Logs.from_frames(raw)
    assert framed.students["school"].tolist() == logs.students["school"].tolist()
