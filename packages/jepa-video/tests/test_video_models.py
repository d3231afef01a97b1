"""Video encoders and predictors of V-JEPA / V-JEPA 2 (jepa:src/models/vision_transformer.py,
src/models/predictor.py; vjepa2:src/models/vision_transformer.py, src/models/predictor.py) and the
key layout of their released checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from jepa_core.masks.ops import apply_masks
from jepa_core.nn import (
    BlockwiseEncoder,
    PositionEncoding,
    Predictor,
    Tokenizer,
    repeat_interleave_batch,
    sincos_3d,
)
from jepa_video.nn import (
    VIDEO_VIT_SIZES,
    PatchEmbed3D,
    VideoVisionTransformer,
    VJEPA2Predictor,
    VJEPAPredictor,
    vjepa2_predictor,
    vjepa2_vit,
    vjepa_predictor,
    vjepa_vit,
)
from jepa_video.nn.rope import RoPE3D, RoPETables
from jepa_video.nn.vit import SinCos3D

D, HEADS = 48, 2  # head_dim 24 -> 8 RoPE channels per axis
SMALL = dict(img_size=16, num_frames=4, patch_size=4, tubelet_size=2, embed_dim=D, depth=2, num_heads=HEADS)
NTOK = 2 * 4 * 4


def _enc(**kw):
    torch.manual_seed(0)
    return VideoVisionTransformer(**{**SMALL, **kw}).eval()


def _masks(B, K, seed, n=NTOK):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n, generator=g)[:K].sort().values for _ in range(B)])


def _video(B=2, seed=0):
    return torch.randn(B, 3, 4, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_patch_embed_3d_tubelets_in_thw_order():
    torch.manual_seed(0)
    pe = PatchEmbed3D(patch_size=4, tubelet_size=2, in_chans=3, embed_dim=5)
    assert pe.proj.weight.shape == (5, 3, 2, 4, 4)
    x = torch.randn(1, 3, 6, 8, 12)
    out = pe(x)
    assert out.shape == (1, 3 * 2 * 3, 5)
    for n in (0, 4, 7, 17):
        t, h, w = n // 6, (n % 6) // 3, n % 3
        cube = x[0, :, 2 * t : 2 * t + 2, 4 * h : 4 * h + 4, 4 * w : 4 * w + 4]
        want = torch.einsum("cthw,dcthw->d", cube, pe.proj.weight) + pe.proj.bias
        torch.testing.assert_close(out[0, n], want, atol=1e-5, rtol=1e-5)


def test_vjepa_encoder_adds_table_before_masking():
    enc = _enc()
    assert not enc.pos_embed.requires_grad
    torch.testing.assert_close(enc.pos_embed[0], sincos_3d(D, 2, 4, 4), rtol=0, atol=0)
    x, m = _video(), _masks(2, 9, 1)
    tokens = apply_masks(enc.patch_embed(x) + enc.pos_embed, m)
    want = tokens
    for blk in enc.blocks:
        want = blk(want)
    torch.testing.assert_close(enc(x, m), enc.norm(want))
    assert enc(x).shape == (2, NTOK, D)
    assert enc(x, [m, _masks(2, 9, 2)]).shape == (4, 9, D)  # mask-major stacking, like the image ViT


def test_vjepa_shorter_clip_table_equals_truncation():
    enc = _enc()
    short = enc.position_table(1, 4, 4)
    torch.testing.assert_close(short[0], enc.pos_embed[0, :16], rtol=0, atol=0)


@pytest.mark.parametrize("use_rope", [False, True])
def test_forward_multi_packed_equals_separate_passes(use_rope):
    enc = _enc(use_rope=use_rope)
    x = _video(3)
    masks = [_masks(3, 20, 1), _masks(3, 6, 2)]  # different lengths, like the two official configs
    packed = enc.forward_multi(x, masks, packed=True)
    separate = [enc(x, m) for m in masks]
    for p, s in zip(packed, separate):
        assert p.shape == s.shape
        torch.testing.assert_close(p, s, atol=1e-5, rtol=1e-5)


def test_rope_encoder_positions_travel_with_tokens():
    enc = _enc(use_rope=True, rescale_init=True)
    assert enc.pos_embed is None and "pos_embed" not in enc.state_dict()
    x = _video()
    m = _masks(2, 10, 3)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(4))
    out = enc(x, m)
    out_perm = enc(x, m[:, perm])
    torch.testing.assert_close(out_perm, out[:, perm], atol=1e-5, rtol=1e-5)  # permutation equivariant
    # but positions matter: other indices for the same tokens give other outputs
    tokens = apply_masks(enc.patch_embed(x), m)
    y = tokens
    for blk in enc.blocks:
        y = blk(y, m, (4, 4))
    torch.testing.assert_close(out, enc.norm(y))
    z = tokens
    for blk in enc.blocks:
        z = blk(z, m + 1, (4, 4))
    assert (enc.norm(z) - out).abs().max() > 1e-3


def test_rescale_init_applies_depth_rescale():
    a, b = _enc(depth=3), _enc(depth=3, rescale_init=True)
    for i in range(3):
        torch.testing.assert_close(b.blocks[i].mlp.fc2.weight, a.blocks[i].mlp.fc2.weight / (2 * (i + 1)) ** 0.5)


# ------------------------------------------------------------------------------ predictors


def test_vjepa_predictor_shapes_and_tokens():
    torch.manual_seed(0)
    pred = VJEPAPredictor(img_size=16, num_frames=4, patch_size=4, embed_dim=D, predictor_embed_dim=24,
                          depth=2, num_heads=2).eval()
    assert len(pred.mask_tokens) == 2 and all(not t.detach().any() for t in pred.mask_tokens)
    torch.testing.assert_close(pred.predictor_pos_embed[0], sincos_3d(24, 2, 4, 4), rtol=0, atol=0)
    ctx, tgt = _masks(2, 10, 1), _masks(2, 7, 2)
    z = torch.randn(2, 10, D)
    out = pred(z, ctx, tgt, mask_index=1)
    assert out.shape == (2, 7, D)
    # two target masks per context: target-major rows
    out2 = pred(z, [ctx], [tgt, _masks(2, 7, 3)], mask_index=1)
    assert out2.shape == (4, 7, D)
    torch.testing.assert_close(out2[:2], out, atol=1e-5, rtol=1e-5)
    # the mask token is chosen by mask_index mod num_mask_tokens
    with torch.no_grad():
        pred.mask_tokens[1].normal_(generator=torch.Generator().manual_seed(0))  # not constant: LN removes that
    torch.testing.assert_close(pred(z, ctx, tgt, 3), pred(z, ctx, tgt, 1))
    assert (pred(z, ctx, tgt, 0) - pred(z, ctx, tgt, 1)).abs().max() > 1e-4


def test_vjepa_predictor_matches_manual_forward():
    torch.manual_seed(1)
    pred = VJEPAPredictor(img_size=16, num_frames=4, patch_size=4, embed_dim=D, predictor_embed_dim=24,
                          depth=1, num_heads=2).eval()
    with torch.no_grad():
        pred.mask_tokens[0].normal_()
    ctx, tgt = _masks(2, 10, 1), _masks(2, 7, 2)
    z = torch.randn(2, 10, D)
    pos = pred.predictor_pos_embed.expand(2, -1, -1)
    seq = torch.cat([pred.predictor_embed(z) + apply_masks(pos, ctx), pred.mask_tokens[0] + apply_masks(pos, tgt)], 1)
    want = pred.predictor_proj(pred.predictor_norm(pred.predictor_blocks[0](seq))[:, 10:])
    torch.testing.assert_close(pred(z, ctx, tgt, 0), want)


def _v2pred(**kw):
    torch.manual_seed(0)
    args = dict(img_size=16, num_frames=4, patch_size=4, embed_dim=D, predictor_embed_dim=24, depth=2, num_heads=2)
    args.update(kw)
    return VJEPA2Predictor(**args).eval()


def test_vjepa2_predictor_sort_is_a_noop_and_shapes():
    pred = _v2pred(init_std=0.3)  # larger weights so position effects are well above rounding
    assert len(pred.mask_tokens) == 10 and not hasattr(pred, "predictor_pos_embed")
    with torch.no_grad():
        for i, t in enumerate(pred.mask_tokens):
            t.normal_(generator=torch.Generator().manual_seed(i))
    ctx, tgt = _masks(3, 12, 1), _masks(3, 9, 2)
    z = torch.randn(3, 12, D)
    out = pred(z, ctx, tgt, mask_index=0)
    assert out.shape == (3, 9, D)
    pred.sort_tokens = False
    torch.testing.assert_close(pred(z, ctx, tgt, mask_index=0), out, atol=1e-5, rtol=1e-5)
    pred.sort_tokens = True
    torch.testing.assert_close(pred(z, ctx, tgt, mask_index=12), pred(z, ctx, tgt, mask_index=2))
    # positions matter: shifting the target indices changes the predictions
    assert (pred(z, ctx, (tgt + 1) % NTOK, 0) - out).abs().max() > 1e-4
    # several target masks: target-major rows, each equal to its own call
    tgt2 = _masks(3, 9, 5)
    both = pred(z, ctx, [tgt, tgt2], 0)
    torch.testing.assert_close(both[3:], pred(z, ctx, tgt2, 0), atol=1e-5, rtol=1e-5)


def test_vjepa2_predictor_sort_matches_loop_sort():
    # vectorised argsort/gather == the per-row loop of the official code
    ids = torch.cat([_masks(4, 6, 1), _masks(4, 5, 2)], dim=1)
    x = torch.randn(4, 11, 3)
    order = torch.argsort(ids, dim=1)
    loop = torch.stack([x[i, row] for i, row in enumerate(order)])
    vec = torch.gather(x, 1, order.unsqueeze(-1).expand(-1, -1, 3))
    assert torch.equal(loop, vec)
    inv = torch.argsort(order, dim=1)
    assert torch.equal(torch.gather(vec, 1, inv.unsqueeze(-1).expand(-1, -1, 3)), x)


def test_end_to_end_small_shapes():
    enc = _enc(use_rope=True)
    pred = _v2pred()
    x = _video(2)
    m_enc, m_pred = [_masks(2, 12, 1), _masks(2, 4, 2)], [_masks(2, 9, 3), _masks(2, 20, 4)]
    z = enc.forward_multi(x, m_enc)
    outs = [pred(zi, me, mp, 0) for zi, me, mp in zip(z, m_enc, m_pred)]
    assert [o.shape for o in outs] == [(2, 9, D), (2, 20, D)]
    assert repeat_interleave_batch(torch.arange(4).view(4, 1), 2, 1).shape == (4, 1)


# ------------------------------------------------------------------------ official layouts


def _block_shapes(prefix: str, dim: int, hidden: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.norm1.weight": (dim,), f"{prefix}.norm1.bias": (dim,),
        f"{prefix}.attn.qkv.weight": (3 * dim, dim), f"{prefix}.attn.qkv.bias": (3 * dim,),
        f"{prefix}.attn.proj.weight": (dim, dim), f"{prefix}.attn.proj.bias": (dim,),
        f"{prefix}.norm2.weight": (dim,), f"{prefix}.norm2.bias": (dim,),
        f"{prefix}.mlp.fc1.weight": (hidden, dim), f"{prefix}.mlp.fc1.bias": (hidden,),
        f"{prefix}.mlp.fc2.weight": (dim, hidden), f"{prefix}.mlp.fc2.bias": (dim,),
    }  # fmt: skip


def _encoder_layout(dim, depth, hidden, n_tokens=None):
    want = {"patch_embed.proj.weight": (dim, 3, 2, 16, 16), "patch_embed.proj.bias": (dim,),
            "norm.weight": (dim,), "norm.bias": (dim,)}
    if n_tokens is not None:
        want["pos_embed"] = (1, n_tokens, dim)
    for i in range(depth):
        want.update(_block_shapes(f"blocks.{i}", dim, hidden))
    return want


def _predictor_layout(dim, n_mask_tokens, n_tokens=None, depth=12, width=384):
    want = {"predictor_embed.weight": (width, dim), "predictor_embed.bias": (width,),
            "predictor_norm.weight": (width,), "predictor_norm.bias": (width,),
            "predictor_proj.weight": (dim, width), "predictor_proj.bias": (dim,)}
    want.update({f"mask_tokens.{i}": (1, 1, width) for i in range(n_mask_tokens)})
    if n_tokens is not None:
        want["predictor_pos_embed"] = (1, n_tokens, width)
    for i in range(depth):
        want.update(_block_shapes(f"predictor_blocks.{i}", width, 4 * width))
    return want


def _shapes(module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_vjepa_vit_large_layout_b6():
    with torch.device("meta"):
        enc, pred = vjepa_vit("vit_large"), vjepa_predictor("vit_large")
    assert _shapes(enc) == _encoder_layout(1024, 24, 4096, n_tokens=1568)
    assert _shapes(pred) == _predictor_layout(1024, 2, n_tokens=1568)
    assert all(b.attn.num_heads == 16 for b in pred.predictor_blocks)  # heads = encoder heads, head_dim 24
    assert all(b.attn.num_heads == 16 for b in enc.blocks)


def test_vjepa_vit_huge_384_layout():
    with torch.device("meta"):
        enc = vjepa_vit("vit_huge", img_size=384)
        pred = vjepa_predictor("vit_huge", img_size=384)
    assert _shapes(enc) == _encoder_layout(1280, 32, 5120, n_tokens=4608)
    assert _shapes(pred) == _predictor_layout(1280, 2, n_tokens=4608)


@pytest.mark.parametrize(
    "name,dim,depth,heads,hidden",
    [("vit_large", 1024, 24, 16, 4096), ("vit_huge", 1280, 32, 16, 5120), ("vit_giant_xformers", 1408, 40, 22, 6144)],
)
def test_vjepa2_layouts_c6(name, dim, depth, heads, hidden):
    with torch.device("meta"):
        enc, pred = vjepa2_vit(name), vjepa2_predictor(name)
    assert enc.pos_embed is None
    assert _shapes(enc) == _encoder_layout(dim, depth, hidden)  # no pos_embed, no RoPE buffers
    assert _shapes(pred) == _predictor_layout(dim, 10)  # 10 mask tokens, no predictor_pos_embed
    assert all(b.attn.num_heads == heads for b in enc.blocks)
    assert all(b.attn.num_heads == 12 for b in pred.predictor_blocks)
    assert enc.blocks[0].attn.head_dim == (80 if name == "vit_huge" else 64)
    assert enc.num_patches == 8 * 16 * 16


def test_size_table():
    assert VIDEO_VIT_SIZES["vit_large"] == (1024, 24, 16, 4.0)
    assert VIDEO_VIT_SIZES["vit_giant"][2] == 16  # V-JEPA ViT-g: 16 heads
    assert VIDEO_VIT_SIZES["vit_giant_xformers"][2] == 22  # V-JEPA 2 released ViT-g


def test_frame_by_frame_encodes_each_kept_frame_on_its_own():
    from jepa_core.nn import VisionTransformer, sincos_1d
    from jepa_video.nn import FrameByFrame

    torch.manual_seed(0)
    image = VisionTransformer(img_size=16, patch_size=4, embed_dim=D, depth=1, num_heads=HEADS).eval()
    clips = torch.randn(2, 3, 6, 16, 16)
    with torch.no_grad():
        blind = FrameByFrame(image, stride=2, temporal_embedding=False)(clips)
        timed = FrameByFrame(image, stride=2)(clips)
        per_frame = [image(clips[:, :, t]) for t in (0, 2, 4)]  # frames 0, 2, 4: every 2nd
    assert blind.shape == (2, 3 * 16, D)
    assert torch.allclose(blind, torch.cat(per_frame, dim=1), atol=1e-6)
    # Frame-major order; the table only adds the frame index, the same for every token of a frame.
    table = sincos_1d(D, torch.arange(3)).float()
    assert torch.allclose(timed - blind, table.repeat_interleave(16, 0).expand(2, -1, -1), atol=1e-6)
    # Time-blind: the encoder cannot tell a clip from its frames in another order.
    with torch.no_grad():
        shuffled = FrameByFrame(image, stride=2, temporal_embedding=False)(clips[:, :, [4, 1, 2, 3, 0, 5]])
    assert torch.allclose(shuffled[:, :16], blind[:, 32:], atol=1e-6)
    with pytest.raises(ValueError, match="clips"):
        FrameByFrame(image)(clips[:, :, 0])


# ------------------------------------------------------------- composable parts (jepa_core.nn)

GOLDEN = Path(__file__).parent / "video_nn_golden_pre_refactor.pt"
CLASSES = {"VideoVisionTransformer": VideoVisionTransformer, "VJEPAPredictor": VJEPAPredictor,
           "VJEPA2Predictor": VJEPA2Predictor}


def _flat(x):
    return [x] if isinstance(x, torch.Tensor) else [t for e in x for t in _flat(e)]


@pytest.mark.parametrize("case", ["vjepa_vit", "vjepa2_vit", "vjepa_predictor", "vjepa2_predictor"])
def test_outputs_equal_pre_refactor_implementation(case):
    """Outputs saved from the video classes before they became configurations of MaskedEncoder /
    MaskTokenPredictor (same state dict, same inputs, incl. forward_multi and mask_index): equal
    to float rounding (bitwise on the machine that made them), same state-dict keys and shapes."""
    saved = torch.load(GOLDEN)[case]
    model = CLASSES[saved["cls"]](**saved["kwargs"]).eval()
    assert [(k, v.shape) for k, v in model.state_dict().items()] == [
        (k, v.shape) for k, v in saved["state_dict"].items()
    ]
    model.load_state_dict(saved["state_dict"], strict=True)
    with torch.no_grad():
        got = [getattr(model, name)(*args, **kwargs) for name, args, kwargs in saved["calls"]]
    for g, w in zip(_flat(got), _flat(saved["outputs"]), strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-6)


def test_video_models_satisfy_the_protocols():
    enc, rope_enc = _enc(), _enc(use_rope=True)
    with torch.device("meta"):
        preds = [vjepa_predictor("vit_tiny"), vjepa2_predictor("vit_tiny")]
    for e in (enc, rope_enc):
        assert isinstance(e, BlockwiseEncoder) and isinstance(e.patch_embed, Tokenizer)
        assert isinstance(e.positions, PositionEncoding)
    assert isinstance(enc.positions, SinCos3D) and isinstance(rope_enc.positions, RoPE3D)
    assert all(isinstance(p, Predictor) for p in preds)
    assert isinstance(preds[0].positions, SinCos3D) and isinstance(preds[1].positions, RoPE3D)
    assert preds[1].mask_token(13) is preds[1].mask_tokens[3]  # official index: mod 10


def test_patch_embed_3d_grid_checks_the_input():
    pe = PatchEmbed3D(patch_size=4, tubelet_size=2, in_chans=3, embed_dim=5)
    assert pe.grid(torch.zeros(1, 3, 6, 8, 12)) == (3, 2, 3)
    with pytest.raises(ValueError, match=r"expected videos \[B, 3, T, H, W\]"):
        pe.grid(torch.zeros(1, 3, 8, 12))
    with pytest.raises(ValueError, match="expected videos"):
        _enc()(torch.zeros(1, 1, 4, 16, 16))


def test_rope3d_context_is_shared_tables_of_the_kept_indices():
    enc = _enc(use_rope=True)
    x, m = _video(), _masks(2, 9, 3)
    ctx = enc.attention_context(m, (2, 4, 4))
    assert isinstance(ctx, RoPETables) and ctx.ids is m and ctx.grid_hw == (4, 4)
    tokens = apply_masks(enc.patch_embed(x), m)
    for blk in enc.blocks:
        tokens = blk(tokens, m, (4, 4))  # indices + grid, the pre-refactor call
    torch.testing.assert_close(enc(x, m), enc.norm(tokens), rtol=0, atol=1e-6)


def test_frame_by_frame_is_an_encoder():
    from jepa_core.nn import VisionTransformer
    from jepa_video.nn import FrameByFrame

    torch.manual_seed(0)
    image = VisionTransformer(img_size=16, patch_size=4, embed_dim=D, depth=3, num_heads=HEADS).eval()
    fbf = FrameByFrame(image, stride=2)
    assert isinstance(fbf, BlockwiseEncoder) and (fbf.depth, fbf.num_heads, fbf.embed_dim) == (3, HEADS, D)
    assert fbf.blocks is image.blocks and fbf.norm is image.norm
    assert "blocks.0.attn.qkv.weight" not in fbf.state_dict()  # only under image_encoder.*
    clips = torch.randn(2, 3, 4, 16, 16)
    with torch.no_grad():
        layers = fbf(clips, return_layers=[1, 2])
        assert len(layers) == 2
        torch.testing.assert_close(layers[1], fbf(clips), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="masks"):
        fbf(clips, masks=_masks(2, 4, 0))


@pytest.mark.parametrize("bad", [None, 0, -1, 2.0, True])
def test_video_predictors_reject_a_non_positive_int_mask_token_count(bad):
    for cls in (VJEPAPredictor, VJEPA2Predictor):
        with pytest.raises(ValueError, match="num_mask_tokens must be a positive int"):
            cls(img_size=16, num_frames=2, patch_size=8, embed_dim=32, predictor_embed_dim=16, depth=1,
                num_heads=2, num_mask_tokens=bad)
    one = VJEPAPredictor(img_size=16, num_frames=2, patch_size=8, embed_dim=32, predictor_embed_dim=16, depth=1,
                         num_heads=2, num_mask_tokens=1)
    assert len(one.mask_tokens) == 1 and one.mask_token(5) is one.mask_tokens[0]
