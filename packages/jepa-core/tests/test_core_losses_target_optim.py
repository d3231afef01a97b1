"""Losses, the EMA target and optimizer parameter groups (ijepa:src/train.py,
src/helper.py ``init_opt``; jepa:app/vjepa/train.py)."""

from __future__ import annotations

import pytest
import torch
from jepa_core.losses import get_loss, l1, l2, smooth_l1
from jepa_core.optim import param_groups
from jepa_core.target import EMATarget, normalize_targets
from torch import nn


def _pair(seed=0, shape=(3, 5, 4), scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * scale, torch.randn(shape, generator=g) * scale


def test_smooth_l1_hand_formula():
    p, t = _pair()
    e = (p - t).double()
    want = torch.where(e.abs() < 1, 0.5 * e**2, e.abs() - 0.5).mean()
    assert (e.abs() < 1).any() and (e.abs() >= 1).any()  # both branches exercised
    assert smooth_l1(p, t).item() == pytest.approx(want.item(), rel=1e-6)


def test_smooth_l1_known_values():
    p = torch.tensor([0.0, 0.0, 0.0, 0.0])
    t = torch.tensor([0.5, -2.0, 1.0, 3.0])
    # 0.125, 1.5, 0.5, 2.5 -> mean 1.15625
    assert smooth_l1(p, t).item() == pytest.approx(1.15625)


def test_l1_and_l2():
    p, t = _pair(1)
    assert l1(p, t).item() == pytest.approx((p - t).abs().double().mean().item(), rel=1e-6)
    assert l2(p, t).item() == pytest.approx(((p - t).double() ** 2).mean().item(), rel=1e-6)
    assert l1(torch.tensor([1.0, -1.0]), torch.tensor([0.0, 2.0])).item() == pytest.approx(2.0)


def test_get_loss():
    assert get_loss("smooth_l1") is smooth_l1 and get_loss("l1") is l1
    with pytest.raises(KeyError, match="smooth_l1"):
        get_loss("huber2")


def test_normalize_targets_zero_mean_unit_var():
    h = torch.randn(4, 7, 32) * 5 + 3
    n = normalize_targets(h)
    assert n.shape == h.shape
    torch.testing.assert_close(n.mean(-1), torch.zeros(4, 7), atol=1e-5, rtol=0)
    torch.testing.assert_close(n.var(-1, unbiased=False), torch.ones(4, 7), atol=1e-3, rtol=0)
    # parameter-free layer norm with eps 1e-5, biased variance
    want = (h - h.mean(-1, keepdim=True)) / torch.sqrt(
        h.var(-1, unbiased=False, keepdim=True) + 1e-5
    )
    torch.testing.assert_close(n, want, atol=1e-5, rtol=1e-5)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.frozen = nn.Parameter(torch.randn(1, 2, 4), requires_grad=False)
        self.register_buffer("buf", torch.zeros(2))


def test_ema_target_update_formula():
    torch.manual_seed(0)
    online = _Net()
    ema = EMATarget(online)
    assert not any(p.requires_grad for p in ema.parameters())
    # move the online weights so target and online differ
    with torch.no_grad():
        for p in online.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
        online.frozen.add_(1.0)  # a frozen online parameter changes: the target must not follow
        online.buf.fill_(7.0)
    before = {n: p.clone() for n, p in ema.module.named_parameters()}
    online_p = dict(online.named_parameters())
    m = 0.9
    ema.update(online, m)
    for n, p in ema.module.named_parameters():
        if online_p[n].requires_grad:
            torch.testing.assert_close(
                p, m * before[n] + (1 - m) * online_p[n], rtol=1e-6, atol=1e-7
            )
            assert not torch.equal(p, before[n])
        else:
            assert torch.equal(p, before[n])
    assert torch.equal(ema.module.buf, torch.full((2,), 7.0))
    assert not any(p.requires_grad for p in ema.parameters())
    # momentum 1 keeps the target; momentum 0 copies the online weights
    snap = {n: p.clone() for n, p in ema.module.named_parameters()}
    ema.update(online, 1.0)
    assert all(torch.equal(p, snap[n]) for n, p in ema.module.named_parameters())
    ema.update(online, 0.0)
    for n, p in ema.module.named_parameters():
        if online_p[n].requires_grad:
            assert torch.equal(p, online_p[n])


def test_ema_target_is_a_copy_and_forwards():
    online = nn.Linear(3, 2)
    ema = EMATarget(online)
    assert ema.module is not online
    assert ema.module.weight.data_ptr() != online.weight.data_ptr()
    x = torch.randn(4, 3)
    torch.testing.assert_close(ema(x), online(x))
    assert online.weight.requires_grad  # the online module is not frozen by the copy


class _Enc(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.pos_embed = nn.Parameter(torch.zeros(1, 3, 4), requires_grad=False)
        self.scale = nn.Parameter(torch.ones(4))  # 1-D without "bias" in its name
        self.bias_table = nn.Parameter(torch.zeros(2, 4))  # 2-D with "bias" in its name


class _Pred(nn.Module):
    def __init__(self):
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.fc = nn.Linear(4, 2)


def test_param_groups_official_rule_and_order():
    enc, pred = _Enc(), _Pred()
    groups = param_groups({"encoder": enc, "predictor": pred})
    assert [g["name"] for g in groups] == [
        "encoder.decay",
        "predictor.decay",
        "encoder.no_decay",
        "predictor.no_decay",
    ]
    ids = lambda g: {id(p) for p in g["params"]}  # noqa: E731
    assert ids(groups[0]) == {id(enc.proj.weight)}
    assert ids(groups[1]) == {id(pred.mask_token), id(pred.fc.weight)}  # mask token is decayed
    assert ids(groups[2]) == {
        id(enc.proj.bias),
        id(enc.norm.weight),
        id(enc.norm.bias),
        id(enc.scale),
        id(enc.bias_table),
    }
    assert ids(groups[3]) == {id(pred.fc.bias)}
    for g in groups[:2]:
        assert "WD_exclude" not in g and "weight_decay" not in g
    for g in groups[2:]:
        assert g["WD_exclude"] is True and g["weight_decay"] == 0.0
    every = set().union(*(ids(g) for g in groups))
    assert id(enc.pos_embed) not in every  # frozen: left out
    trainable = {id(p) for m in (enc, pred) for p in m.parameters() if p.requires_grad}
    assert every == trainable
    assert sum(len(g["params"]) for g in groups) == len(trainable)  # no duplicates


def test_param_groups_drop_empty_groups():
    lin = nn.Linear(2, 2, bias=False)
    groups = param_groups({"m": lin})
    assert [g["name"] for g in groups] == ["m.decay"]
    assert groups[0]["params"] == [lin.weight]
    lin.weight.requires_grad_(False)
    assert param_groups({"m": lin}) == []
