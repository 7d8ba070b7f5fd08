"""Cutting segments out of a track given as blocks equals cutting the joined track."""

from __future__ import annotations

import numpy as np
import pytest

from atrisk.extractors.prosody.opensmile_backend import OpenSmileProsody
from atrisk.extractors.prosody.segments import segment_jobs, segment_jobs_from_blocks

RATE = 16000
SEGMENTS = [(0.2, 0.9), (0.5, 0.6), (2.9, 9.0), (4.0, 5.0), (1.2, 1.1),
            (float("nan"), 1.0), (0.0, 0.0), (0.95, 2.05)]


def _track(seconds: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(int(seconds * RATE)).astype(np.float32) * 0.1
    x[100] = np.nan  # non-finite samples count as 0 on both paths
    return x


@pytest.mark.parametrize("block", [1000, 16000, 7777, 10 ** 6])
def test_block_cuts_equal_whole_track_cuts(block):
    x = _track()
    whole = segment_jobs(np.nan_to_num(x), RATE, "s", "student", SEGMENTS)
    blocks = [x[i:i + block] for i in range(0, x.size, block)]
    got: dict[int, tuple] = {}
    for batch in segment_jobs_from_blocks(iter(blocks), RATE, "s", "student", SEGMENTS,
                                          flush_samples=5000):
        for i, job in batch:
            assert i not in got
            got[i] = job
    assert sorted(got) == list(range(len(SEGMENTS)))
    for i, (key, cut, rate) in enumerate(whole):
        gkey, gcut, grate = got[i]
        assert (gkey[:2], rate) == (key[:2], grate)
        np.testing.assert_array_equal(gkey[2:], key[2:])  # NaN start kept as given
        np.testing.assert_array_equal(gcut, cut)
    # by hand: 2.9-9.0 s is clipped to the 3 s track, 4-5 s lies beyond it
    assert got[2][1].size == int(0.1 * RATE) and got[3][1].size == 0
    assert got[7][1].size == int(round(1.1 * RATE))  # spans several blocks


def test_process_segment_stream_equals_process_segments():
    x = _track()
    ex = OpenSmileProsody()
    whole = ex.process_segments(x, RATE, "s", "student", SEGMENTS).frame
    streamed = ex.process_segment_stream(iter([x[:20000], x[20000:]]), RATE, "s", "student",
                                         SEGMENTS).frame
    assert streamed.index.equals(whole.index)
    np.testing.assert_array_equal(streamed.to_numpy(), whole.to_numpy())
    assert len(ex.process_segment_stream(iter([x]), RATE, "s", "student", []).frame) == 0
