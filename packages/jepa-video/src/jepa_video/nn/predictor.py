"""Predictors of V-JEPA and V-JEPA 2.

Both map context tokens to a narrow width, append one learned mask token per target position,
run full (bidirectional) attention, and project the target part back to the encoder width.
Parameter names follow the official code (reference B.6, C.6): ``predictor_embed``,
``mask_tokens.{i}``, ``predictor_pos_embed`` (V-JEPA only), ``predictor_blocks.{i}.*``,
``predictor_norm``, ``predictor_proj``.

Row layout (both): context rows are ``len(masks_ctx) * B`` (mask-major, as the encoder returns
them); the output has one row per (target mask, context mask, sample), target-major, so it
lines up with ``repeat_interleave_batch(apply_masks(targets, masks_tgt), B, len(masks_ctx))``.
With the official 1:1 pairing (one context and one target mask per call) this is just ``[B]``.
"""

from __future__ import annotations

import torch
from jepa_core.masks.ops import apply_masks
from jepa_core.nn.pos_embed import sincos_3d
from jepa_core.nn.vit import (
    Block,
    LayerNorm,
    repeat_interleave_batch,
    rescale_blocks_,
    trunc_normal_init_,
)
from torch import nn

from jepa_video.nn.rope import RoPEBlock, RoPETables
from jepa_video.nn.vit import VIDEO_VIT_SIZES, _pair


def _as_list(m) -> list[torch.Tensor]:
    return [m] if isinstance(m, torch.Tensor) else list(m)


class _VideoPredictorBase(nn.Module):
    def __init__(self, img_size, num_frames, patch_size, tubelet_size, embed_dim, predictor_embed_dim,
                 num_mask_tokens, zero_init_mask_tokens, init_std):
        super().__init__()
        img = _pair(img_size)
        self.grid = (num_frames // tubelet_size, img[0] // patch_size, img[1] // patch_size)
        self.num_patches = self.grid[0] * self.grid[1] * self.grid[2]
        self.embed_dim, self.predictor_embed_dim = embed_dim, predictor_embed_dim
        self.num_mask_tokens = num_mask_tokens
        self.predictor_embed = nn.Linear(embed_dim, predictor_embed_dim, bias=True)
        # Zero-initialised (``zero_init_mask_tokens: true`` in every official config; reference
        # B.1, C.1, part D item 8).
        self.mask_tokens = nn.ParameterList(
            nn.Parameter(torch.zeros(1, 1, predictor_embed_dim)) for _ in range(num_mask_tokens)
        )
        self._zero_init = zero_init_mask_tokens
        self._init_std = init_std

    def _finish_init(self, rescale_init: bool) -> None:
        trunc_normal_init_(self, self._init_std)
        if rescale_init:
            rescale_blocks_(self.predictor_blocks)
        if not self._zero_init:
            for t in self.mask_tokens:
                nn.init.trunc_normal_(t, std=self._init_std, a=-2.0, b=2.0)

    def mask_token(self, mask_index: int) -> torch.Tensor:
        """``mask_tokens[mask_index mod num_mask_tokens]``, the official indexing."""
        return self.mask_tokens[mask_index % self.num_mask_tokens]


class VJEPAPredictor(_VideoPredictorBase):
    """The V-JEPA predictor (jepa:src/models/predictor.py; reference B.1).

    Defaults are the released ViT-L/16 recipe: width 384, depth 12, heads = encoder heads (16 for
    ViT-L/H, so head_dim 24), 2 zero-initialised mask tokens (one per mask configuration),
    ``predictor_pos_embed`` = 3-D sin-cos ``[1, N, 384]`` with ``uniform_power`` (128 per axis).
    The official constructor rescales block weights by depth but ``init_video_model`` re-inits
    every Linear afterwards, so ``rescale_init=False``.

    ``forward(x, masks_ctx, masks_tgt, mask_index)``: ``x`` are the encoder outputs for the
    context mask(s); ``mask_index`` picks the mask token (the index of the mask configuration,
    as ``PredictorMultiMaskWrapper`` passes it).
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
        super().__init__(img_size, num_frames, patch_size, tubelet_size, embed_dim, predictor_embed_dim,
                         num_mask_tokens, zero_init_mask_tokens, init_std)
        table = sincos_3d(predictor_embed_dim, *self.grid, uniform_power=uniform_power)
        self.predictor_pos_embed = nn.Parameter(table.unsqueeze(0), requires_grad=False)
        self.predictor_blocks = nn.ModuleList(
            Block(predictor_embed_dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth)
        )
        self.predictor_norm = LayerNorm(predictor_embed_dim)
        self.predictor_proj = nn.Linear(predictor_embed_dim, embed_dim, bias=True)
        self._finish_init(rescale_init)

    def forward(self, x: torch.Tensor, masks_ctx, masks_tgt, mask_index: int = 0) -> torch.Tensor:
        masks_ctx, masks_tgt = _as_list(masks_ctx), _as_list(masks_tgt)
        B = x.shape[0] // len(masks_ctx)
        pos = self.predictor_pos_embed.expand(B, -1, -1)
        x = self.predictor_embed(x) + apply_masks(pos, masks_ctx)
        n_ctx = x.shape[1]
        tgt_pos = repeat_interleave_batch(apply_masks(pos, masks_tgt), B, len(masks_ctx))
        queries = self.mask_token(mask_index).to(x.dtype) + tgt_pos
        x = torch.cat([x.repeat(len(masks_tgt), 1, 1), queries], dim=1)
        for blk in self.predictor_blocks:
            x = blk(x)  # full attention, no mask (reference B.1)
        x = self.predictor_norm(x)[:, n_ctx:]
        return self.predictor_proj(x)


class VJEPA2Predictor(_VideoPredictorBase):
    """The V-JEPA 2 predictor (vjepa2:src/models/predictor.py; reference C.1, C.6).

    Width 384, depth 12, **12 heads** (``pred_num_heads: 12``, head_dim 32 -> 10 RoPE channels
    per axis), 3-D RoPE attention, no ``predictor_pos_embed``, **10** zero-initialised mask
    tokens as in the released checkpoints (the train configs would build 2 x len(dataset_fpcs);
    vjepa2 issue #124). The depth rescale is kept (reference part D item 8). RoPE positions are
    decomposed on the predictor's own grid (its ``img_size`` / ``patch_size``), as the official
    blocks fall back to ``grid_size``.

    Official quirk: ``PredictorMultiSeqWrapper`` passes ``mask_index`` = index of the clip-length
    group, not of the mask configuration, so with one clip length both mask configurations use
    ``mask_tokens[0]`` (reference C.1).

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
        super().__init__(img_size, num_frames, patch_size, tubelet_size, embed_dim, predictor_embed_dim,
                         num_mask_tokens, zero_init_mask_tokens, init_std)
        self.sort_tokens = sort_tokens
        self.predictor_blocks = nn.ModuleList(
            RoPEBlock(predictor_embed_dim, num_heads, mlp_ratio, qkv_bias, 0.0, rope_fix_tiling)
            for _ in range(depth)
        )
        self.predictor_norm = LayerNorm(predictor_embed_dim)
        self.predictor_proj = nn.Linear(predictor_embed_dim, embed_dim, bias=True)
        self._finish_init(rescale_init)

    def forward(self, x: torch.Tensor, masks_ctx, masks_tgt, mask_index: int = 0) -> torch.Tensor:
        masks_ctx, masks_tgt = _as_list(masks_ctx), _as_list(masks_tgt)
        nc, nt = len(masks_ctx), len(masks_tgt)
        B = x.shape[0] // nc
        x = self.predictor_embed(x)  # no additive position: RoPE only
        n_ctx = x.shape[1]
        ids_ctx = torch.cat(masks_ctx, dim=0).repeat(nt, 1)  # [nt*nc*B, Kc]
        ids_tgt = repeat_interleave_batch(torch.cat(masks_tgt, dim=0), B, nc)  # [nt*nc*B, Kt]
        queries = self.mask_token(mask_index).to(x.dtype).expand(ids_tgt.shape[0], ids_tgt.shape[1], -1)
        x = torch.cat([x.repeat(nt, 1, 1), queries], dim=1)
        ids = torch.cat([ids_ctx, ids_tgt], dim=1)
        if self.sort_tokens:
            order = torch.argsort(ids, dim=1)
            ids = torch.gather(ids, 1, order)
            x = torch.gather(x, 1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        tables = RoPETables(ids, self.grid[1:], self.predictor_blocks[0].attn.fix_tiling)  # shared by all blocks
        for blk in self.predictor_blocks:
            x = blk(x, tables, self.grid[1:])
        x = self.predictor_norm(x)
        if self.sort_tokens:
            # The targets sit at sorted slots inverse[:, n_ctx:]; gather them back in mask order.
            inverse = torch.argsort(order, dim=1)[:, n_ctx:]
            x = torch.gather(x, 1, inverse.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        else:
            x = x[:, n_ctx:]
        return self.predictor_proj(x)


def _encoder_width(encoder: str | int) -> int:
    if isinstance(encoder, int):
        return encoder
    if encoder not in VIDEO_VIT_SIZES:
        raise KeyError(f"unknown ViT size {encoder!r}; valid sizes: {', '.join(VIDEO_VIT_SIZES)}")
    return VIDEO_VIT_SIZES[encoder][0]


def vjepa_predictor(encoder: str | int = "vit_large", **kwargs) -> VJEPAPredictor:
    """V-JEPA predictor for an encoder size (name or width): heads = encoder heads (reference B.1,
    jepa:configs/pretrain/vitl16.yaml ``pred_depth 12``, ``pred_embed_dim 384``)."""
    opts = dict(embed_dim=_encoder_width(encoder))
    if isinstance(encoder, str):
        opts["num_heads"] = VIDEO_VIT_SIZES[encoder][2]
    opts.update(kwargs)
    return VJEPAPredictor(**opts)


def vjepa2_predictor(encoder: str | int = "vit_large", **kwargs) -> VJEPA2Predictor:
    """V-JEPA 2 predictor for an encoder size: 384 wide, 12 deep, 12 heads, 10 mask tokens
    (hubconf / vjepa2:src/hub/backbones.py; reference C.1, C.6)."""
    opts = dict(embed_dim=_encoder_width(encoder))
    opts.update(kwargs)
    return VJEPA2Predictor(**opts)
