"""Predictors of V-JEPA and V-JEPA 2, as configurations of
:class:`jepa_core.nn.predictor.MaskTokenPredictor`.

Both map context tokens to a narrow width, append one learned mask token per target position,
run full (bidirectional) attention, and project the target part back to the encoder width.
Parameter names follow the official code (jepa:src/models/predictor.py,
vjepa2:src/models/predictor.py): ``predictor_embed``, ``mask_tokens.{i}``,
``predictor_pos_embed`` (V-JEPA only), ``predictor_blocks.{i}.*``, ``predictor_norm``,
``predictor_proj``.

Row layout (both): context rows are ``len(masks_ctx) * B`` (mask-major, as the encoder returns
them); the output has one row per (target mask, context mask, sample), target-major, so it
lines up with ``repeat_interleave_batch(apply_masks(targets, masks_tgt), B, len(masks_ctx))``.
With the official 1:1 pairing (one context and one target mask per call) this is just ``[B]``.
"""

from __future__ import annotations

from typing import Any

import torch
from jepa_core.nn.predictor import MaskTokenPredictor

from jepa_video.nn.rope import RoPE3D
from jepa_video.nn.vit import VIDEO_VIT_SIZES, SinCos3D, _pair


class _VideoPredictor(MaskTokenPredictor):
    """The shared part: the ``(T', H', W')`` grid of the clip and ``mask_tokens`` zero-initialised
    by default (``zero_init_mask_tokens: true`` in every official config)."""

    def __init__(self, positions, img_size, num_frames, patch_size, tubelet_size, embed_dim, predictor_embed_dim,
                 depth, num_heads, mlp_ratio, qkv_bias, num_mask_tokens, zero_init_mask_tokens, rescale_init,
                 init_std, sort_tokens=False):
        if isinstance(num_mask_tokens, bool) or not isinstance(num_mask_tokens, int) or num_mask_tokens < 1:
            # the base class reads None as "one shared mask_token Parameter" (I-JEPA's layout),
            # which the video checkpoints never have (their keys are mask_tokens.{i})
            raise ValueError(f"num_mask_tokens must be a positive int for the video predictors (got "
                             f"{num_mask_tokens!r}); use 1 for a single learned mask token")
        img = _pair(img_size)
        grid = (num_frames // tubelet_size, img[0] // patch_size, img[1] // patch_size)
        super().__init__(
            positions, grid, embed_dim, predictor_embed_dim, depth, num_heads, mlp_ratio, qkv_bias,
            num_mask_tokens=num_mask_tokens, zero_init_mask_tokens=zero_init_mask_tokens,
            rescale_init=rescale_init, sort_tokens=sort_tokens, init_std=init_std,
        )
        self.grid = grid

    # the base's single ``mask_token`` Parameter exists only with num_mask_tokens=None, never here
    def mask_token(self, mask_index: int) -> torch.Tensor:  # type: ignore[override]
        """``mask_tokens[mask_index mod num_mask_tokens]``, the official indexing."""
        return self.query_token(mask_index)


class VJEPAPredictor(_VideoPredictor):
    """The V-JEPA predictor (jepa:src/models/predictor.py).

    Defaults are the released ViT-L/16 recipe: width 384, depth 12, heads = encoder heads (16 for
    ViT-L/H, so head_dim 24), 2 zero-initialised mask tokens (one per mask configuration),
    ``predictor_pos_embed`` = 3-D sin-cos ``[1, N, 384]`` with ``uniform_power`` (128 per axis).
    The official constructor rescales block weights by depth but ``init_video_model`` re-inits
    every Linear afterwards, so ``rescale_init=False``.

    ``forward(x, masks_ctx, masks_tgt, mask_index)``: ``x`` are the encoder outputs for the
    context mask(s); ``mask_index`` picks the mask token (the index of the mask configuration,
    as ``PredictorMultiMaskWrapper`` passes it, jepa:src/models/utils/multimask.py).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        num_frames: int = 16,
        patch_size: int = 16,
        tubelet_size: int = 2,
        embed_dim: int = 1024,
        predictor_embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        uniform_power: bool = True,
        num_mask_tokens: int = 2,
        zero_init_mask_tokens: bool = True,
        rescale_init: bool = False,
        init_std: float = 0.02,
    ):
        super().__init__(
            SinCos3D(uniform_power), img_size, num_frames, patch_size, tubelet_size, embed_dim, predictor_embed_dim,
            depth, num_heads, mlp_ratio, qkv_bias, num_mask_tokens, zero_init_mask_tokens, rescale_init, init_std,
        )


class VJEPA2Predictor(_VideoPredictor):
    """The V-JEPA 2 predictor (vjepa2:src/models/predictor.py).

    Width 384, depth 12, **12 heads** (``pred_num_heads: 12``, head_dim 32 -> 10 RoPE channels
    per axis), 3-D RoPE attention, no ``predictor_pos_embed``, **10** zero-initialised mask
    tokens as in the released checkpoints (the train configs would build 2 x len(dataset_fpcs);
    vjepa2 issue #124). The depth rescale is kept (vjepa2:app/vjepa/utils.py ``init_video_model``
    does not re-initialise). RoPE positions are decomposed on the predictor's own grid (its
    ``img_size`` / ``patch_size``), as the official blocks fall back to ``grid_size``.

    Official quirk: ``PredictorMultiSeqWrapper`` passes ``mask_index`` = index of the clip-length
    group, not of the mask configuration, so with one clip length both mask configurations use
    ``mask_tokens[0]`` (vjepa2:src/utils/wrappers.py).

    The official forward sorts [context, targets] by token index before the blocks and un-sorts
    after (per-row Python loops); here it is one ``argsort`` + ``gather``. With bidirectional
    attention and RoPE (positions travel with their tokens) the sort is a no-op, so
    ``sort_tokens=False`` gives the same output up to float summation order.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 256,
        num_frames: int = 16,
        patch_size: int = 16,
        tubelet_size: int = 2,
        embed_dim: int = 1024,
        predictor_embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        num_mask_tokens: int = 10,
        zero_init_mask_tokens: bool = True,
        rope_fix_tiling: bool = False,
        rescale_init: bool = True,
        sort_tokens: bool = True,
        init_std: float = 0.02,
    ):
        super().__init__(
            RoPE3D(rope_fix_tiling), img_size, num_frames, patch_size, tubelet_size, embed_dim, predictor_embed_dim,
            depth, num_heads, mlp_ratio, qkv_bias, num_mask_tokens, zero_init_mask_tokens, rescale_init, init_std,
            sort_tokens=sort_tokens,
        )


def _encoder_width(encoder: str | int) -> int:
    if isinstance(encoder, int):
        return encoder
    if encoder not in VIDEO_VIT_SIZES:
        raise KeyError(f"unknown ViT size {encoder!r}; valid sizes: {', '.join(VIDEO_VIT_SIZES)}")
    return VIDEO_VIT_SIZES[encoder][0]


def vjepa_predictor(encoder: str | int = "vit_large", **kwargs) -> VJEPAPredictor:
    """V-JEPA predictor for an encoder size (name or width): heads = encoder heads
    (jepa:src/models/predictor.py, jepa:configs/pretrain/vitl16.yaml ``pred_depth 12``, ``pred_embed_dim 384``)."""
    opts: dict[str, Any] = dict(embed_dim=_encoder_width(encoder))
    if isinstance(encoder, str):
        opts["num_heads"] = VIDEO_VIT_SIZES[encoder][2]
    opts.update(kwargs)
    return VJEPAPredictor(**opts)


def vjepa2_predictor(encoder: str | int = "vit_large", **kwargs) -> VJEPA2Predictor:
    """V-JEPA 2 predictor for an encoder size: 384 wide, 12 deep, 12 heads, 10 mask tokens
    (vjepa2:src/hub/backbones.py)."""
    opts: dict[str, Any] = dict(embed_dim=_encoder_width(encoder))
    opts.update(kwargs)
    return VJEPA2Predictor(**opts)
