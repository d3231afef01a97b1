"""The I-JEPA models and presets against the official code (model: ijepa:src/models/vision_transformer.py;
optimisation: configs/*.yaml, src/helper.py; checkpoint key layout: src/train.py ``save_checkpoint``).

The ViT-H and ViT-g models are built on the meta device: shapes without memory."""

from __future__ import annotations

import pytest
import torch
from jepa_image.ijepa import SPEC, IJEPAConfig, build_model


def _meta_model(cfg: IJEPAConfig):
    with torch.device("meta"):
        return build_model(cfg)


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# The official ViT-H/14 @ 224 layout (ijepa:src/models/vision_transformer.py sizes,
# src/train.py ``save_checkpoint`` keys), written out.


def official_vith14_encoder_layout() -> dict[str, tuple[int, ...]]:
    layout = {
        "pos_embed": (1, 256, 1280),
        "patch_embed.proj.weight": (1280, 3, 14, 14),
        "patch_embed.proj.bias": (1280,),
    }
    for i in range(32):
        b = f"blocks.{i}."
        layout.update({
            b + "norm1.weight": (1280,),
            b + "norm1.bias": (1280,),
            b + "attn.qkv.weight": (3840, 1280),
            b + "attn.qkv.bias": (3840,),
            b + "attn.proj.weight": (1280, 1280),
            b + "attn.proj.bias": (1280,),
            b + "norm2.weight": (1280,),
            b + "norm2.bias": (1280,),
            b + "mlp.fc1.weight": (5120, 1280),
            b + "mlp.fc1.bias": (5120,),
            b + "mlp.fc2.weight": (1280, 5120),
            b + "mlp.fc2.bias": (1280,),
        })
    layout["norm.weight"] = (1280,)
    layout["norm.bias"] = (1280,)
    return layout


def official_vith14_predictor_layout() -> dict[str, tuple[int, ...]]:
    layout = {
        "mask_token": (1, 1, 384),
        "predictor_pos_embed": (1, 256, 384),
        "predictor_embed.weight": (384, 1280),
        "predictor_embed.bias": (384,),
    }
    for i in range(12):
        b = f"predictor_blocks.{i}."
        layout.update({
            b + "norm1.weight": (384,),
            b + "norm1.bias": (384,),
            b + "attn.qkv.weight": (1152, 384),
            b + "attn.qkv.bias": (1152,),
            b + "attn.proj.weight": (384, 384),
            b + "attn.proj.bias": (384,),
            b + "norm2.weight": (384,),
            b + "norm2.bias": (384,),
            b + "mlp.fc1.weight": (1536, 384),
            b + "mlp.fc1.bias": (1536,),
            b + "mlp.fc2.weight": (384, 1536),
            b + "mlp.fc2.bias": (384,),
        })
    layout.update({
        "predictor_norm.weight": (384,),
        "predictor_norm.bias": (384,),
        "predictor_proj.weight": (1280, 384),
        "predictor_proj.bias": (1280,),
    })
    return layout


@pytest.fixture(scope="module")
def vith14():
    return _meta_model(SPEC.load_config("in1k_vith14"))


def test_vith14_encoder_state_dict_is_the_official_layout(vith14):
    assert _shapes(vith14.encoder) == official_vith14_encoder_layout()


def test_vith14_target_encoder_has_the_encoder_layout(vith14):
    # Official checkpoints store `target_encoder` with the same keys as `encoder`.
    assert _shapes(vith14.target_encoder.module) == official_vith14_encoder_layout()


def test_vith14_predictor_state_dict_is_the_official_layout(vith14):
    assert _shapes(vith14.predictor) == official_vith14_predictor_layout()


def test_vith14_model_state_dict_has_only_the_three_official_entries(vith14):
    enc, pred = official_vith14_encoder_layout(), official_vith14_predictor_layout()
    expected = (
        {f"encoder.{k}": v for k, v in enc.items()}
        | {f"predictor.{k}": v for k, v in pred.items()}
        | {f"target_encoder.module.{k}": v for k, v in enc.items()}
    )
    assert _shapes(vith14) == expected


def test_vith14_heads_and_parameter_count(vith14):
    enc, pred = vith14.encoder, vith14.predictor
    assert all(b.attn.num_heads == 16 for b in enc.blocks)
    # The official helper builds the predictor with num_heads = encoder.num_heads (16, head_dim 24).
    assert len(pred.predictor_blocks) == 12
    assert all(b.attn.num_heads == 16 for b in pred.predictor_blocks)
    # ViT-H/14 is about 632M parameters (``vit_huge`` of ijepa:src/models/vision_transformer.py, patch 14).
    n = sum(p.numel() for p in enc.parameters())
    assert 630e6 < n < 634e6, n


def test_vith14_frozen_and_trainable_parameters(vith14):
    # pos-embeds are Parameters (so they are saved) without gradients; the mask token trains.
    assert not vith14.encoder.pos_embed.requires_grad
    assert not vith14.predictor.predictor_pos_embed.requires_grad
    assert vith14.predictor.mask_token.requires_grad
    assert not any(p.requires_grad for p in vith14.target_encoder.parameters())
    # LayerNorm eps 1e-6 everywhere (every official factory passes eps=1e-6).
    norms = [m for m in vith14.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 * (2 * 32 + 1) + (2 * 12 + 1)
    assert all(m.eps == 1e-6 for m in norms)


def test_vitg16_preset_is_the_official_giant():
    model = _meta_model(SPEC.load_config("in22k_vitg16"))
    enc, pred = model.encoder, model.predictor
    assert enc.embed_dim == 1408
    assert len(enc.blocks) == 40
    assert {b.attn.num_heads for b in enc.blocks} == {16}  # I-JEPA's ViT-g: 16 heads, head_dim 88
    assert {b.mlp.fc1.out_features for b in enc.blocks} == {6144}
    assert enc.patch_embed.proj.weight.shape == (1408, 3, 16, 16)
    assert enc.pos_embed.shape == (1, 196, 1408)
    assert len(pred.predictor_blocks) == 16
    assert {b.attn.num_heads for b in pred.predictor_blocks} == {16}
    assert pred.predictor_embed.weight.shape == (384, 1408)
    assert pred.predictor_proj.weight.shape == (1408, 384)
    assert pred.predictor_pos_embed.shape == (1, 196, 384)


@pytest.mark.parametrize(
    "preset, pos_shape",
    [
        ("in1k_vith14", (1, 256, 1280)),
        ("in1k_vith16_448", (1, 784, 1280)),
        ("in22k_vith14", (1, 256, 1280)),
        ("in22k_vitg16", (1, 196, 1408)),
    ],
)
def test_official_preset_pos_embed_shapes(preset, pos_shape):
    # pos_embed of the checkpoints released in the ijepa README:
    # H/14@224 -> [1,256,1280]; H/16@448 -> [1,784,1280]; g/16@224 -> [1,196,1408].
    model = _meta_model(SPEC.load_config(preset))
    assert tuple(model.encoder.pos_embed.shape) == pos_shape
    assert tuple(model.predictor.predictor_pos_embed.shape) == (1, pos_shape[1], 384)


# ---------------------------------------------------------------------------------------------
# Presets


# name: (epochs, per-GPU batch, crop, patch, warm-up epochs, encoder, predictor depth)
OFFICIAL_PRESETS = {
    "in1k_vith14": (300, 128, 224, 14, 40, "vit_huge", 12),
    "in1k_vith16_448": (300, 16, 448, 16, 40, "vit_huge", 12),
    "in22k_vith14": (66, 32, 224, 14, 3, "vit_huge", 12),
    "in22k_vitg16": (44, 16, 224, 16, 3, "vit_giant", 16),
}


def test_official_presets_are_shipped():
    shipped = SPEC.preset_paths()
    assert set(OFFICIAL_PRESETS) <= set(shipped)
    assert SPEC.default_preset in shipped
    assert all(p.is_file() and p.suffix == ".yaml" for p in shipped.values())


@pytest.mark.parametrize("name", sorted(SPEC.preset_paths()))
def test_every_shipped_preset_loads(name):
    cfg = SPEC.load_config(name)
    assert isinstance(cfg, IJEPAConfig)
    assert cfg.method == "ijepa"
    assert cfg.preset == name
    # Its image and patch sizes make a whole token grid, and the model section builds.
    assert cfg.data.image_size % cfg.model.patch_size == 0
    model = _meta_model(cfg)
    assert model.encoder.num_patches == (cfg.data.image_size // cfg.model.patch_size) ** 2


@pytest.mark.parametrize("name", sorted(OFFICIAL_PRESETS))
def test_official_preset_values(name):
    epochs, batch, crop, patch, warmup, encoder, pred_depth = OFFICIAL_PRESETS[name]
    cfg = SPEC.load_config(name)
    o, d, m, k = cfg.optim, cfg.data, cfg.model, cfg.mask
    # ijepa:configs/*.yaml (optimization), src/helper.py ``init_opt``
    assert o.lr == pytest.approx(1e-3)
    assert o.start_lr == pytest.approx(2e-4)
    assert o.final_lr == pytest.approx(1e-6)
    assert o.weight_decay == pytest.approx(0.04)
    assert o.final_weight_decay == pytest.approx(0.4)
    assert tuple(o.ema) == pytest.approx((0.996, 1.0))
    assert o.ipe_scale == 1.0
    assert o.warmup == warmup
    assert o.epochs == epochs
    assert o.lr_schedule == "cosine"
    assert tuple(o.betas) == (0.9, 0.999)
    assert o.clip_grad is None  # no gradient clipping in I-JEPA
    # ijepa:configs/*.yaml (data), src/transforms.py
    assert d.batch_size == batch
    assert d.image_size == crop
    assert tuple(d.crop_scale) == pytest.approx((0.3, 1.0))
    assert tuple(d.mean) == pytest.approx((0.485, 0.456, 0.406))
    assert tuple(d.std) == pytest.approx((0.229, 0.224, 0.225))
    # ijepa:configs/*.yaml (meta), src/models/vision_transformer.py
    assert m.patch_size == patch
    assert m.encoder == encoder
    assert m.pred_depth == pred_depth
    assert m.pred_emb_dim == 384
    assert m.pred_num_heads is None  # = encoder heads
    assert m.loss == "smooth_l1"
    assert m.drop_path_rate == 0.0
    # ijepa:configs/*.yaml: the released configs' mask section
    assert tuple(k.enc_mask_scale) == pytest.approx((0.85, 1.0))
    assert tuple(k.pred_mask_scale) == pytest.approx((0.15, 0.2))
    assert tuple(k.aspect_ratio) == pytest.approx((0.75, 1.5))
    assert (k.num_enc_masks, k.num_pred_masks, k.min_keep, k.allow_overlap) == (1, 4, 10, False)
    assert k.fix_position_bound is False


def test_unknown_preset_names_the_valid_ones():
    from jepa_core.config import ConfigError

    with pytest.raises(ConfigError) as err:
        SPEC.load_config("in1k_vith99")
    assert "in1k_vith14" in str(err.value) and "demo" in str(err.value)


def test_tiny_pos_embed_first_half_encodes_the_column():
    # ijepa:src/models/vision_transformer.py ``get_2d_sincos_pos_embed``: I-JEPA's 2-D table is [column half | row half].
    cfg = SPEC.load_config("demo", overrides=["model.embed_dim=32", "model.depth=1", "model.num_heads=2",
                                              "model.pred_depth=1", "model.pred_emb_dim=16"])
    pos = build_model(cfg).encoder.pos_embed[0]
    grid = cfg.data.image_size // cfg.model.patch_size  # 7
    half = pos.shape[1] // 2
    # Token `grid` is (row 1, col 0): same column as token 0, so the first half matches.
    assert torch.equal(pos[grid, :half], pos[0, :half])
    assert not torch.equal(pos[grid, half:], pos[0, half:])
    # Token 1 is (row 0, col 1): same row, so the second half matches.
    assert torch.equal(pos[1, half:], pos[0, half:])
    assert not torch.equal(pos[1, :half], pos[0, :half])
    # Column 0 of the first half is sin(0) = 0; the cos part of the first half is 1.
    assert torch.allclose(pos[0, : half // 2], torch.zeros(half // 2))
    assert torch.allclose(pos[0, half // 2 : half], torch.ones(half // 2))
