"""extract_features: mean-pooled tokens of a frozen encoder, or the raw inputs."""

from __future__ import annotations

import torch
from jepa_eval.features import extract_features
from torch import nn
from torch.utils.data import TensorDataset


class Tokens(nn.Module):
    """[B, 1, 4, 6] -> tokens [B, 4, 6] (one token per row) times a weight; records its mode."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(2.0))
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        return x[:, 0] * self.w


def _data(n: int = 10):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 4, 6, generator=g)
    y = torch.arange(n) % 3
    return x, y, TensorDataset(x, y)


def test_mean_pools_tokens():
    x, y, ds = _data()
    enc = Tokens()
    feats, labels = extract_features(enc, ds, batch_size=3)
    assert feats.shape == (10, 6)
    assert torch.allclose(feats, (2.0 * x[:, 0]).mean(dim=1))
    assert torch.equal(labels, y) and labels.dtype == torch.long
    assert feats.dtype == torch.float32 and not feats.requires_grad


def test_runs_in_eval_mode_and_restores_it():
    _, _, ds = _data()
    enc = Tokens()
    enc.train()
    extract_features(enc, ds, batch_size=4)
    assert enc.modes == [False, False, False]  # 3 batches, all in eval mode
    assert enc.training  # restored
    enc.eval()
    extract_features(enc, ds, batch_size=4)
    assert not enc.training


def test_pooled_features_pass_through():
    x, _, ds = _data()

    class Pooled(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :5]

    feats, _ = extract_features(Pooled(), ds)
    assert torch.equal(feats, x.flatten(1)[:, :5])


def test_no_encoder_flattens_the_inputs():
    x, y, ds = _data()
    feats, labels = extract_features(None, ds, batch_size=4)
    assert feats.shape == (10, 24)
    assert torch.equal(feats, x.flatten(1))
    assert torch.equal(labels, y)


def test_max_samples_takes_the_first_samples_in_order():
    x, y, ds = _data()
    feats, labels = extract_features(None, ds, batch_size=4, max_samples=5)
    assert torch.equal(feats, x[:5].flatten(1))
    assert torch.equal(labels, y[:5])
    feats, _ = extract_features(None, ds, max_samples=100)
    assert len(feats) == 10


def test_no_gradients_are_kept():
    _, _, ds = _data()
    enc = Tokens()
    feats, _ = extract_features(enc, ds)
    assert enc.w.grad is None and feats.grad_fn is None
