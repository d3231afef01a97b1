"""The composable parts of jepa_core.nn: Protocols, MaskedEncoder with custom tokenizers and
position encodings, MaskTokenPredictor with conditioned queries, and the 2-D configurations
against outputs saved from the implementation before they became configurations."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from jepa_core.masks.ops import apply_masks
from jepa_core.nn import (
    Block,
    BlockwiseEncoder,
    Encoder,
    FixedTable,
    MaskedEncoder,
    MaskTokenPredictor,
    PatchEmbed,
    PositionEncoding,
    Predictor,
    SinCos2D,
    Tokenizer,
    VisionTransformer,
    VisionTransformerPredictor,
    repeat_interleave_batch,
    sincos_1d,
    vit,
)
from jepa_core.nn.layers import Segments
from torch import nn

GOLDEN = Path(__file__).parent / "nn_golden_pre_refactor.pt"
CLASSES = {"VisionTransformer": VisionTransformer, "VisionTransformerPredictor": VisionTransformerPredictor}


def _rand_masks(B, N, K, n, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.stack([torch.randperm(N, generator=g)[:K].sort().values for _ in range(B)]) for _ in range(n)]


def _run(model, calls):
    with torch.no_grad():
        return [getattr(model, name)(*args, **kwargs) for name, args, kwargs in calls]


def _flat(x):
    return [x] if isinstance(x, torch.Tensor) else [t for e in x for t in _flat(e)]


# -- equal to the implementation before the refactor -------------------------------------------


@pytest.mark.parametrize("case", ["vit", "ijepa_predictor"])
def test_outputs_equal_pre_refactor_implementation(case):
    """Outputs saved from the pre-refactor VisionTransformer / VisionTransformerPredictor
    (same state dict, same inputs): equal to float rounding (bitwise on the machine that made them)."""
    saved = torch.load(GOLDEN)[case]
    model = CLASSES[saved["cls"]](**saved["kwargs"]).eval()
    assert [(k, v.shape) for k, v in model.state_dict().items()] == [
        (k, v.shape) for k, v in saved["state_dict"].items()
    ]
    model.load_state_dict(saved["state_dict"], strict=True)
    for got, want in zip(_flat(_run(model, saved["calls"])), _flat(saved["outputs"]), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_state_dict_names_and_shapes_unchanged():
    """The official layout: the key lists of the classes before they became configurations."""
    with torch.device("meta"):
        enc = vit("vit_huge", patch_size=14)
        pred = VisionTransformerPredictor(num_patches=256, embed_dim=1280, predictor_embed_dim=384, depth=12,
                                          num_heads=16)
    block = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
             "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
             "mlp.fc2.weight", "mlp.fc2.bias"]
    want = ["pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    want += [f"blocks.{i}.{k}" for i in range(32) for k in block] + ["norm.weight", "norm.bias"]
    assert list(enc.state_dict()) == want
    assert enc.state_dict()["pos_embed"].shape == (1, 256, 1280)
    assert enc.state_dict()["patch_embed.proj.weight"].shape == (1280, 3, 14, 14)
    want = ["mask_token", "predictor_pos_embed", "predictor_embed.weight", "predictor_embed.bias"]
    want += [f"predictor_blocks.{i}.{k}" for i in range(12) for k in block]
    want += ["predictor_norm.weight", "predictor_norm.bias", "predictor_proj.weight", "predictor_proj.bias"]
    assert list(pred.state_dict()) == want
    assert pred.state_dict()["mask_token"].shape == (1, 1, 384)
    assert pred.state_dict()["predictor_pos_embed"].shape == (1, 256, 384)
    assert not enc.pos_embed.requires_grad and not pred.predictor_pos_embed.requires_grad


# -- protocols -----------------------------------------------------------------------------------


def test_models_satisfy_the_protocols():
    enc = VisionTransformer(img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=2)
    pred = VisionTransformerPredictor(num_patches=4, embed_dim=8, predictor_embed_dim=8, depth=1, num_heads=2)
    assert isinstance(enc, Encoder) and isinstance(enc, BlockwiseEncoder)
    assert isinstance(pred, Predictor)
    assert isinstance(enc.patch_embed, Tokenizer)
    assert isinstance(SinCos2D(), PositionEncoding) and isinstance(enc.positions, PositionEncoding)
    assert not isinstance(nn.Linear(2, 2), Encoder) and not isinstance(nn.Linear(2, 2), Tokenizer)


def test_tokenizer_grid_checks_the_input():
    pe = PatchEmbed(patch_size=4, in_chans=3, embed_dim=8)
    assert pe.grid(torch.zeros(1, 3, 8, 12)) == (2, 3)
    with pytest.raises(ValueError, match=r"expected images \[B, 3, H, W\]"):
        pe.grid(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="expected images"):
        pe.grid(torch.zeros(3, 8, 8))


# -- a custom tokenizer and custom position encodings -------------------------------------------


class SequenceTokenizer(nn.Module):
    """1-D signals ``[B, C, L]`` -> one token per ``patch`` samples (Conv1d)."""

    def __init__(self, in_chans, dim, patch):
        super().__init__()
        self.in_chans, self.patch = in_chans, patch
        self.proj = nn.Conv1d(in_chans, dim, patch, stride=patch)

    def grid(self, x):
        if x.ndim != 3 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected signals [B, {self.in_chans}, L], got {tuple(x.shape)}")
        return (x.shape[-1] // self.patch,)

    def forward(self, x):
        return self.proj(x).transpose(1, 2)


class SinCos1D(FixedTable):
    def table(self, grid, dim):
        return sincos_1d(dim, torch.arange(grid[0])).float()


class BiasBlock(Block):
    """A block that takes an additive attention bias as its per-forward context."""

    def forward(self, x, bias, attn_mask=None):
        if isinstance(attn_mask, Segments):  # packed mask configurations: keep them apart
            seg = torch.repeat_interleave(torch.arange(len(attn_mask)), torch.tensor(attn_mask))
            bias = bias.masked_fill(seg[:, None] != seg[None, :], float("-inf"))
        x = x + self.attn(self.norm1(x), bias)
        return x + self.mlp(self.norm2(x))


class DistanceBias:
    """ALiBi-like 1-D positions: no table, attention bias -slope * |i - j| from the token indices."""

    block = BiasBlock

    def __init__(self, slope=0.5):
        self.slope = slope

    def table(self, grid, dim):
        return None

    def attention_context(self, ids, grid):
        ids = ids if ids.ndim == 2 else ids[None]
        return -self.slope * (ids[:, None, :, None] - ids[:, None, None, :]).abs().float()  # [B, 1, K, K]


def _seq_encoder(positions, **kw):
    torch.manual_seed(0)
    return MaskedEncoder(SequenceTokenizer(2, 16, 4), positions, grid=(6,), embed_dim=16, depth=2, num_heads=2,
                         **kw).eval()


def test_custom_tokenizer_with_additive_table():
    enc = _seq_encoder(SinCos1D())
    assert isinstance(enc, BlockwiseEncoder) and isinstance(enc.patch_embed, Tokenizer)
    assert isinstance(enc.positions, PositionEncoding)
    assert list(enc.state_dict())[:3] == ["pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    x = torch.randn(3, 2, 24)
    masks = _rand_masks(3, 6, 4, 2, seed=0)
    out = enc(x, masks)
    assert out.shape == (6, 4, 16)
    tokens = enc.patch_embed(x) + sincos_1d(16, torch.arange(6)).float()
    want = apply_masks(tokens, masks)
    for blk in enc.blocks:
        want = blk(want)
    torch.testing.assert_close(out, enc.norm(want), rtol=0, atol=1e-6)
    # a longer sequence: the table is recomputed for its grid
    assert enc(torch.randn(1, 2, 40)).shape == (1, 10, 16)
    torch.testing.assert_close(enc.position_table(10)[0], sincos_1d(16, torch.arange(10)).float())
    with pytest.raises(ValueError, match="expected signals"):
        enc(torch.randn(1, 3, 24))
    # the packed multi-mask pass is generic too
    m1, m2 = _rand_masks(3, 6, 4, 1, seed=1)[0], _rand_masks(3, 6, 2, 1, seed=2)[0]
    for got, m in zip(enc.forward_multi(x, [m1, m2]), [m1, m2], strict=True):
        torch.testing.assert_close(got, enc(x, m), rtol=1e-5, atol=1e-6)


def test_custom_attention_context_positions():
    enc = _seq_encoder(DistanceBias())
    assert enc.pos_embed is None and "pos_embed" not in enc.state_dict()
    assert all(isinstance(b, BiasBlock) for b in enc.blocks)
    with pytest.raises(RuntimeError, match="no additive position table"):
        enc.position_table(6)
    x = torch.randn(2, 2, 24)
    masks = _rand_masks(2, 6, 4, 1, seed=3)
    out = enc(x, masks)
    tokens = apply_masks(enc.patch_embed(x), masks)
    bias = DistanceBias().attention_context(masks[0], (6,))
    want = tokens
    for blk in enc.blocks:
        want = blk(want, bias)
    torch.testing.assert_close(out, enc.norm(want), rtol=0, atol=1e-6)
    # the bias matters: without it the output differs
    flat = tokens
    for blk in enc.blocks:
        flat = Block.forward(blk, flat)
    assert not torch.allclose(out, enc.norm(flat), atol=1e-4)
    # positions follow the kept indices: the packed multi-mask pass equals separate passes
    m1, m2 = _rand_masks(2, 6, 4, 1, seed=4)[0], _rand_masks(2, 6, 3, 1, seed=5)[0]
    for got, m in zip(enc.forward_multi(x, [m1, m2]), [m1, m2], strict=True):
        torch.testing.assert_close(got, enc(x, m), rtol=1e-5, atol=1e-6)


def test_vit_forward_multi_packed_equals_separate_passes():
    torch.manual_seed(0)
    enc = VisionTransformer(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2).eval()
    x = torch.randn(2, 3, 16, 16)
    m1, m2 = _rand_masks(2, 16, 9, 1, seed=6)[0], _rand_masks(2, 16, 4, 1, seed=7)[0]
    for got, m in zip(enc.forward_multi(x, [m1, m2]), [m1, m2], strict=True):
        torch.testing.assert_close(got, enc(x, m), rtol=1e-5, atol=1e-6)


# -- conditioned predictor queries -----------------------------------------------------------------


def _pred(condition_embed=None, seed=0):
    torch.manual_seed(seed)
    return MaskTokenPredictor(SinCos2D(), (4, 4), embed_dim=16, predictor_embed_dim=8, depth=2, num_heads=2,
                              condition_embed=condition_embed).eval()


def test_conditioned_predictor_queries():
    """IWM-style: a per-sample vector, projected to the predictor width, added to the queries."""
    B, nc, nt = 3, 2, 2
    mc, mt = _rand_masks(B, 16, 5, nc, seed=1), _rand_masks(B, 16, 3, nt, seed=2)
    z = torch.randn(nc * B, 5, 16)
    plain = _pred()
    cond = _pred(nn.Linear(4, 8))
    cond.load_state_dict(plain.state_dict(), strict=False)  # same predictor, plus condition_embed
    assert set(cond.state_dict()) - set(plain.state_dict()) == {"condition_embed.weight", "condition_embed.bias"}
    assert isinstance(cond, Predictor)
    a, b = torch.randn(B, 4), torch.randn(B, 4)
    out_a, out_b = cond(z, mc, mt, condition=a), cond(z, mc, mt, condition=b)
    assert out_a.shape == (nt * nc * B, 3, 16)
    assert (out_a - out_b).abs().amax() > 1e-3  # different conditions, different predictions
    # rows are (target mask, context mask, sample): changing sample 1's condition changes its rows only
    a2 = a.clone()
    a2[1] += 1.0
    changed = (cond(z, mc, mt, condition=a2) - out_a).abs().flatten(1).amax(1) > 1e-6
    assert changed.tolist() == [r % B == 1 for r in range(nt * nc * B)]
    # a zero projection is the unconditioned predictor
    nn.init.zeros_(cond.condition_embed.weight)
    nn.init.zeros_(cond.condition_embed.bias)
    assert torch.equal(cond(z, mc, mt, condition=a), plain(z, mc, mt))
    with pytest.raises(ValueError, match="one per sample"):
        cond(z, mc, mt, condition=torch.randn(B + 1, 4))
    with pytest.raises(ValueError, match="no condition_embed"):
        plain(z, mc, mt, condition=a)


class TokenConditioned(MaskTokenPredictor):
    """Condition tokens through the ``condition_tokens`` hook: one token per condition entry."""

    def condition_tokens(self, condition):  # a fixed direction (a constant one would vanish in LayerNorm)
        return condition[:, :, None] * torch.linspace(-1, 1, self.predictor_embed_dim)


def test_condition_tokens_join_the_sequence_but_not_the_output():
    B, nc, nt = 3, 2, 2
    mc, mt = _rand_masks(B, 16, 5, nc, seed=1), _rand_masks(B, 16, 3, nt, seed=2)
    z = torch.randn(nc * B, 5, 16)
    plain = _pred()
    torch.manual_seed(0)
    tok = TokenConditioned(SinCos2D(), (4, 4), embed_dim=16, predictor_embed_dim=8, depth=2, num_heads=2).eval()
    tok.load_state_dict(plain.state_dict())
    a = torch.randn(B, 4)
    out = tok(z, mc, mt, condition=a)
    assert out.shape == plain(z, mc, mt).shape == (nt * nc * B, 3, 16)  # the extra tokens are not returned
    assert not torch.allclose(out, plain(z, mc, mt))  # but attended to
    assert torch.equal(tok(z, mc, mt), plain(z, mc, mt))  # no condition: no tokens
    # rows are (target mask, context mask, sample), so sample 1's condition changes its rows only
    a2 = a.clone()
    a2[1] += 1.0
    changed = (tok(z, mc, mt, condition=a2) - out).abs().flatten(1).amax(1) > 1e-6
    assert changed.tolist() == [r % B == 1 for r in range(nt * nc * B)]
    tok.sort_tokens = True
    with pytest.raises(ValueError, match="condition tokens need an additive position table"):
        tok(z, mc, mt, condition=a)


class ActionPredictor(MaskTokenPredictor):
    """A subclass that builds its own queries: mask token + position + a learned embedding of a
    discrete action per sample (through the ``make_queries`` hook)."""

    def __init__(self, num_actions, **kw):
        super().__init__(**kw)
        self.action_embed = nn.Embedding(num_actions, self.predictor_embed_dim)

    def make_queries(self, ids_tgt, mask_index=0, condition=None):
        queries = super().make_queries(ids_tgt, mask_index)
        return queries + self.action_embed(condition)[:, None]


def test_predictor_subclass_overrides_make_queries():
    kw = dict(positions=SinCos2D(), grid=(4, 4), embed_dim=16, predictor_embed_dim=8, depth=1, num_heads=2)
    torch.manual_seed(0)
    pred = ActionPredictor(5, **kw).eval()
    B = 2
    mc, mt = _rand_masks(B, 16, 5, 1, seed=3), _rand_masks(B, 16, 3, 2, seed=4)
    z = torch.randn(B, 5, 16)
    out0 = pred(z, mc, mt, condition=torch.tensor([0, 0]))
    out1 = pred(z, mc, mt, condition=torch.tensor([0, 3]))
    rows_changed = (out0 - out1).abs().flatten(1).amax(1) > 1e-6
    assert rows_changed.tolist() == [False, True, False, True]  # (target mask, sample 0/1)
    # with a zero action embedding it is the plain predictor
    nn.init.zeros_(pred.action_embed.weight)
    plain = MaskTokenPredictor(**kw).eval()
    plain.load_state_dict({k: v for k, v in pred.state_dict().items() if not k.startswith("action_embed")})
    assert torch.equal(pred(z, mc, mt, condition=torch.tensor([1, 4])), plain(z, mc, mt))


def test_mask_token_predictor_rows_line_up_with_targets():
    """Output row (target j, context i, sample b) reads the queries of target mask j, sample b."""
    pred = _pred()
    B, nc, nt = 2, 2, 3
    mc, mt = _rand_masks(B, 16, 5, nc, seed=8), _rand_masks(B, 16, 3, nt, seed=9)
    z = torch.randn(nc * B, 5, 16)
    out = pred(z, mc, mt)
    ids = repeat_interleave_batch(torch.cat(mt), B, nc)
    for r in range(nt * nc * B):
        j, i, b = r // (nc * B), (r // B) % nc, r % B
        assert torch.equal(ids[r], mt[j][b])
        single = pred(z[i * B + b : i * B + b + 1], [mc[i][b : b + 1]], [mt[j][b : b + 1]])
        torch.testing.assert_close(out[r : r + 1], single, rtol=1e-5, atol=1e-6)


def test_mask_token_count_and_init():
    torch.manual_seed(0)
    many = MaskTokenPredictor(SinCos2D(), (2, 2), embed_dim=8, predictor_embed_dim=8, depth=1, num_heads=2,
                              num_mask_tokens=3, zero_init_mask_tokens=True)
    assert [k for k in many.state_dict() if "mask_token" in k] == ["mask_tokens.0", "mask_tokens.1", "mask_tokens.2"]
    assert all(torch.all(t == 0) for t in many.mask_tokens)
    assert many.query_token(4) is many.mask_tokens[1]  # mask_index mod count
    one = MaskTokenPredictor(SinCos2D(), (2, 2), embed_dim=8, predictor_embed_dim=8, depth=1, num_heads=2)
    assert one.query_token(7) is one.mask_token and one.mask_token.abs().sum() > 0


def test_sincos_1d_position_encoding():
    """The 1-D table: position p, channel k < d/2 is sin(p / 10000^(2k/d)), channel d/2 + k its cos."""
    from jepa_core.nn import SinCos1D

    t = SinCos1D().table((5,), 8)
    assert t.shape == (5, 8) and t.dtype == torch.float32
    p, k = 3, 1
    w = 1.0 / 10000 ** (2 * k / 8)
    assert abs(t[p, k].item() - math.sin(p * w)) < 1e-6 and abs(t[p, 4 + k].item() - math.cos(p * w)) < 1e-6
    with pytest.raises(ValueError, match="1-D token grid"):
        SinCos1D().table((2, 3), 8)
