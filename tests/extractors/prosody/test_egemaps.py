"""eGeMAPSv02 functionals in numpy: openSMILE's segment, percentile and moment arithmetic.

The end-to-end agreement with openSMILE is in ``test_prosody_bounded.py``; these pin the
pieces with values computed by hand from openSMILE's cFunctionals rules.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from atrisk.extractors.prosody import egemaps as pt


def test_opensmile_segments_hysteresis_and_cap():
    seg = pt._opensmile_segments
    # a segment needs 3 active frames and ends after 2 inactive ones; one inactive frame
    # inside does not end it; lengths count first-to-last active frame (openSMILE)
    mask = np.array([1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1], bool)
    assert seg(mask) == [3, 7]
    assert seg(np.array([1, 1, 0, 0, 1, 1, 1], bool)) == [2]  # a 2-frame blip is no segment
    assert seg(np.zeros(5, bool)) == []
    per_s, mean_s, std_s = pt._segment_stats([3, 7], 14)
    assert per_s == pytest.approx(2 / 0.14, rel=1e-6)
    assert mean_s == pytest.approx(0.05, rel=1e-6)  # (3 + 7) / 2 frames
    assert std_s == pytest.approx(0.02, rel=1e-6)  # sqrt(((3-5)^2 + (7-5)^2) / 2) frames
    # openSMILE counts at most maxNumSeg = 1000 segments
    many = np.tile(np.array([1, 1, 1, 0, 0], bool), 1001)
    lengths = seg(many)
    assert len(lengths) == 1000 and set(lengths) == {2}
    assert pt._segment_stats(lengths, many.size)[0] == pytest.approx(1000 / (0.01 * 5005),
                                                                      rel=1e-6)


def test_opensmile_percentiles_and_moments_by_hand():
    v = np.arange(1, 11, dtype=np.float32)
    # idx = p * (N - 1): 1.8, 4.5, 7.2 -> linear between neighbours
    assert pt._percentiles(v, exact=True) == pytest.approx((2.8, 5.5, 8.2, 5.4), rel=1e-6)
    mean, sn = pt._moments(v, exact=True)
    assert mean == 5.5 and sn == pytest.approx(math.sqrt(8.25) / 5.5, rel=1e-6)
    assert pt._moments(np.zeros(0, np.float32), exact=True) == (0.0, 0.0)  # no frame: 0
    assert pt._moments(np.full(4, 2.0, np.float32), exact=True) == (2.0, 0.0)


def test_opensmile_dbp_of_the_mean_energy():
    # 10 / ln 10 * ln(x) in float32, floored at 1e-12 (-120 dB: openSMILE on silence)
    assert pt._dbp(1.0) == 0.0
    assert pt._dbp(10.0) == pytest.approx(10.0, rel=1e-6)
    assert pt._dbp(1e-3) == pytest.approx(-30.0, rel=1e-6)
    assert pt._dbp(0.0) == pytest.approx(-120.0, rel=1e-6) == pt._dbp(1e-15)
