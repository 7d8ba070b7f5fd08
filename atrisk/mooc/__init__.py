"""MOOC dropout (KDD Cup 2015 layout): features, CFIN / CFIN-en, baselines, clustering.

Modules:
    kddcup: loader with row-level validation, activity features, context statistics.
    cfin: the Context-aware Feature Interaction Network (Feng et al., AAAI 2019) in PyTorch.
    baselines: LR, linear SVM, RF, GBDT and a 3-layer DNN tuned by 5-fold CV.
    clustering: weekly visit codes, K-means with k by silhouette, per-cluster summary.
    model: train / save / load / evaluate everything (what ``atrisk mooc`` calls).

See ``docs/mooc.md``.
"""
