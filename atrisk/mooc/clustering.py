"""Temporal-code clustering of learners (the seed's Table 3).

Each enrollment's temporal code is its weekly visit bits
(:func:`atrisk.mooc.kddcup.weekly_visit_bits`: 1 when it had any activity in that
week).  K-means groups the codes; ``k`` is the candidate with the best silhouette
score; each cluster is summarised by its size, mean activity per event type, mean
active days, its centre's visit pattern and its dropout rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from atrisk.mooc.kddcup import EVENT_TYPES, MoocData, weekly_visit_bits


@dataclass
class TemporalClusters:
    """Result of :func:`cluster_temporal_codes`.

    Attributes:
        k: Chosen number of clusters.
        silhouette: Silhouette score of each candidate ``k``.
        labels: ``(n,)`` cluster of each enrollment (0 = the most active cluster).
        summary: One row per cluster (see :func:`cluster_temporal_codes`).
    """

    k: int
    silhouette: dict[int, float]
    labels: np.ndarray
    summary: pd.DataFrame


def cluster_temporal_codes(data: MoocData, ks: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8),
                           seed: int = 0, silhouette_sample: int = 10000) -> TemporalClusters:
    """Cluster the weekly visit codes with K-means, choosing ``k`` by silhouette.

    Args:
        data: Enrollments (labels may be NaN; the dropout rate then ignores them).
        ks: Candidate numbers of clusters (those above the number of distinct codes
            are skipped).
        seed: K-means and silhouette-sampling seed.
        silhouette_sample: Rows the silhouette is computed on (it is quadratic).

    Returns:
        A :class:`TemporalClusters`; ``summary`` has columns ``cluster, n, share,
        weeks_visited`` (mean number of weeks with a visit), ``pattern`` (the
        centre's bits rounded, e.g. ``11000``), ``<event>_mean`` (mean 30-day count
        per event type), ``active_days_mean`` and ``dropout_rate``; clusters are
        numbered by decreasing weeks visited.

    Raises:
        ValueError: When fewer than two distinct codes exist (nothing to cluster).
    """
    bits = weekly_visit_bits(data).astype(np.float32)
    n_codes = len(np.unique(bits, axis=0))
    cands = [k for k in ks if 2 <= k <= n_codes]
    if not cands:
        raise ValueError(f"only {n_codes} distinct weekly codes; cannot choose k from {ks}")
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(bits), size=min(silhouette_sample, len(bits)), replace=False)
    sil, fits = {}, {}
    for k in cands:
        km = KMeans(n_clusters=k, n_init=5, random_state=seed).fit(bits)
        fits[k] = km
        lab = km.labels_[sample]
        sil[k] = (float(silhouette_score(bits[sample], lab)) if len(np.unique(lab)) > 1
                  else -1.0)
    k = max(sil, key=lambda kk: (sil[kk], -kk))
    km = fits[k]
    order = np.argsort(-km.cluster_centers_.sum(1))          # most active first
    relabel = np.empty(k, dtype=int)
    relabel[order] = np.arange(k)
    labels = relabel[km.labels_]
    totals = data.counts.sum(axis=1)                           # (n, 7)
    active = (data.counts.sum(axis=2) > 0).sum(axis=1)
    rows = []
    for c in range(k):
        m = labels == c
        y = data.labels[m]
        y = y[~np.isnan(y)]
        centre = km.cluster_centers_[order[c]]
        row = {"cluster": c, "n": int(m.sum()), "share": float(m.mean()),
               "weeks_visited": float(bits[m].sum(1).mean()),
               "pattern": "".join(str(int(round(v))) for v in centre)}
        row.update({f"{e}_mean": float(totals[m, i].mean()) for i, e in enumerate(EVENT_TYPES)})
        row["active_days_mean"] = float(active[m].mean())
        row["dropout_rate"] = float(y.mean()) if len(y) else float("nan")
        rows.append(row)
    return TemporalClusters(k, sil, labels, pd.DataFrame(rows))
