"""Attentive probes: official checkpoint layouts of the V-JEPA and V-JEPA 2 probes, the forward
semantics (unused proj, token blocks first, hand-written attention), the init rescale, and the
parallel lr x wd grid on synthetic tokens."""

from __future__ import annotations

import math

import pytest
import torch
from jepa_eval.attentive import (
    AttentiveClassifier,
    AttentivePooler,
    CrossAttention,
    extract_tokens,
    strip_ddp_prefix,
    train_attentive_probes,
)
from torch import nn
from torch.utils.data import TensorDataset


def _cross_block_layout(D: int, with_proj: bool) -> list[tuple[str, tuple[int, ...]]]:
    p = "pooler.cross_attention_block."
    rows = [
        (p + "norm1.weight", (D,)), (p + "norm1.bias", (D,)),
        (p + "xattn.q.weight", (D, D)), (p + "xattn.q.bias", (D,)),
        (p + "xattn.kv.weight", (2 * D, D)), (p + "xattn.kv.bias", (2 * D,)),
    ]
    if with_proj:
        rows += [(p + "xattn.proj.weight", (D, D)), (p + "xattn.proj.bias", (D,))]
    rows += [
        (p + "norm2.weight", (D,)), (p + "norm2.bias", (D,)),
        (p + "mlp.fc1.weight", (4 * D, D)), (p + "mlp.fc1.bias", (4 * D,)),
        (p + "mlp.fc2.weight", (D, 4 * D)), (p + "mlp.fc2.bias", (D,)),
    ]
    return rows


def _layout(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def test_vjepa_probe_matches_the_official_checkpoint_layout():
    # jepa/vitl16/ssv2-probe.pth.tar "classifier": ViT-L (D 1024, 16 heads), SSv2 174 classes.
    D, C = 1024, 174
    expected = [("pooler.query_tokens", (1, 1, D))] + _cross_block_layout(D, with_proj=True) + [
        ("linear.weight", (C, D)), ("linear.bias", (C,)),
    ]
    with torch.device("meta"):
        model = AttentiveClassifier(D, 16, C, form="vjepa")
    assert _layout(model) == expected


def test_vjepa2_probe_matches_the_official_checkpoint_layout():
    # vjepa2/evals/ssv2-vitl-16x2x3.pt "classifiers[i]": 4 probe blocks = 3 token blocks + cross.
    D, C = 1024, 174
    blocks = []
    for i in range(3):
        b = f"pooler.blocks.{i}."
        blocks += [
            (b + "norm1.weight", (D,)), (b + "norm1.bias", (D,)),
            (b + "attn.qkv.weight", (3 * D, D)), (b + "attn.qkv.bias", (3 * D,)),
            (b + "attn.proj.weight", (D, D)), (b + "attn.proj.bias", (D,)),
            (b + "norm2.weight", (D,)), (b + "norm2.bias", (D,)),
            (b + "mlp.fc1.weight", (4 * D, D)), (b + "mlp.fc1.bias", (4 * D,)),
            (b + "mlp.fc2.weight", (D, 4 * D)), (b + "mlp.fc2.bias", (D,)),
        ]
    expected = (
        [("pooler.query_tokens", (1, 1, D))] + _cross_block_layout(D, with_proj=False) + blocks
        + [("linear.weight", (C, D)), ("linear.bias", (C,))]
    )
    with torch.device("meta"):
        model = AttentiveClassifier(D, 16, C, form="vjepa2")  # default depth 4
    assert _layout(model) == expected
    assert not any("xattn.proj" in k for k, _ in expected)


def test_official_style_state_dict_loads_strictly_after_stripping_ddp_prefix():
    torch.manual_seed(0)
    for form in ("vjepa", "vjepa2"):
        src = AttentiveClassifier(32, 4, 5, form=form)
        ddp_sd = {"module." + k: v.clone() for k, v in src.state_dict().items()}
        dst = AttentiveClassifier(32, 4, 5, form=form)
        dst.load_state_dict(strip_ddp_prefix(ddp_sd), strict=True)
        x = torch.randn(3, 7, 32)
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_layer_norm_eps_is_the_official_probe_default():
    m = AttentiveClassifier(32, 4, 5, form="vjepa2", depth=2)
    eps = {mod.eps for mod in m.modules() if isinstance(mod, nn.LayerNorm)}
    assert eps == {1e-5}  # nn.LayerNorm default, as the official pooler's norm_layer


def test_vjepa_output_does_not_depend_on_xattn_proj():
    torch.manual_seed(0)
    model = AttentiveClassifier(32, 4, 5, form="vjepa")
    x = torch.randn(4, 9, 32)
    before = model(x)
    with torch.no_grad():
        model.pooler.cross_attention_block.xattn.proj.weight.normal_(0, 10.0)
        model.pooler.cross_attention_block.xattn.proj.bias.fill_(3.0)
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    # ... while the other cross-attention weights do matter
    with torch.no_grad():
        model.pooler.cross_attention_block.xattn.kv.weight.mul_(2.0)
    assert not torch.allclose(model(x), before)


def test_vjepa2_has_no_proj_and_rejects_vjepa_depth_above_one():
    assert not hasattr(CrossAttention(16, 2, use_proj=False), "proj")
    assert hasattr(CrossAttention(16, 2, use_proj=True), "proj")
    with pytest.raises(ValueError, match="depth 1"):
        AttentivePooler(16, 2, depth=2, form="vjepa")


def test_cross_attention_equals_handwritten_softmax_attention():
    torch.manual_seed(0)
    D, H, n, N, B = 24, 3, 2, 7, 4
    xa = CrossAttention(D, H)
    q_in, x = torch.randn(B, n, D), torch.randn(B, N, D)
    Wq, bq = xa.q.weight, xa.q.bias
    Wk, Wv = xa.kv.weight[:D], xa.kv.weight[D:]  # K rows first, then V
    bk, bv = xa.kv.bias[:D], xa.kv.bias[D:]
    q = q_in @ Wq.T + bq
    k = x @ Wk.T + bk
    v = x @ Wv.T + bv
    d = D // H
    heads = []
    for h in range(H):
        s = slice(h * d, (h + 1) * d)
        a = torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / math.sqrt(d), dim=-1)
        heads.append(a @ v[..., s])
    expected = torch.cat(heads, dim=-1)  # no output projection
    torch.testing.assert_close(xa(q_in, x), expected, rtol=1e-5, atol=1e-6)


def test_vjepa2_runs_token_blocks_before_the_cross_attention():
    torch.manual_seed(0)
    pooler = AttentivePooler(16, 2, depth=3, form="vjepa2")
    x = torch.randn(2, 5, 16)
    h = x
    for blk in pooler.blocks:
        h = blk(h)
    expected = pooler.cross_attention_block(pooler.query_tokens.expand(2, -1, -1), h)
    torch.testing.assert_close(pooler(x), expected, rtol=0, atol=0)
    assert pooler(x).shape == (2, 1, 16)


def test_init_rescale():
    torch.manual_seed(0)
    D, std = 256, 0.02
    p2 = AttentivePooler(D, 4, depth=4, form="vjepa2")
    cab = p2.cross_attention_block
    assert cab.xattn.q.weight.std().item() == pytest.approx(std, rel=0.05)
    for i, blk in enumerate(p2.blocks):
        assert blk.attn.proj.weight.std().item() == pytest.approx(std / math.sqrt(2 * (i + 1)), rel=0.05)
        assert blk.mlp.fc2.weight.std().item() == pytest.approx(std / math.sqrt(2 * (i + 1)), rel=0.05)
        assert blk.attn.qkv.weight.std().item() == pytest.approx(std, rel=0.05)
    assert cab.mlp.fc2.weight.std().item() == pytest.approx(std / math.sqrt(6), rel=0.05)
    assert p2.query_tokens.std().item() == pytest.approx(std, rel=0.3)  # only D values
    p1 = AttentivePooler(D, 4, form="vjepa")
    assert p1.cross_attention_block.mlp.fc2.weight.std().item() == pytest.approx(std / math.sqrt(2), rel=0.05)
    assert p1.cross_attention_block.mlp.fc1.weight.std().item() == pytest.approx(std, rel=0.05)
    assert all(not b.detach().any() for n, b in p2.named_parameters() if n.endswith("bias"))


# ------------------------------------------------------------------------------------------------
# the grid

C, T, D = 4, 6, 16


def _tokens(n_per_class: int, seed: int):
    """Each sample: T noise tokens, one of which (at a random position) carries its class
    prototype. Linearly separable after attentive pooling; mean pooling dilutes it."""
    protos = torch.randn(C, D, generator=torch.Generator().manual_seed(123)) * 3.0
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(C).repeat(n_per_class)
    x = torch.randn(len(y), T, D, generator=g)
    pos = torch.randint(0, T, (len(y),), generator=g)
    x[torch.arange(len(y)), pos] += protos[y]
    return x, y


GRID = dict(lrs=(1e-2, 1e-4), wds=(0.01, 0.4))
KW = dict(num_heads=2, depth=2, epochs=15, batch_size=32)


def test_probe_grid_learns_separable_tokens_and_reports_every_probe():
    xtr, ytr = _tokens(40, 0)
    xva, yva = _tokens(15, 1)
    xte, yte = _tokens(15, 2)
    r = train_attentive_probes(xtr, ytr, xva, yva, **GRID, tokens_test=xte, y_test=yte, **KW)
    assert set(r.val_grid) == {(1e-2, 0.01), (1e-2, 0.4), (1e-4, 0.01), (1e-4, 0.4)}
    assert r.val_accuracy >= 98.0 and r.test_accuracy >= 95.0
    assert r.best[0] == 1e-2  # the tiny LR cannot get there in 75 steps
    assert r.val_accuracy == max(r.val_grid.values())
    assert r.steps == 15 * math.ceil(160 / 32)
    assert isinstance(r.classifier, AttentiveClassifier) and not r.classifier.training
    with torch.no_grad():
        acc = (r.classifier(xte).argmax(1) == yte).float().mean().item() * 100
    assert acc == pytest.approx(r.test_accuracy)


def test_selection_uses_validation_never_test():
    xtr, ytr = _tokens(20, 0)
    xva, yva = _tokens(10, 1)
    xte, yte = _tokens(10, 2)
    kw = dict(**GRID, **KW)
    a = train_attentive_probes(xtr, ytr, xva, yva, tokens_test=xte, y_test=yte, **kw)
    # Test labels rotated: every good probe is now wrong on test, the weak ones relatively better.
    b = train_attentive_probes(xtr, ytr, xva, yva, tokens_test=xte, y_test=(yte + 1) % C, **kw)
    assert a.val_grid == b.val_grid and a.best == b.best
    assert b.test_accuracy == b.test_grid[b.best]
    assert b.best != max(b.test_grid, key=b.test_grid.get)  # test would have picked another
    # Validation labels decide: rotating them changes the chosen probe's validation score.
    c = train_attentive_probes(xtr, ytr, xva, (yva + 1) % C, tokens_test=xte, y_test=yte, **kw)
    assert c.val_grid != a.val_grid


def test_same_seed_same_result_and_global_rng_untouched():
    xtr, ytr = _tokens(10, 0)
    xva, yva = _tokens(5, 1)
    kw = dict(lrs=(1e-2,), wds=(0.01, 0.1), num_heads=2, depth=1, form="vjepa", epochs=3, batch_size=16)
    torch.manual_seed(7)
    state = torch.get_rng_state()
    a = train_attentive_probes(xtr, ytr, xva, yva, seed=3, **kw)
    assert torch.equal(torch.get_rng_state(), state)
    b = train_attentive_probes(xtr, ytr, xva, yva, seed=3, **kw)
    c = train_attentive_probes(xtr, ytr, xva, yva, seed=4, **kw)
    assert a.val_grid == b.val_grid and a.train_loss == b.train_loss
    for k, v in a.classifier.state_dict().items():
        assert torch.equal(v, b.classifier.state_dict()[k])
    assert a.train_loss != c.train_loss


def test_extract_tokens_runs_the_encoder_once_in_eval_mode():
    class Enc(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 8)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            assert not self.training
            return self.lin(x)

    x = torch.randn(10, 3, 4)
    enc = Enc().train()
    toks, labels = extract_tokens(enc, TensorDataset(x, torch.arange(10) % 2), batch_size=4, dtype=torch.float16)
    assert toks.shape == (10, 3, 8) and toks.dtype == torch.float16 and enc.calls == 3
    assert enc.training and torch.equal(labels, torch.arange(10) % 2)
    torch.testing.assert_close(toks.float(), enc.lin(x).detach(), atol=1e-2, rtol=1e-2)
