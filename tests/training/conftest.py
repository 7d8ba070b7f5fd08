"""Fixtures of the training tests: synthetic pairs, a small config, a fitted model."""

from __future__ import annotations

import pandas as pd
import pytest

from atrisk.config import TrainingConfig

from .pairs_factory import make_pairs


@pytest.fixture(scope="session")
def synth_pairs() -> pd.DataFrame:
    return make_pairs()


@pytest.fixture(scope="session")
def small_config() -> TrainingConfig:
    return TrainingConfig(horizons=[1, 3], n_estimators=40, min_child_samples=5,
                          lookback=3, oversample=0.3, n_boot=200, temporal_cut=None)


@pytest.fixture(scope="session")
def fitted(synth_pairs, small_config):
    from atrisk.training.model import RiskModel

    return RiskModel(small_config).fit_pairs(synth_pairs)
