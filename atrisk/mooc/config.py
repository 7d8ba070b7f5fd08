"""Hyper-parameters of CFIN, importable without torch (the MOOC model's config holds them)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CFINConfig:
    """Hyper-parameters of CFIN (serialisable).

    Attributes:
        embed_dim: Size d of each value's embedding vector ``a``.
        conv_size: Output channels of the per-group convolution.
        context_size: Size of the context vector ``c``.
        attn_size: Size of the attention hidden layer.
        hidden: Sizes of the DNN layers.
        dropout: Dropout rate in the DNN.
        attention: Use attention (``None``: on exactly when context features exist).
        lr: Adam learning rate.
        l2: L2 weight (Adam ``weight_decay``).
        epochs: Maximum epochs.
        batch_size: Mini-batch size.
        patience: Early-stopping patience (epochs) on the held-out validation AUC.
        val_fraction: Share of the training rows held out for early stopping.
        seed: Random seed.
    """

    embed_dim: int = 16
    conv_size: int = 64
    context_size: int = 16
    attn_size: int = 16
    hidden: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.2
    attention: bool | None = None
    lr: float = 1e-3
    l2: float = 1e-5
    epochs: int = 12
    batch_size: int = 256
    patience: int = 3
    val_fraction: float = 0.1
    seed: int = 0
