"""torch prosody backend: the compiled CPU path of the SHS pitch candidates.

On CPU (with numba) :func:`_shs_candidates` runs :func:`_shs_rows`: the octave-scale
spline in O(n) (a tridiagonal solve per frame) instead of the dense 513 x 513 product
the torch path (CUDA) uses. Both must give the same candidates up to float32 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.interpolate import CubicSpline

from atrisk.extractors import prosody_torch as pt

SR = 16000

pytestmark = pytest.mark.skipif(not pt._HAVE_NUMBA, reason="numba not installed: "
                                "only the torch path exists")


def _spline(y: np.ndarray) -> np.ndarray:
    n = y.size
    out, d2, m2 = np.zeros(n), np.zeros(n), np.zeros(n)
    pt._natural_spline_row(y.astype(np.float32), *pt._spline_tables(), d2, m2, out)
    return out


def test_spline_reproduces_a_straight_line_and_scipys_natural_spline():
    knots, grid, *_ = pt._shs_axis()
    # a natural cubic spline through points of a line is that line (M = 0): y = 2 k - 3
    # on the knots gives 2 g - 3 on the grid, also beyond the last knot
    line = (2 * knots - 3).astype(np.float32)
    np.testing.assert_allclose(_spline(line), 2 * grid - 3, rtol=0, atol=1e-5)
    assert grid[-1] > knots[-1]  # the last grid point is extrapolated
    # random data: the dense spline matrix of the torch path (scipy CubicSpline)
    y = np.random.default_rng(3).random(knots.size).astype(np.float32) ** 3
    want = CubicSpline(knots, y.astype(np.float64), bc_type="natural")(grid)
    np.testing.assert_allclose(_spline(y), want, rtol=0, atol=1e-12 * np.abs(want).max())


def _speech_like_spectra() -> torch.Tensor:
    """Spectra of 60 ms frames: a gliding harmonic voice, then noise, silence, a click."""
    rng = np.random.default_rng(5)
    t = np.arange(SR) / SR
    phase = 2 * np.pi * np.cumsum(np.linspace(110.0, 260.0, t.size)) / SR
    voice = sum(0.4 / h * np.sin(h * phase) for h in range(1, 9))
    voice = voice + 1e-3 * rng.standard_normal(voice.size)
    x = np.concatenate([voice, 0.05 * rng.standard_normal(SR // 2), np.zeros(SR // 2)])
    x[-SR // 8] = 0.9
    x = torch.from_numpy(x.astype(np.float32))[None]
    n_frames = (x.shape[-1] - pt.WIN_LONG) // pt.HOP + 1
    return pt._gauss_mag(pt._gauss_window(pt._frames(x, pt.WIN_LONG, n_frames)))


def test_cpu_candidates_equal_the_torch_path(monkeypatch):
    mag = _speech_like_spectra()
    got_f, got_v = pt._shs_candidates(mag)  # CPU: compiled path
    monkeypatch.setattr(pt, "_HAVE_NUMBA", False)
    want_f, want_v = pt._shs_candidates(mag)  # the torch path, as on CUDA
    assert got_f.shape == want_f.shape == (1, mag.shape[1], pt.SHS_CANDIDATES)
    # the same slots filled, the same candidates, the best first
    assert torch.equal(got_f > 0, want_f > 0)
    np.testing.assert_allclose(got_f.numpy(), want_f.numpy(), rtol=5e-5)
    np.testing.assert_allclose(got_v.numpy(), want_v.numpy(), rtol=0, atol=1e-5)
    # voiced frames of the glide: the best candidate follows 110 -> 260 Hz
    f0 = got_f[0, 10:80, 0].numpy()
    assert (f0 > 100).all() and (f0 < 280).all() and f0[-1] > f0[0]
    assert (got_v[0, 10:80, 0] > pt.SHS_VOICING_CUTOFF).all()
    # silent frames (all-zero spectra): no candidate
    silent = (mag[0].amax(-1) == 0).numpy()
    assert silent.any() and (got_f[0, silent].numpy() == 0).all()


def test_cpu_candidates_of_flat_and_single_peak_rows_equal_the_torch_path(monkeypatch):
    # an all-zero row (no maximum), a rising row (one maximum: everything from bin 3 on
    # is zeroed) and a row with one narrow peak at bin 30 (~470 Hz, with harmonics)
    mag = torch.zeros(1, 3, pt.SHS_POINTS)
    mag[0, 1] = torch.linspace(0, 1, pt.SHS_POINTS)
    mag[0, 2, 30::30] = 1.0
    got = pt._shs_candidates(mag)
    monkeypatch.setattr(pt, "_HAVE_NUMBA", False)
    want = pt._shs_candidates(mag)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=5e-5, atol=1e-6)
    assert (got[0][0, 0] == 0).all()  # no candidate without a maximum
    # harmonics of 468.75 Hz (bins 30, 60, ...): the best candidate is near it
    assert got[0][0, 2, 0].item() == pytest.approx(30 * SR / pt.SHS_NFFT, rel=0.02)
