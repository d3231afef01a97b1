"""ViT encoder, predictor and helpers (ijepa:src/models/vision_transformer.py)."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F
from jepa_core.masks.ops import apply_masks
from jepa_core.nn import (
    VIT_SIZES,
    Attention,
    Block,
    VisionTransformer,
    VisionTransformerPredictor,
    repeat_interleave_batch,
    sincos_2d,
    vit,
)

D, HEADS = 16, 2


def _enc(**kw):
    torch.manual_seed(0)
    args = dict(img_size=16, patch_size=4, in_chans=3, embed_dim=D, depth=2, num_heads=HEADS)
    args.update(kw)
    return VisionTransformer(**args).eval()


def _rand_masks(B, N, K, n, seed):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.stack([torch.randperm(N, generator=g)[:K].sort().values for _ in range(B)])
        for _ in range(n)
    ]


def test_attention_equals_manual_softmax():
    torch.manual_seed(1)
    attn = Attention(12, 3)
    x = torch.randn(2, 5, 12)
    B, N, C = x.shape
    h, hd = 3, 4
    qkv = x @ attn.qkv.weight.T + attn.qkv.bias
    # rows [0:C] Q, [C:2C] K, [2C:3C] V; heads contiguous inside each
    q, k, v = (qkv[..., i * C : (i + 1) * C].reshape(B, N, h, hd).transpose(1, 2) for i in range(3))
    a = torch.softmax((q @ k.transpose(-2, -1)) * hd**-0.5, dim=-1)
    out = (a @ v).transpose(1, 2).reshape(B, N, C) @ attn.proj.weight.T + attn.proj.bias
    torch.testing.assert_close(attn(x), out, atol=1e-5, rtol=1e-5)


def test_attention_rejects_bad_heads():
    with pytest.raises(ValueError):
        Attention(10, 3)


def test_block_is_pre_norm_residual():
    torch.manual_seed(2)
    blk = Block(8, 2, mlp_ratio=2.0).eval()
    x = torch.randn(2, 3, 8)
    y = x + blk.attn(F.layer_norm(x, (8,), blk.norm1.weight, blk.norm1.bias, 1e-6))
    y = y + blk.mlp.fc2(
        F.gelu(blk.mlp.fc1(F.layer_norm(y, (8,), blk.norm2.weight, blk.norm2.bias, 1e-6)))
    )
    torch.testing.assert_close(blk(x), y, atol=1e-6, rtol=1e-6)
    assert blk.norm1.eps == 1e-6 and blk.mlp.fc1.out_features == 16


def test_encoder_structure_and_pos_embed():
    enc = _enc()
    assert enc.grid == 4 and enc.num_patches == 16
    assert enc.pos_embed.shape == (1, 16, D) and not enc.pos_embed.requires_grad
    assert torch.equal(enc.pos_embed[0], sincos_2d(D, 4, order="wh"))
    assert "pos_embed" in enc.state_dict()
    assert not any(n.startswith("cls") for n in enc.state_dict())
    assert enc.blocks[0].attn.qkv.weight.shape == (3 * D, D)
    assert enc.norm.eps == 1e-6


def test_encoder_embed_is_row_major_patches_plus_pos():
    enc = _enc()
    x = torch.randn(2, 3, 16, 16)
    tokens = enc.embed(x)
    p = 4
    manual = []
    for r in range(4):
        for c in range(4):
            patch = x[:, :, r * p : (r + 1) * p, c * p : (c + 1) * p]
            manual.append(
                torch.einsum("bchw,dchw->bd", patch, enc.patch_embed.proj.weight)
                + enc.patch_embed.proj.bias
            )
    manual = torch.stack(manual, 1) + enc.pos_embed
    torch.testing.assert_close(tokens, manual, atol=1e-5, rtol=1e-5)


def test_encoder_masked_forward_shape_and_values():
    enc = _enc()
    x = torch.randn(3, 3, 16, 16)
    masks = _rand_masks(3, 16, 5, 2, seed=0)
    out = enc(x, masks)
    assert out.shape == (3 * 2, 5, D)
    # equals running the blocks on the gathered tokens, mask-major
    for i, m in enumerate(masks):
        tok = apply_masks(enc.embed(x), m)
        for blk in enc.blocks:
            tok = blk(tok)
        torch.testing.assert_close(out[i * 3 : (i + 1) * 3], enc.norm(tok), atol=1e-5, rtol=1e-5)
    # a single mask tensor works too, and full input gives all tokens
    assert enc(x, masks[0]).shape == (3, 5, D)
    assert enc(x).shape == (3, 16, D)


def test_encoder_return_layers():
    enc = _enc(depth=3)
    x = torch.randn(1, 3, 16, 16)
    outs = enc(x, return_layers=[0, 2])
    assert len(outs) == 2
    torch.testing.assert_close(outs[1], enc(x))


def test_position_table_other_grid():
    enc = _enc()
    assert enc.position_table(4, 4) is enc.pos_embed
    t = enc.position_table(3, 5)
    assert t.shape == (1, 15, D)
    assert torch.equal(t[0], sincos_2d(D, 3, 5, order="wh"))
    enc_hw = _enc(pos_embed_order="hw")
    assert torch.equal(enc_hw.position_table(2, 6)[0], sincos_2d(D, 2, 6, order="hw"))
    # a non-native image size runs with the recomputed table
    assert enc(torch.randn(1, 3, 12, 20)).shape == (1, 15, D)


def test_encoder_input_checks():
    with pytest.raises(ValueError):
        VisionTransformer(img_size=15, patch_size=4)
    with pytest.raises(ValueError):
        _enc()(torch.randn(1, 1, 16, 16))


def _loop_repeat_interleave(x, B, repeat):
    n = len(x) // B
    return torch.cat([torch.cat([x[i * B : (i + 1) * B] for _ in range(repeat)]) for i in range(n)])


@pytest.mark.parametrize("B,n,repeat", [(2, 3, 2), (3, 4, 1), (1, 2, 3), (4, 1, 2)])
def test_repeat_interleave_batch(B, n, repeat):
    x = torch.arange(B * n * 2 * 3, dtype=torch.float32).reshape(B * n, 2, 3)
    out = repeat_interleave_batch(x, B, repeat)
    assert torch.equal(out, _loop_repeat_interleave(x, B, repeat))


def _pred(num_patches=16, depth=1):
    torch.manual_seed(3)
    return VisionTransformerPredictor(
        num_patches=num_patches, embed_dim=D, predictor_embed_dim=8, depth=depth, num_heads=2
    ).eval()


def test_predictor_shape_and_structure():
    pred = _pred()
    assert pred.mask_token.shape == (1, 1, 8)
    assert pred.mask_token.abs().sum() > 0  # trunc-normal, not zeros
    assert not pred.predictor_pos_embed.requires_grad
    assert torch.equal(pred.predictor_pos_embed[0], sincos_2d(8, 4))
    B, nenc, npred, Kc, Kt = 2, 2, 3, 5, 4
    mc = _rand_masks(B, 16, Kc, nenc, seed=1)
    mt = _rand_masks(B, 16, Kt, npred, seed=2)
    z = torch.randn(nenc * B, Kc, D)
    out = pred(z, mc, mt)
    assert out.shape == (npred * nenc * B, Kt, D)


def test_predictor_matches_official_forward():
    """Rebuild the official forward step by step (ijepa VisionTransformerPredictor.forward)."""
    pred = _pred(depth=2)
    B, nenc, npred, Kc, Kt = 2, 2, 2, 5, 3
    mc = _rand_masks(B, 16, Kc, nenc, seed=4)
    mt = _rand_masks(B, 16, Kt, npred, seed=5)
    z = torch.randn(nenc * B, Kc, D)
    x = pred.predictor_embed(z)
    pos = pred.predictor_pos_embed.repeat(B, 1, 1)
    x = x + apply_masks(pos, mc)
    n_ctx = x.shape[1]
    pe = repeat_interleave_batch(apply_masks(pos, mt), B, repeat=nenc)
    tokens = pred.mask_token.repeat(pe.size(0), pe.size(1), 1) + pe
    x = torch.cat([x.repeat(npred, 1, 1), tokens], dim=1)
    for blk in pred.predictor_blocks:
        x = blk(x)
    want = pred.predictor_proj(pred.predictor_norm(x)[:, n_ctx:])
    torch.testing.assert_close(pred(z, mc, mt), want, atol=1e-5, rtol=1e-5)
    # row (target j, context i, sample b) only depends on the context tokens of (i, b)
    z2 = z.clone()
    z2[0] += 1.0  # context copy 0, sample 0
    diff = (pred(z2, mc, mt) - pred(z, mc, mt)).abs().flatten(1).amax(1)
    changed = diff > 1e-6
    # rows: j * nenc * B + i * B + b; changed exactly for i = 0, b = 0 and every j
    assert changed.tolist() == [j % (nenc * B) == 0 for j in range(npred * nenc * B)]


def test_predictor_rejects_non_square():
    with pytest.raises(ValueError):
        VisionTransformerPredictor(
            num_patches=15, embed_dim=8, predictor_embed_dim=8, depth=1, num_heads=2
        )


def test_vit_sizes_and_factory(monkeypatch):
    # the size table of ijepa:src/models/vision_transformer.py
    assert VIT_SIZES["vit_tiny"] == (192, 12, 3, 4.0)
    assert VIT_SIZES["vit_small"] == (384, 12, 6, 4.0)
    assert VIT_SIZES["vit_base"] == (768, 12, 12, 4.0)
    assert VIT_SIZES["vit_large"] == (1024, 24, 16, 4.0)
    assert VIT_SIZES["vit_huge"] == (1280, 32, 16, 4.0)
    assert VIT_SIZES["vit_giant"][:3] == (1408, 40, 16)
    assert int(1408 * VIT_SIZES["vit_giant"][3]) == 6144
    # the factory passes the table row through (recorded instead of building the model)
    vit_mod = sys.modules["jepa_core.nn.vit"]  # jepa_core.nn.vit is shadowed by the function
    monkeypatch.setattr(vit_mod, "VisionTransformer", lambda **kw: kw)
    kw = vit("vit_huge", img_size=224, patch_size=14)
    assert kw == dict(
        embed_dim=1280, depth=32, num_heads=16, mlp_ratio=4.0, img_size=224, patch_size=14
    )
    with pytest.raises(KeyError, match="vit_tiny"):
        vit("vit_enormous")


def test_rescale_init():
    torch.manual_seed(0)
    a = VisionTransformer(img_size=8, patch_size=4, embed_dim=8, depth=2, num_heads=2)
    torch.manual_seed(0)
    b = VisionTransformer(
        img_size=8, patch_size=4, embed_dim=8, depth=2, num_heads=2, rescale_init=True
    )
    for i in range(2):
        torch.testing.assert_close(
            b.blocks[i].attn.proj.weight, a.blocks[i].attn.proj.weight / math.sqrt(2 * (i + 1))
        )
        torch.testing.assert_close(
            b.blocks[i].mlp.fc2.weight, a.blocks[i].mlp.fc2.weight / math.sqrt(2 * (i + 1))
        )
        assert torch.equal(b.blocks[i].attn.qkv.weight, a.blocks[i].attn.qkv.weight)
    # init: zero biases, LN 1/0, weights std ~0.02
    assert torch.all(a.blocks[0].attn.qkv.bias == 0) and torch.all(a.norm.weight == 1)
