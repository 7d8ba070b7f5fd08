"""Tests of the synthetic cohort generator (atrisk.synthetic)."""

from __future__ import annotations

import csv
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from atrisk.errors import ConfigError
from atrisk.synthetic import (
    EVENT_COLUMNS,
    ORDER_COLUMNS,
    OUTCOME_COLUMNS,
    SESSION_MANIFEST_COLUMNS,
    STUDENT_COLUMNS,
    CohortParams,
    Voice,
    _num_words,
    _recorded_indices,
    generate_cohort,
    plan_dialogue,
)

START = datetime(2024, 3, 1, tzinfo=UTC)
END = START + timedelta(days=CohortParams().cohort_days)
LOG_FILES = {
    "students.csv": STUDENT_COLUMNS,
    "orders.csv": ORDER_COLUMNS,
    "events.csv": EVENT_COLUMNS,
    "outcomes.csv": OUTCOME_COLUMNS,
}


def _read_logs(out: Path) -> dict[str, pd.DataFrame]:
    return {name[:-4]: pd.read_csv(out / "logs" / name, dtype={"grade": "Int64"})
            for name in LOG_FILES}


def _truth(out: Path) -> pd.DataFrame:
    return pd.DataFrame(json.loads((out / "ground_truth.json").read_text())["students"])


@pytest.fixture(scope="module")
def cohort300(tmp_path_factory):
    out = tmp_path_factory.mktemp("c300")
    summary = generate_cohort(out, n_students=300, seed=3, audio=False)
    return out, summary


@pytest.fixture(scope="module")
def audio_cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("audio")
    calls: list[tuple[int, int]] = []
    summary = generate_cohort(out, n_students=4, seed=1, max_recorded_per_student=1,
                              progress=lambda d, t: calls.append((d, t)))
    return out, summary, calls


def test_files_have_schema_columns_and_valid_values(cohort300):
    out, summary = cohort300
    for name, cols in LOG_FILES.items():
        with (out / "logs" / name).open() as fh:
            assert next(csv.reader(fh)) == cols
    assert not (out / "recordings").exists()  # no audio → no recordings folder
    logs = _read_logs(out)
    assert logs["students"].student_id.is_unique and len(logs["students"]) == 300
    assert logs["students"].grade.between(1, 12).all()
    assert logs["orders"].order_id.is_unique and logs["events"].event_id.is_unique
    assert logs["orders"].discount_ratio.between(0, 1).all()
    assert (logs["orders"].n_courses >= 0).all()
    assert (logs["orders"].n_sales_conversations >= 0).all()
    ev = logs["events"]
    assert set(ev.kind) == {"class", "follow_up", "reschedule", "satisfaction"}
    assert ev.loc[ev.kind == "satisfaction", "value"].between(1, 5).all()
    assert ev.loc[ev.kind == "follow_up", "words"].ge(0).all()
    assert ev.loc[ev.kind == "class", "teacher_id"].notna().all()
    assert set(logs["outcomes"].status) == {"dropout", "completion", "ongoing"}
    assert summary.n_classes == int((ev.kind == "class").sum())
    assert summary.n_sessions == 0 and ev.session_id.isna().all()
    assert summary.n_dropouts == int((logs["outcomes"].status == "dropout").sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dropout_rate_and_span_are_plausible(tmp_path, seed):
    s = generate_cohort(tmp_path, n_students=200, seed=seed, audio=False)
    assert 0.10 <= s.dropout_rate <= 0.35
    assert 12.0 <= s.mean_span_days <= 23.0
    assert 3.5 <= s.n_classes / s.n_students <= 7.0  # a class every ~2-4 days


def test_log_times_lie_within_cohort_span(cohort300):
    out, _ = cohort300
    logs = _read_logs(out)
    for df, col in [(logs["students"], "enrolled_at"), (logs["orders"], "ordered_at"),
                    (logs["events"], "time"), (logs["outcomes"], "status_time")]:
        t = pd.to_datetime(df[col], utc=True)
        assert t.min() >= START and t.max() <= END, col
    # order after enrolment, first class after the order
    st = logs["students"].set_index("student_id")
    od = logs["orders"].set_index("student_id")
    assert (pd.to_datetime(od.ordered_at) >= pd.to_datetime(st.enrolled_at)).all()


def test_no_events_after_dropout_time(cohort300):
    out, _ = cohort300
    logs = _read_logs(out)
    truth = _truth(out).set_index("student_id")
    oc = logs["outcomes"].set_index("student_id")
    drop = oc.index[oc.status == "dropout"]
    assert len(drop) > 20
    ev = logs["events"].assign(time=lambda d: pd.to_datetime(d.time, utc=True))
    last = ev.groupby("student_id").time.max()
    for sid in drop:
        t_drop = pd.Timestamp(oc.status_time[sid])
        assert pd.Timestamp(truth.dropout_time[sid]) == t_drop
        if sid in last.index:
            assert last[sid] < t_drop, sid
    assert truth.dropout.sum() == len(drop)


def test_low_engagement_students_reschedule_more(cohort300):
    out, _ = cohort300
    ev = _read_logs(out)["events"]
    truth = _truth(out)
    res = ev[ev.kind == "reschedule"].groupby("student_id").size()
    truth["res"] = truth.student_id.map(res).fillna(0)
    low = truth.loc[truth.engagement < -0.5, "res"].mean()
    high = truth.loc[truth.engagement > 0.5, "res"].mean()
    assert low > 2 * high


def test_preclass_logs_follow_engagement(cohort300):
    out, _ = cohort300
    orders = _read_logs(out)["orders"].merge(_truth(out)[["student_id", "engagement"]])
    assert orders.engagement.corr(orders.n_sales_conversations) < -0.2
    assert orders.engagement.corr(orders.discount_ratio) < -0.4
    assert orders.engagement.corr(orders.n_courses) > 0.4


def test_engagement_decays_before_dropout(tmp_path):
    generate_cohort(tmp_path, n_students=1000, seed=5, audio=False)
    logs = _read_logs(tmp_path)
    oc = logs["outcomes"].set_index("student_id")
    fu = logs["events"].query("kind == 'follow_up'").copy()
    fu = fu[fu.student_id.map(oc.status) == "dropout"]
    to_drop = (pd.to_datetime(fu.student_id.map(oc.status_time), utc=True)
               - pd.to_datetime(fu.time, utc=True)).dt.total_seconds() / 86400
    late, early = fu.words[to_drop <= 5], fu.words[to_drop > 10]
    assert len(late) > 30 and len(early) > 30
    assert late.mean() < early.mean() - 8  # reports shrink in the last days


def test_worse_teachers_lose_more_students(tmp_path):
    generate_cohort(tmp_path, n_students=1000, seed=2, audio=False)
    gt = json.loads((tmp_path / "ground_truth.json").read_text())
    worse = {t["teacher_id"] for t in gt["teachers"] if t["engagement_shift"] < 0}
    assert 0 < len(worse) < len(gt["teachers"]) == 125
    st = pd.DataFrame(gt["students"])
    rate = st.groupby(st.teacher_id.isin(worse)).dropout.mean()
    assert rate[True] > rate[False] + 0.05


def test_same_seed_same_files_other_seed_differs(tmp_path):
    a, b, c = (generate_cohort(tmp_path / n, n_students=40, seed=s, audio=False)
               for n, s in [("a", 7), ("b", 7), ("c", 8)])
    assert a == b.__class__(**{**b.__dict__, "paths": a.paths})
    for name in [*LOG_FILES, "../ground_truth.json"]:
        fa = (tmp_path / "a" / "logs" / name).read_bytes()
        assert fa == (tmp_path / "b" / "logs" / name).read_bytes(), name
        assert fa != (tmp_path / "c" / "logs" / name).read_bytes(), name


def test_rerun_replaces_cohort_but_refuses_foreign_folder(tmp_path):
    generate_cohort(tmp_path / "x", n_students=5, seed=0, audio=False)
    s = generate_cohort(tmp_path / "x", n_students=8, seed=0, audio=False)
    assert len(pd.read_csv(tmp_path / "x" / "logs" / "students.csv")) == 8 == s.n_students
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        generate_cohort(tmp_path / "y", n_students=5, audio=False)
    with pytest.raises(ConfigError, match="n_students"):
        generate_cohort(tmp_path / "z", n_students=0, audio=False)
    with pytest.raises(ConfigError, match="n_teachers"):
        generate_cohort(tmp_path / "z", n_students=5, n_teachers=0, audio=False)


def test_recorded_classes_are_chosen_without_the_future():
    def pick(n, share=0.3, cap=None, first=True, seed=7):
        return _recorded_indices(n, share, cap, np.random.default_rng(seed), first)

    # the first class always; a class's draw does not depend on how many classes follow
    assert pick(1)[0] == 0 and pick(40)[0] == 0
    long = pick(40)
    for n in range(1, 40):
        assert pick(n) == [k for k in long if k < n]
    assert pick(40, cap=2) == long[:2]
    assert pick(0) == [] and pick(5, cap=0) == []
    assert pick(6, share=1.0) == list(range(6))
    assert pick(6, share=0.0) == [0] and pick(6, share=0.0, first=False) == []
    # the share holds: ~30 % of the later classes over many students
    later = [len(pick(21, seed=s)) - 1 for s in range(300)]
    assert abs(np.mean(later) / 20 - 0.3) < 0.02


def test_recording_does_not_depend_on_the_outcome(tmp_path):
    """The last class is recorded no more often for dropouts than for completers."""
    from atrisk.synthetic import recorded_sessions

    generate_cohort(tmp_path, n_students=600, seed=3, audio=False)
    truth = json.loads((tmp_path / "ground_truth.json").read_text())
    rec = recorded_sessions(tmp_path)
    assert len(rec) == sum(len(s["recorded"]) for s in truth["students"])
    share_last = {}
    for status in ("dropout", "completion"):
        group = [s for s in truth["students"] if s["status"] == status and s["n_classes"] > 1]
        share_last[status] = np.mean([s["n_classes"] - 1 in s["recorded"] for s in group])
        assert all(s["recorded"][0] == 0 for s in group)
    # both near record_share (0.1), far from the 100 % of "record the last class"
    assert abs(share_last["dropout"] - share_last["completion"]) < 0.08
    assert max(share_last.values()) < 0.25


def test_number_words():
    assert _num_words(56) == "fifty six"
    assert _num_words(13) == "thirteen"
    assert _num_words(40) == "forty"
    assert _num_words(105) == "one hundred five"


def test_dialogue_depends_on_engagement():
    tv, sv = Voice("en-us+m3", 35, 170), Voice("en-us+f4", 70, 150)

    def stats(e):
        rng = np.random.default_rng(0)
        plans = [plan_dialogue(e, rng, tv, sv) for _ in range(300)]
        student = [t for p in plans for t in p if t.speaker == "student"]
        n_turns = [len(p) for p in plans]
        repeats = sum("again" in t.text or "what did you say" in t.text for t in student)
        return (np.mean([t.gap_s for t in student]), len(student) / len(plans),
                repeats / len(plans), min(n_turns), max(n_turns),
                np.mean([len(t.text.split()) for t in student]))

    hi, lo = stats(2.0), stats(-2.0)
    assert lo[0] > hi[0] + 0.7  # disengaged students answer later
    assert lo[1] < hi[1]  # and say less often something
    assert lo[2] > 2 * hi[2]  # and ask more often to repeat
    assert lo[5] < hi[5] - 1  # with shorter answers
    assert hi[3] >= 4 and max(hi[4], lo[4]) <= 10


def test_audio_tracks_are_16k_mono_and_take_turns(audio_cohort):
    out, summary, _ = audio_cohort
    rec = out / "recordings"
    sessions = pd.read_csv(rec / "sessions.csv")
    assert list(sessions.columns) == SESSION_MANIFEST_COLUMNS
    with_classes = int((_truth(out).n_classes > 0).sum())  # a student may quit before class 1
    assert summary.n_sessions == len(sessions) == with_classes >= 3
    utt = pd.read_csv(out / "utterances.csv")
    for sid in sessions.session_id:
        data = {}
        for track in ("teacher", "student"):
            info = sf.info(rec / sid / f"{track}.wav")
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert info.duration <= 35.0
            data[track], _ = sf.read(rec / sid / f"{track}.wav")
        assert data["teacher"].size == data["student"].size

        def rms(x, a, b):
            return float(np.sqrt(np.mean(x[int(a * 16000): int(b * 16000)] ** 2)))

        u = utt[utt.session_id == sid]
        assert (u.speaker == "teacher").sum() >= 3
        for row in u.itertuples():
            me = data[row.speaker]
            other = data["student" if row.speaker == "teacher" else "teacher"]
            assert rms(me, row.start_s, row.end_s) > 0.02
            quiet = rms(other, row.start_s, row.end_s)
            assert 1e-4 < quiet < 3e-3  # background noise only, not digital silence
        # turns do not overlap
        starts, ends = u.start_s.to_numpy(), u.end_s.to_numpy()
        assert (starts[1:] >= ends[:-1]).all()


def test_recorded_class_events_match_sessions_csv(audio_cohort):
    out, _, _ = audio_cohort
    sessions = pd.read_csv(out / "recordings" / "sessions.csv")
    ev = pd.read_csv(out / "logs" / "events.csv")
    linked = ev[ev.session_id.notna()]
    assert (linked.kind == "class").all()
    merged = linked.merge(sessions, on="session_id", suffixes=("_ev", "_rec"))
    assert len(merged) == len(linked) == len(sessions)
    assert (merged.student_id_ev == merged.student_id_rec).all()
    assert (merged.teacher_id_ev == merged.teacher_id_rec).all()
    assert (merged.time == merged.start_time).all()
    # max_recorded_per_student=1 records each student's first class
    classes = ev[ev.kind == "class"]
    first = classes.groupby("student_id").time.min()
    assert (sessions.set_index("student_id").start_time == first[sessions.student_id]).all()
    from atrisk.synthetic import recorded_sessions

    rec = recorded_sessions(out)
    assert list(rec.session_id) == list(sessions.session_id)
    assert (rec.start_time == pd.to_datetime(sessions.start_time, utc=True)).all()


def test_progress_reaches_total(audio_cohort):
    _, _, calls = audio_cohort
    assert calls[0][0] == 1 and calls[-1][0] == calls[-1][1]
    assert [d for d, _ in calls] == list(range(1, calls[-1][1] + 1))


def test_audio_is_deterministic(tmp_path, audio_cohort):
    out, _, _ = audio_cohort
    generate_cohort(tmp_path, n_students=4, seed=1, max_recorded_per_student=1)
    for f in sorted((out / "recordings").rglob("*.*")):
        rel = f.relative_to(out)
        assert f.read_bytes() == (tmp_path / rel).read_bytes(), rel
    assert (out / "utterances.csv").read_bytes() == (tmp_path / "utterances.csv").read_bytes()


def test_simulated_in_class_follows_class_engagement(tmp_path):
    from atrisk.synthetic import SIMULATED_IN_CLASS_COLUMNS, simulate_in_class

    generate_cohort(tmp_path / "c", n_students=150, seed=4, audio=False)
    sessions, in_class = simulate_in_class(tmp_path / "c", seed=0)
    events = pd.read_csv(tmp_path / "c" / "logs" / "events.csv")
    assert len(sessions) == (events["kind"] == "class").sum() == len(in_class)
    assert list(in_class.columns) == list(SIMULATED_IN_CLASS_COLUMNS)
    assert set(sessions["session_id"]) == set(in_class.index)
    truth = json.loads((tmp_path / "c" / "ground_truth.json").read_text())
    eng = np.concatenate([s["class_engagement"] for s in sorted(
        truth["students"], key=lambda s: s["student_id"])])
    order = sessions.sort_values(["student_id", "start_time"]).index
    talk = in_class.loc[sessions.loc[order, "session_id"], "sim_student_talk_ratio"]
    latency = in_class.loc[sessions.loc[order, "session_id"], "sim_response_latency_s"]
    assert np.corrcoef(eng, talk)[0, 1] > 0.3
    assert np.corrcoef(eng, latency)[0, 1] < -0.3
    with pytest.raises(ConfigError):
        simulate_in_class(tmp_path / "nothing")


@pytest.mark.slow
def test_paper_scale_cohort_statistics(tmp_path):
    from atrisk.features.pairs import pair_keys
    from atrisk.ingest.logs import load_logs
    from atrisk.synthetic import PAPER_N_STUDENTS, PAPER_PARAMS

    s = generate_cohort(tmp_path / "p", n_students=PAPER_N_STUDENTS, seed=0, audio=False,
                        params=PAPER_PARAMS)
    assert 0.14 < s.dropout_rate < 0.19  # seed: 16.39 %
    keys = pair_keys(load_logs(tmp_path / "p" / "logs"))
    assert 60_000 < len(keys) < 74_000  # seed: 66,742


def test_paper_preset_delays_dropout_and_first_class(tmp_path):
    from atrisk.synthetic import PAPER_PARAMS

    generate_cohort(tmp_path / "c", n_students=150, seed=0, audio=False, params=PAPER_PARAMS)
    logs = _read_logs(tmp_path / "c")
    order = pd.to_datetime(logs["orders"].groupby("student_id")["ordered_at"].min(), utc=True)
    oc = logs["outcomes"].set_index("student_id")
    drop = pd.to_datetime(oc.loc[oc["status"] == "dropout", "status_time"], utc=True)
    assert len(drop) > 5
    # dropout_delay_days = 5: no dropout within 5 days of the order
    assert ((drop - order.reindex(drop.index)) >= pd.Timedelta(days=5)).all()
    ev = logs["events"]
    first = pd.to_datetime(ev[ev["kind"] == "class"].groupby("student_id")["time"].min(),
                           utc=True)
    # first_class_days = (1, 2): the first class is on the 1st or 2nd day after the order
    # (later only when reschedules moved it)
    gap_days = (first.dt.floor("D") - order.reindex(first.index).dt.floor("D")).dt.days
    assert gap_days.min() >= 1 and (gap_days <= 2).mean() > 0.8
    # almost every dropout has had a class (so has <student, day> pairs); the few
    # without had their first class rescheduled past the dropout
    assert drop.index.isin(first.index).mean() >= 0.8


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
@pytest.mark.parametrize(("usable", "expected"), [(1, 1), (3, 3), (16, 4)])
def test_speech_threads_default_to_usable_cpus_at_most_4(monkeypatch, usable, expected):
    """The espeak-ng pool is sized by the usable CPUs (affinity, quota), not os.cpu_count()."""
    from atrisk.extract import resources
    from atrisk.synthetic import SpeechSynth

    monkeypatch.setattr(resources, "usable_cpus", lambda: usable)
    assert SpeechSynth().workers == expected
    assert SpeechSynth(workers=7).workers == 7
