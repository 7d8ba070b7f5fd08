"""The risk list scores exactly the students training would have a pair for that day."""

from __future__ import annotations

import numpy as np
import pandas as pd

from atrisk.config import Config, TrainingConfig
from atrisk.ingest.logs import load_logs
from atrisk.training.model import RiskModel
from atrisk.workspace import Workspace
from tests.features.logs_factory import random_logs


def test_rank_uses_the_training_keys_with_failed_sessions_left_out(tmp_path):
    logs_dir = random_logs(tmp_path / "logs", n_students=30, seed=4)
    # two more students whose only class is a recorded session, not a class event (it
    # starts their pairs); one of the two sessions failed to extract
    late = ["s900", "s901"]
    with open(logs_dir / "students.csv", "a") as fh:
        fh.writelines(f"{s},2024-01-10T09:00:00+00:00,5\n" for s in late)
    with open(logs_dir / "outcomes.csv", "a") as fh:
        fh.writelines(f"{s},ongoing,2024-03-01T00:00:00+00:00\n" for s in late)
    logs = load_logs(logs_dir)
    assert not logs.errors
    day = pd.Timestamp("2024-01-20", tz="UTC")
    sessions = pd.DataFrame({
        "session_id": ["ok1", "bad1"], "student_id": late,
        "teacher_id": ["T0", "T0"], "start_time": [day - pd.Timedelta(days=3)] * 2,
        "duration_s": [600.0, 600.0], "status": ["ok", "failed"], "error": ["", "decode"],
    })
    ws = Workspace(tmp_path / "ws")
    ws.write("sessions", sessions)
    ws.write("in_class", pd.DataFrame({"student_n_words": [40.0, np.nan]},
                                      index=pd.Index(["ok1", "bad1"], name="session_id")))
    cfg = Config().model_copy(update={"training": TrainingConfig(
        horizons=[1], n_estimators=20, temporal_cut=None, n_boot=50)})
    model = RiskModel(cfg).fit(logs, tmp_path / "ws")
    pairs = model.pairs(logs, tmp_path / "ws")
    on_day = set(pairs.loc[pairs["t"] == day, "student_id"])
    risk = model.rank(logs, tmp_path / "ws", day, horizon=1)
    assert set(risk["student_id"]) == on_day
    assert late[0] in on_day and late[1] not in on_day  # the failed session is no class
