"""Training: labels and augmentation, the fused LightGBM model, evaluation, the risk list.

These modules import without torch (pandas, scikit-learn, LightGBM, matplotlib):

- :mod:`atrisk.training.labels` — ``dropout_within_{Δ}``, pseudo-positives, weights,
  weighted over-sampling.
- :mod:`atrisk.training.model` — :class:`~atrisk.training.model.RiskModel` and baselines.
- :mod:`atrisk.training.evaluate` — AUC per Δ, recall at the top share, HTML report.
- :mod:`atrisk.training.predict` — the daily ranked risk list with reasons.
"""
