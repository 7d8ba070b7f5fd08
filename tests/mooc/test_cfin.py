"""CFIN network (embedding, per-group convolution, attention) and CFIN-en."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from atrisk.errors import ModelLoadError
from atrisk.mooc.cfin import CFINClassifier, CFINConfig, CFINEnsemble, CFINNet, resolve_device


def _net(z_dim: int = 0, **kw) -> CFINNet:
    torch.manual_seed(0)
    cfg = CFINConfig(embed_dim=4, conv_size=6, context_size=3, attn_size=5, hidden=[8, 4], **kw)
    net = CFINNet(n_groups=3, k=5, z_dim=z_dim, cfg=cfg)
    return net.eval()


def test_factored_group_convolution_equals_embed_then_conv():
    net = _net()
    x = torch.randn(7, 15)
    torch.testing.assert_close(net.group_vectors(x), net.group_vectors_explicit(x),
                               rtol=1e-5, atol=1e-5)
    # hand check of one output: v_{g=1,c=2} = ReLU(Σ_k Σ_d W[2,d,k] a[5+k,d] x[5+k] + b[2])
    w, a, b = net.conv.weight.detach(), net.a.detach(), net.conv.bias.detach()
    with torch.no_grad():
        v = net.group_vectors(x)
    val = sum(float(w[2, d, k] * a[5 + k, d] * x[0, 5 + k]) for k in range(5) for d in range(4))
    assert float(v[0, 1, 2]) == pytest.approx(max(val + float(b[2]), 0),
                                                                abs=1e-5)


def test_stride_keeps_groups_apart():
    net = _net()
    x = torch.randn(2, 15)
    x2 = x.clone()
    x2[:, 5:10] += 3.0  # change group 1 only
    v, v2 = net.group_vectors(x), net.group_vectors(x2)
    torch.testing.assert_close(v[:, [0, 2]], v2[:, [0, 2]])
    assert not torch.allclose(v[:, 1], v2[:, 1])


def test_attention_on_with_context_off_without():
    net = _net(z_dim=4)
    assert net.use_attention
    logits, h, lam = net(torch.randn(5, 15), torch.randn(5, 4))
    assert logits.shape == (5,) and h.shape == (5, 4) and lam.shape == (5, 3)
    torch.testing.assert_close(lam.sum(1), torch.ones(5))
    # attention depends on the context vector (eqs. 4-5 use [v_g; c])
    x = torch.randn(1, 15) * 3
    with torch.no_grad():
        net.b.mul_(20.0)  # make the context matter visibly
        _, _, lam2 = net(x, torch.tensor([[3.0, -2.0, 0.0, 1.0]]))
        _, _, lam3 = net(x, torch.tensor([[-3.0, 2.0, 1.0, 0.0]]))
    assert float((lam2 - lam3).abs().max()) > 1e-4
    off = _net(z_dim=0)
    assert not off.use_attention
    _, _, lam = off(torch.randn(5, 15), torch.zeros(5, 0))
    assert lam is None
    # without attention s = Σ_g v_g: the DNN input is the plain sum
    x = torch.randn(3, 15)
    s = off.group_vectors(x).sum(1)
    torch.testing.assert_close(off(x, torch.zeros(3, 0))[1], off.dnn(s))


def _synthetic(n: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(n, 6, 5)).astype(np.float32)
    z = rng.integers(0, 3, n)
    Z = np.eye(3, dtype=np.float32)[z]
    logit = 2.0 * G[:, 0, 0] - 1.5 * G[:, 2, 1] + (z == 1) * 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return G, Z, y


def test_fit_predict_save_load_and_ensemble(tmp_path):
    G, Z, y = _synthetic()
    tr, te = slice(0, 450), slice(450, None)
    cfg = CFINConfig(embed_dim=4, conv_size=8, hidden=[16, 8], epochs=30, patience=30,
                     batch_size=64, lr=3e-3)
    m = CFINClassifier(cfg, device="cpu", threads=1).fit(G[tr], Z[tr], y[tr])
    assert m.net_.use_attention and len(m.history_) == 30
    p = m.predict_proba(G[te], Z[te])
    # the true logit's AUC on this sample is ≈ 0.85; CFIN must get close to it
    assert roc_auc_score(y[te], p) > 0.78
    m.save(tmp_path)
    m2 = CFINClassifier.load(tmp_path, device="cpu")
    np.testing.assert_allclose(m2.predict_proba(G[te], Z[te]), p, rtol=1e-5, atol=1e-6)
    assert m.hidden(G[te], Z[te]).shape == (150, 8)
    tab = np.hstack([G[:, :, 0], Z])
    en = CFINEnsemble({"n_estimators": 50, "n_jobs": 1}).fit(m, G[tr], Z[tr], tab[tr], y[tr])
    pe = en.predict_proba(m, G[te], Z[te], tab[te])
    assert pe.shape == (150,) and roc_auc_score(y[te], pe) > 0.75


def test_normalisation_uses_training_statistics():
    G, Z, y = _synthetic(200)
    G = G * 100 + 50
    m = CFINClassifier(CFINConfig(epochs=1, hidden=[4]), device="cpu").fit(G, Z, y)
    flat = G.reshape(200, -1)
    np.testing.assert_allclose(m.x_mean_, flat.mean(0), rtol=1e-4)
    x, _ = m._prep(G, Z)
    assert abs(float(x.mean())) < 1e-3 and float(x.std()) == pytest.approx(1.0, abs=0.01)


def test_device_and_bad_model_file(tmp_path):
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    (tmp_path / "cfin.pt").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="cfin.pt"):
        CFINClassifier.load(tmp_path)
