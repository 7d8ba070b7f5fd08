"""Temporal-code clustering: k by silhouette, per-cluster summary."""

from __future__ import annotations

import numpy as np
import pytest

from atrisk.mooc.clustering import cluster_temporal_codes
from atrisk.mooc.kddcup import MoocData


def _data():
    # three clear patterns: active all weeks (20, stay), first week only (30, drop),
    # never active (10, drop); video counts 2 per active day
    counts = np.zeros((60, 30, 7), np.float32)
    counts[:20, :, 5] = 2
    counts[20:50, :7, 5] = 2
    labels = np.r_[np.zeros(20), np.ones(40)]
    return MoocData(np.arange(60), np.full(60, "A", object), counts, labels)


def test_three_patterns_found_and_summarised():
    res = cluster_temporal_codes(_data(), ks=(2, 3, 4))
    assert res.k == 3 and res.silhouette[3] == pytest.approx(1.0)
    s = res.summary.set_index("cluster")
    assert s["pattern"].tolist() == ["11111", "10000", "00000"]
    assert s["n"].tolist() == [20, 30, 10]
    assert s["share"].tolist() == pytest.approx([1 / 3, 0.5, 1 / 6])
    assert s["video_mean"].tolist() == pytest.approx([60.0, 14.0, 0.0])
    assert s["active_days_mean"].tolist() == pytest.approx([30.0, 7.0, 0.0])
    assert s["weeks_visited"].tolist() == pytest.approx([5.0, 1.0, 0.0])
    assert s["dropout_rate"].tolist() == [0.0, 1.0, 1.0]
    assert (res.labels[:20] == 0).all() and (res.labels[50:] == 2).all()


def test_too_few_codes():
    d = _data()
    d.counts[:] = 0
    with pytest.raises(ValueError, match="distinct weekly codes"):
        cluster_temporal_codes(d)
