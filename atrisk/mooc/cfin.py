"""CFIN (Feng et al., AAAI 2019) in PyTorch, and CFIN-en (stacking into LightGBM).

The network, for one enrollment with context-smoothed activity features
``x̂ ∈ R^{G×K}`` (G features, each augmented to K values by
:func:`atrisk.mooc.kddcup.augment`) and context features ``z``:

1. normalised inputs (mean/std of each of the G·K values on the training rows);
2. embedding ``e_{gk} = x̂_{gk} · a_{gk}`` with a learned ``a_{gk} ∈ R^d`` per value;
3. per-group convolution: a Conv1d over the G·K embedded values with kernel = stride =
   ``m_g = K``, so each feature group (one activity feature with its context
   statistics) is fused into ``v_g ∈ R^{conv}`` (ReLU); computed in an exactly
   equivalent factored form (:meth:`CFINNet.group_vectors`) that is ~16× cheaper;
4. context vector ``c = ReLU(W_c [z_1 b_1; …; z_n b_n] + b_c)`` from embedded context
   values (as the seed embeds its one-hot/numeric user and course fields);
5. attention (eqs. 4–6): ``u_g = ReLU(W_a [v_g; c] + b_a)``,
   ``λ_g = softmax_g(h_aᵀ u_g)``, ``s = Σ_g λ_g v_g``; with attention off ``s = Σ_g v_g``;
6. an L-layer DNN (ReLU, dropout) on ``[s; c]`` and a sigmoid output;
   log loss + L2 (Adam ``weight_decay``), Adam.

CFIN-en feeds the DNN's last hidden layer together with the tabular features
``[X, Z]`` into LightGBM (:class:`CFINEnsemble`).
"""

from __future__ import annotations

import copy
import pickle
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from atrisk.device import resolve_device
from atrisk.errors import ModelLoadError
from atrisk.mooc.config import CFINConfig


class CFINNet(nn.Module):
    """The CFIN network (see the module docstring).

    Args:
        n_groups: G, number of activity features (groups).
        k: K, values per group after context smoothing (the convolution stride m_g).
        z_dim: Number of context features (0: no context).
        cfg: Hyper-parameters.
    """

    def __init__(self, n_groups: int, k: int, z_dim: int, cfg: CFINConfig):
        super().__init__()
        self.n_groups, self.k, self.z_dim = n_groups, k, z_dim
        d = cfg.embed_dim
        self.a = nn.Parameter(torch.randn(n_groups * k, d) * 0.1)
        self.conv = nn.Conv1d(d, cfg.conv_size, kernel_size=k, stride=k)
        ctx = cfg.context_size if z_dim > 0 else 0
        if z_dim > 0:
            self.b = nn.Parameter(torch.randn(z_dim, d) * 0.1)
            self.ctx = nn.Linear(z_dim * d, ctx)
        self.use_attention = bool(z_dim > 0 if cfg.attention is None else cfg.attention)
        if self.use_attention:
            self.att = nn.Linear(cfg.conv_size + ctx, cfg.attn_size)
            self.att_h = nn.Linear(cfg.attn_size, 1, bias=False)
        layers: list[nn.Module] = []
        width = cfg.conv_size + ctx
        for h in cfg.hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = h
        self.dnn = nn.Sequential(*layers)
        self.out = nn.Linear(width, 1)

    def group_vectors(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``v_g = ReLU(conv_{stride m_g}(x̂ · a))`` for every group: ``(B, G, conv)``.

        Computed in factored form: the embedding is linear in ``x̂`` and the convolution
        is linear in the embedding, so ``Σ_{k,d} W[c,d,k] a_{gk,d} x̂_{gk}`` equals
        ``Σ_k M_{gk,c} x̂_{gk}`` with ``M_{gk} = W[:, :, k] a_{gk}``.  Same numbers as
        :meth:`group_vectors_explicit`, without the ``(B, G·K, d)`` embedded tensor.

        Args:
            x: ``(B, G*K)`` normalised context-smoothed features.
        """
        w = self.conv.weight                                            # (conv, d, K)
        m = torch.einsum("cdk,gkd->gkc", w, self.a.view(self.n_groups, self.k, -1))
        v = torch.einsum("bgk,gkc->bgc", x.view(len(x), self.n_groups, self.k), m)
        return torch.relu(v + self.conv.bias)

    def group_vectors_explicit(self, x: torch.Tensor) -> torch.Tensor:
        """Return the same as :meth:`group_vectors`, literally: embed, then Conv1d.

        Args:
            x: ``(B, G*K)`` normalised context-smoothed features.
        """
        e = x.unsqueeze(-1) * self.a                                     # (B, G*K, d)
        return torch.relu(self.conv(e.transpose(1, 2))).transpose(1, 2)  # (B, G, conv)

    def forward(self, x: torch.Tensor, z: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Return ``(logits, last hidden layer, attention weights or None)``.

        Args:
            x: ``(B, G*K)`` normalised context-smoothed features.
            z: ``(B, z_dim)`` normalised context features.
        """
        v = self.group_vectors(x)                                        # (B, G, conv)
        c = None
        if self.z_dim > 0:
            c = torch.relu(self.ctx((z.unsqueeze(-1) * self.b).flatten(1)))
        lam = None
        if self.use_attention:
            cc = c.unsqueeze(1).expand(-1, v.shape[1], -1) if c is not None else v[..., :0]
            u = torch.relu(self.att(torch.cat([v, cc], 2)))                # eq. 4
            lam = torch.softmax(self.att_h(u).squeeze(-1), dim=1)          # eq. 5
            s = (lam.unsqueeze(-1) * v).sum(1)                             # eq. 6
        else:
            s = v.sum(1)
        parts = [s] if c is None else [s, c]
        h = self.dnn(torch.cat(parts, 1))
        return self.out(h).squeeze(-1), h, lam


class CFINClassifier:
    """Trains and applies :class:`CFINNet` on ``(X_aug, Z, y)`` arrays.

    Args:
        config: Hyper-parameters.
        device: ``auto``, ``cpu`` or ``cuda``.
        threads: Torch CPU threads (1: the batches are small, more threads mostly spin).
    """

    def __init__(self, config: CFINConfig | None = None, device: str = "auto", threads: int = 1):
        self.config = config or CFINConfig()
        self.device = device
        self.threads = threads

    def _prep(self, X_aug: np.ndarray, Z: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = (X_aug.reshape(len(X_aug), -1) - self.x_mean_) / self.x_std_
        z = (Z - self.z_mean_) / self.z_std_
        return (torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(z, dtype=torch.float32))

    def fit(self, X_aug: np.ndarray, Z: np.ndarray, y: np.ndarray,
            log=None) -> CFINClassifier:
        """Fit on training rows (a share is held out for early stopping).

        Args:
            X_aug: ``(n, G, K)`` context-smoothed features.
            Z: ``(n, z)`` context features (``z`` may be 0).
            y: 0/1 labels.
            log: Optional callable receiving one line per epoch.

        Returns:
            ``self``.
        """
        from sklearn.metrics import roc_auc_score

        cfg = self.config
        torch.set_num_threads(self.threads)
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        dev = resolve_device(self.device)
        n, g, k = X_aug.shape
        flat = X_aug.reshape(n, -1).astype(np.float64)
        self.x_mean_ = flat.mean(0).astype(np.float32)
        self.x_std_ = np.where(flat.std(0) > 1e-6, flat.std(0), 1.0).astype(np.float32)
        Z = np.asarray(Z, np.float32).reshape(n, -1)
        self.z_mean_ = Z.mean(0) if Z.shape[1] else np.zeros(0, np.float32)
        zs = Z.std(0) if Z.shape[1] else np.ones(0, np.float32)
        self.z_std_ = np.where(zs > 1e-6, zs, 1.0).astype(np.float32)
        self.shape_ = (g, k, Z.shape[1])
        self.net_ = CFINNet(g, k, Z.shape[1], cfg).to(dev)
        x, z = self._prep(X_aug, Z)
        yt = torch.as_tensor(np.asarray(y, np.float32))
        perm = rng.permutation(n)
        n_val = int(n * cfg.val_fraction) if len(np.unique(y)) == 2 and n >= 50 else 0
        val, tr = perm[:n_val], perm[n_val:]
        opt = torch.optim.Adam(self.net_.parameters(), lr=cfg.lr, weight_decay=cfg.l2)
        loss_fn = nn.BCEWithLogitsLoss()
        best, best_state, bad = -np.inf, None, 0
        self.history_: list[dict] = []
        for epoch in range(cfg.epochs):
            self.net_.train()
            order = tr[rng.permutation(len(tr))]
            total = 0.0
            for i in range(0, len(order), cfg.batch_size):
                idx = order[i: i + cfg.batch_size]
                logits, _, _ = self.net_(x[idx].to(dev), z[idx].to(dev))
                loss = loss_fn(logits, yt[idx].to(dev))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            rec = {"epoch": epoch + 1, "train_loss": total / max(len(order), 1)}
            if n_val and len(np.unique(y[val])) == 2:
                p = self._proba_t(x[val], z[val])
                rec["val_auc"] = float(roc_auc_score(y[val], p))
                if rec["val_auc"] > best:
                    best, best_state, bad = rec["val_auc"], copy.deepcopy(
                        self.net_.state_dict()), 0
                else:
                    bad += 1
            self.history_.append(rec)
            if log:
                log(rec)
            if bad >= cfg.patience:
                break
        if best_state is not None:
            self.net_.load_state_dict(best_state)
        self.net_.eval()
        return self

    @torch.no_grad()
    def _forward_all(self, x: torch.Tensor, z: torch.Tensor, batch: int = 4096):
        self.net_.eval()
        dev = next(self.net_.parameters()).device
        ps, hs = [], []
        for i in range(0, len(x), batch):
            logit, h, _ = self.net_(x[i: i + batch].to(dev), z[i: i + batch].to(dev))
            ps.append(torch.sigmoid(logit).cpu())
            hs.append(h.cpu())
        return torch.cat(ps).numpy(), torch.cat(hs).numpy()

    def _proba_t(self, x, z) -> np.ndarray:
        return self._forward_all(x, z)[0]

    def predict_proba(self, X_aug: np.ndarray, Z: np.ndarray) -> np.ndarray:
        """Dropout probability of each row.

        Args:
            X_aug: ``(n, G, K)``.
            Z: ``(n, z)``.

        Returns:
            ``(n,)`` probabilities.
        """
        return self._forward_all(*self._prep(X_aug, np.asarray(Z, np.float32)))[0]

    def hidden(self, X_aug: np.ndarray, Z: np.ndarray) -> np.ndarray:
        """Return the DNN's last hidden layer for each row (the CFIN-en features).

        Args:
            X_aug: ``(n, G, K)``.
            Z: ``(n, z)``.

        Returns:
            ``(n, hidden[-1])`` array.
        """
        return self._forward_all(*self._prep(X_aug, np.asarray(Z, np.float32)))[1]

    def save(self, folder: Path) -> None:
        """Write ``cfin.pt`` (state_dict + normalisation + config) into ``folder``."""
        arrays = {k: torch.as_tensor(getattr(self, k + "_"))
                  for k in ("x_mean", "x_std", "z_mean", "z_std")}
        from atrisk.workspace import atomic_path

        with atomic_path(Path(folder) / "cfin.pt") as tmp:
            torch.save({"state_dict": self.net_.state_dict(), "config": asdict(self.config),
                        "shape": list(self.shape_), **arrays}, tmp)

    @classmethod
    def load(cls, folder: Path, device: str = "auto", threads: int = 1) -> CFINClassifier:
        """Load a model written by :meth:`save`.

        Raises:
            ModelLoadError: When ``cfin.pt`` is missing or does not fit the network.
        """
        path = Path(folder) / "cfin.pt"
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            self = cls(CFINConfig(**blob["config"]), device, threads)
            g, k, zd = blob["shape"]
            self.shape_ = (g, k, zd)
            self.net_ = CFINNet(g, k, zd, self.config)
            self.net_.load_state_dict(blob["state_dict"])
        except (OSError, KeyError, RuntimeError, TypeError, ValueError,
                pickle.UnpicklingError) as exc:
            raise ModelLoadError(f"{path}: cannot load the CFIN model ({exc})") from exc
        self.net_.to(resolve_device(device)).eval()
        for key in ("x_mean", "x_std", "z_mean", "z_std"):
            setattr(self, key + "_", blob[key].numpy().astype(np.float32))
        torch.set_num_threads(threads)
        return self


class CFINEnsemble:
    """CFIN-en: ``[CFIN last hidden layer, X, Z]`` → LightGBM.

    LightGBM rather than the seed's XGBoost: it is installed here (xgboost is not),
    trains faster on CPU with histogram splits, and is the project's GBDT everywhere
    else, so CFIN-en and the GBDT baseline share one implementation.

    Args:
        params: ``lightgbm.LGBMClassifier`` parameters.
    """

    def __init__(self, params: dict | None = None):
        self.params = params or {}

    def _design(self, cfin: CFINClassifier, X_aug, Z, tabular) -> np.ndarray:
        return np.hstack([cfin.hidden(X_aug, Z), tabular]).astype(np.float32)

    def fit(self, cfin: CFINClassifier, X_aug: np.ndarray, Z: np.ndarray,
            tabular: np.ndarray, y: np.ndarray) -> CFINEnsemble:
        """Fit LightGBM on the hidden layer of a fitted CFIN plus ``tabular`` features.

        Args:
            cfin: A fitted :class:`CFINClassifier`.
            X_aug: ``(n, G, K)``.
            Z: ``(n, z)``.
            tabular: ``(n, p)`` features ``[X, Z]``.
            y: Labels.

        Returns:
            ``self``.
        """
        from lightgbm import LGBMClassifier

        p = {"n_estimators": 400, "learning_rate": 0.03, "num_leaves": 31,
             "min_child_samples": 40, "subsample": 0.8, "subsample_freq": 1,
             "colsample_bytree": 0.8, "n_jobs": 1, "verbose": -1, "random_state": 0}
        p.update(self.params)
        self.model_ = LGBMClassifier(**p).fit(self._design(cfin, X_aug, Z, tabular), y)
        return self

    def predict_proba(self, cfin: CFINClassifier, X_aug: np.ndarray, Z: np.ndarray,
                      tabular: np.ndarray) -> np.ndarray:
        """Dropout probability of each row (see :meth:`fit` for the arguments)."""
        return self.model_.predict_proba(self._design(cfin, X_aug, Z, tabular))[:, 1]
