"""MC-JEPA networks and losses (jepa_video.mcjepa_nn, jepa_video.mcjepa_losses)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from jepa_video.mcjepa_losses import (
    cycle_consistency,
    feature_regression,
    photometric,
    smoothness,
    ssim_loss_map,
    variance_covariance,
    vicreg,
)
from jepa_video.mcjepa_nn import ConvNeXtPyramid, ConvPyramid, FlowEstimator, LayerNorm2d


def _tiny_convnext() -> ConvNeXtPyramid:
    return ConvNeXtPyramid(depths=(1, 1, 1, 1), dims=(8, 12, 16, 20), stem_dims=(4, 6))


def _sizes(h: int, w: int, n: int) -> list[tuple[int, int]]:
    return [(math.ceil(h / 2 ** (i + 1)), math.ceil(w / 2 ** (i + 1))) for i in range(n)]


@pytest.mark.parametrize("hw", [(64, 64), (48, 80), (33, 47)])
@pytest.mark.parametrize("make", [ConvPyramid, _tiny_convnext], ids=["conv", "convnext"])
def test_pyramid_shapes(make, hw):
    torch.manual_seed(0)
    enc = make()
    x = torch.randn(2, 3, *hw)
    feats = enc(x)
    assert len(feats) == len(enc.dims) == len(enc.strides)
    assert [f.shape[1] for f in feats] == list(enc.dims)
    assert [tuple(f.shape[-2:]) for f in feats] == _sizes(*hw, len(enc.dims))
    assert enc.pooled(x).shape == (2, enc.dims[-1])
    torch.testing.assert_close(enc.pooled(x), feats[-1].mean((-2, -1)))


def test_convnext_pyramid_default_size_and_params():
    torch.manual_seed(0)
    enc = ConvNeXtPyramid()
    n = sum(p.numel() for p in enc.parameters())
    print(f"ConvNeXtPyramid parameters: {n}")
    assert 15e6 < n < 35e6
    assert enc.dims == (48, 48, 96, 192, 384, 768) and enc.strides == (2, 4, 8, 16, 32, 64)
    with torch.no_grad():
        feats = enc(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in feats] == [
        (48, 32, 32), (48, 16, 16), (96, 8, 8), (192, 4, 4), (384, 2, 2), (768, 1, 1)]


def _setup(zero_init=False, max_flow=None, hw=(40, 56)):
    torch.manual_seed(0)
    enc = ConvPyramid(channels=(6, 8, 10))
    est = FlowEstimator(enc.dims, radius=2, hidden=(12, 8), max_flow=max_flow, zero_init=zero_init)
    x1, x2 = torch.randn(2, 2, 3, *hw).unbind(0)
    return enc, est, x1, x2


def test_flow_estimator_shapes_and_zero_init():
    enc, est, x1, x2 = _setup()
    flows = est(enc(x1), enc(x2))
    assert [tuple(f.shape) for f in flows] == [(2, 2, h, w) for h, w in _sizes(40, 56, 3)]
    assert all(f.abs().sum() > 0 for f in flows)
    enc, est, x1, x2 = _setup(zero_init=True)
    assert all((f == 0).all() for f in est(enc(x1), enc(x2)))


def test_flow_estimator_clips():
    enc, est, x1, x2 = _setup(max_flow=(1e-3, 2e-3, 3e-3))
    with torch.no_grad():
        flows = est(enc(x1), enc(x2))
    for f, m in zip(flows, (1e-3, 2e-3, 3e-3)):
        assert f.abs().max() <= m + 1e-9 and f.abs().max() == pytest.approx(m)


def test_flow_estimator_gradients_reach_every_level():
    enc, est, x1, x2 = _setup()
    flows = est(enc(x1), enc(x2))
    flows[0].square().mean().backward()  # finest flow only: must depend on every level
    for i, net in enumerate(est.nets):
        assert net[0].weight.grad is not None and net[0].weight.grad.abs().sum() > 0, i
    for i, level in enumerate(enc.levels):
        assert level[1].weight.grad.abs().sum() > 0, i


def test_flow_estimator_layernorm_after_each_hidden_conv():
    _, est, _, _ = _setup()
    for net in est.nets:
        mods = list(net)
        convs = [i for i, m in enumerate(mods) if isinstance(m, nn.Conv2d)]
        assert len(convs) == 3
        for i in convs[:-1]:
            assert isinstance(mods[i + 1], LayerNorm2d) and isinstance(mods[i + 2], nn.LeakyReLU)
        assert convs[-1] == len(mods) - 1 and mods[-1].out_channels == 2


def test_flow_estimator_level_mismatch_raises():
    enc, est, x1, x2 = _setup()
    with pytest.raises(ValueError, match="levels"):
        est(enc(x1)[:2], enc(x2)[:2])


# ---- losses -------------------------------------------------------------------------------


def _translated(h=20, w=24, sx=2, sy=-1, c=3, seed=0):
    """frame t, frame t+1 = frame t moved by (sx, sy) (rolled), and flow_{t->t+1}."""
    img_t = torch.rand(2, c, h, w, generator=torch.Generator().manual_seed(seed))
    img_t1 = torch.roll(img_t, shifts=(sy, sx), dims=(-2, -1))
    flow = torch.empty(2, 2, h, w)
    flow[:, 0], flow[:, 1] = sx, sy
    return img_t, img_t1, flow


def test_feature_regression_zero_for_perfect_flow():
    img_t, img_t1, flow = _translated()
    coarse_t, coarse_t1, coarse_flow = _translated(10, 12, sx=1, sy=0, c=5, seed=1)
    feats_t, feats_t1, flows = [img_t, coarse_t], [img_t1, coarse_t1], [flow, coarse_flow]
    assert feature_regression(feats_t, feats_t1, flows).item() < 1e-10
    zero = [torch.zeros_like(f) for f in flows]
    assert feature_regression(feats_t, feats_t1, zero) > 1e-3
    # without the validity mask, wrapped-around borders are compared with zeros
    assert feature_regression(feats_t, feats_t1, flows, use_valid_mask=False) > 1e-3


def test_photometric_and_ssim():
    img_t, img_t1, flow = _translated()
    assert photometric(img_t, img_t1, flow).item() < 1e-6  # L1 of ~1e-7 rounding
    assert photometric(img_t, img_t1, torch.zeros_like(flow)) > 1e-2
    assert photometric(img_t, img_t1, flow, w_l1=0, w_l2=0) < 1e-6  # SSIM alone
    assert photometric(img_t, img_t1, torch.zeros_like(flow), w_l1=0, w_l2=0) > 1e-2
    assert ssim_loss_map(img_t, img_t).abs().max() < 1e-6
    assert ssim_loss_map(img_t, img_t1).mean() > 0.1
    # a mask that zeroes everything but a bad region still gives a finite loss
    mask = torch.zeros(2, 1, 20, 24)
    assert torch.isfinite(photometric(img_t, img_t1, flow, mask=mask))


def test_smoothness():
    img = torch.rand(2, 3, 16, 18, generator=torch.Generator().manual_seed(3))
    const = torch.ones(2, 2, 16, 18) * 3.0
    rnd = torch.randn(2, 2, 16, 18, generator=torch.Generator().manual_seed(4))
    for order in (1, 2):
        assert smoothness(const, img, order=order) == 0
        assert smoothness(rnd, img, order=order) > 0
    # a linear flow is second-order smooth only
    ramp = torch.arange(18.0).expand(2, 2, 16, 18)
    assert smoothness(ramp, img, order=2).abs() < 1e-6 and smoothness(ramp, img, order=1) > 0
    # image edges lower the penalty
    assert smoothness(rnd, img * 10, order=1) < smoothness(rnd, torch.zeros_like(img), order=1)
    with pytest.raises(ValueError):
        smoothness(rnd, img, order=3)


def test_cycle_consistency():
    torch.manual_seed(0)
    feats = [torch.randn(2, 4, 12, 14), torch.randn(2, 4, 6, 7)]
    zero = [torch.zeros(2, 2, 12, 14), torch.zeros(2, 2, 6, 7)]
    assert cycle_consistency(feats, zero, zero).item() < 1e-10
    fw = [z + torch.tensor([1.0, 0.0]).view(1, 2, 1, 1) for z in zero]
    assert cycle_consistency(feats, fw, [-f for f in fw]).item() < 1e-10  # consistent pair
    assert cycle_consistency(feats, fw, fw) > 0.1  # inconsistent pair


def test_variance_covariance():
    g = torch.Generator().manual_seed(0)
    b, c, h, w = 4, 8, 6, 5
    n = b * h * w
    a = torch.randn(n, c, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(a - a.mean(0))  # orthonormal, zero-mean columns
    white = (q * math.sqrt(n - 1) * 1.5).float()  # covariance 2.25 * I: std 1.5 >= gamma
    x = white.view(b, h, w, c).permute(0, 3, 1, 2)
    v, cv = variance_covariance(x)
    assert v == 0 and cv < 1e-8
    v, cv = variance_covariance(torch.ones(b, c, h, w))
    assert v == pytest.approx(1 - 1e-2, rel=1e-4) and cv == 0  # std = sqrt(eps) = 0.01
    mixed = x.clone()
    mixed[:, 1] = mixed[:, 0]  # correlated channels
    assert variance_covariance(mixed)[1] > 0.1
    # subsampling: at most max_samples rows, reproducible with a generator
    big = torch.randn(8, c, 32, 32, generator=g)
    r1 = variance_covariance(big, max_samples=256, generator=torch.Generator().manual_seed(1))
    r2 = variance_covariance(big, max_samples=256, generator=torch.Generator().manual_seed(1))
    assert r1 == r2


def test_vicreg():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 8, generator=g)
    total, parts = vicreg(z, z)
    assert parts["sim"] == 0
    assert total == pytest.approx((25 * parts["var"] + parts["cov"]).item())
    total2, parts2 = vicreg(z, torch.randn(16, 8, generator=g))
    assert parts2["sim"] > 0 and total2 > total
    _, collapsed = vicreg(torch.zeros(16, 8), torch.zeros(16, 8))
    assert collapsed["var"] == pytest.approx(1 - 1e-2, rel=1e-4)


def test_losses_backprop_into_flow():
    img_t, img_t1, flow = _translated()
    flow = (flow + 0.3).requires_grad_(True)
    loss = photometric(img_t, img_t1, flow) + feature_regression([img_t], [img_t1], [flow])
    loss = loss + smoothness(flow, img_t) + cycle_consistency([img_t], [flow], [-flow])
    loss.backward()
    assert flow.grad is not None and flow.grad.abs().sum() > 0
