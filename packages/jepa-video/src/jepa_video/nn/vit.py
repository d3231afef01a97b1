"""Video Vision Transformer encoders of V-JEPA and V-JEPA 2.

Parameter names follow the official code so official state dicts load after stripping the
``module.backbone.`` prefix (reference B.6, C.6): ``patch_embed.proj`` (Conv3d),
``pos_embed`` (V-JEPA only), ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
``norm``.

- V-JEPA (jepa:src/models/vision_transformer.py; reference B.1): fixed 3-D sin-cos table with
  ``uniform_power=True`` (every released config), stored as a frozen parameter, added after the
  patch embedding and before masking. The constructor's depth rescale is undone by
  ``init_video_model`` (jepa:app/vjepa/utils.py), so ``rescale_init=False`` is its default.
- V-JEPA 2 (vjepa2:src/models/vision_transformer.py; reference C.1): ``use_rope=True``, no
  additive table at all (``pos_embed`` is None), 3-D RoPE inside every attention, positions from
  the kept token indices, the patch grid from the actual input (``handle_nonsquare_inputs``);
  the depth rescale is kept (reference part D item 8).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jepa_core.masks.ops import apply_masks
from jepa_core.nn.pos_embed import sincos_3d
from jepa_core.nn.vit import (
    VIT_SIZES,
    Block,
    LayerNorm,
    Segments,
    rescale_blocks_,
    trunc_normal_init_,
)
from torch import nn

from jepa_video.nn.rope import RoPEBlock, RoPETables


class PatchEmbed3D(nn.Module):
    """Video to tubelet tokens: ``proj`` = Conv3d with kernel = stride = (tubelet, p, p), flattened
    in (t, h, w) order with t slowest (jepa:src/models/utils/patch_embed.py; reference B.1)."""

    def __init__(self, patch_size: int = 16, tubelet_size: int = 2, in_chans: int = 3, embed_dim: int = 768):
        super().__init__()
        self.patch_size, self.tubelet_size = patch_size, tubelet_size
        k = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Token-major and contiguous once here: the transposed view would otherwise carry its
        # layout through every residual add, and each LayerNorm and reshape would copy it.
        return self.proj(x).flatten(2).transpose(1, 2).contiguous()


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def block_diagonal_mask(lengths: Sequence[int], device=None) -> torch.Tensor:
    """Boolean ``[L, L]`` attention mask (True = may attend) that keeps segments apart."""
    seg = torch.repeat_interleave(torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device))
    return seg[:, None] == seg[None, :]


class VideoVisionTransformer(nn.Module):
    """Video ViT without a class token; input ``[B, C, T, H, W]``.

    ``forward(videos, masks)``: ``masks`` is None (all tokens), a LongTensor ``[B, K]`` of kept
    token indices on the ``(T', H', W')`` grid, or a list of them stacked on the batch
    (mask-major, equal K), exactly like :class:`jepa_core.nn.vit.VisionTransformer`.
    :meth:`forward_multi` runs several mask configurations (different K) in one pass.

    Defaults are V-JEPA's (``uniform_power=True``, no rescale); see :func:`vjepa_vit` and
    :func:`vjepa2_vit` for the two official recipes.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        num_frames: int = 16,
        patch_size: int = 16,
        tubelet_size: int = 2,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        uniform_power: bool = True,
        use_rope: bool = False,
        rope_fix_tiling: bool = False,
        rescale_init: bool = False,
        init_std: float = 0.02,
    ):
        super().__init__()
        self.img_size = _pair(img_size)
        if self.img_size[0] % patch_size or self.img_size[1] % patch_size or num_frames % tubelet_size:
            raise ValueError(
                f"input {num_frames}x{self.img_size} is not a multiple of the tubelet {tubelet_size}x{patch_size}"
            )
        self.num_frames, self.patch_size, self.tubelet_size, self.in_chans = num_frames, patch_size, tubelet_size, in_chans
        self.embed_dim, self.num_heads, self.depth = embed_dim, num_heads, depth
        self.grid = (num_frames // tubelet_size, self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        self.num_patches = self.grid[0] * self.grid[1] * self.grid[2]
        self.uniform_power, self.use_rope = uniform_power, use_rope
        self.patch_embed = PatchEmbed3D(patch_size, tubelet_size, in_chans, embed_dim)
        if use_rope:
            self.pos_embed = None  # V-JEPA 2: RoPE only, nothing additive (reference C.1)
        else:
            # A frozen Parameter (not a buffer): saved like the official checkpoints save it.
            table = sincos_3d(embed_dim, *self.grid, uniform_power=uniform_power)
            self.pos_embed = nn.Parameter(table.unsqueeze(0), requires_grad=False)
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        if use_rope:
            blocks = (RoPEBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, r, rope_fix_tiling) for r in rates)
        else:
            blocks = (Block(embed_dim, num_heads, mlp_ratio, qkv_bias, r) for r in rates)
        self.blocks = nn.ModuleList(blocks)
        self.norm = LayerNorm(embed_dim)
        trunc_normal_init_(self, init_std)
        if rescale_init:
            rescale_blocks_(self.blocks)

    # -- embedding -------------------------------------------------------------------------

    def token_grid(self, x: torch.Tensor) -> tuple[int, int, int]:
        if x.ndim != 5 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected videos [B, {self.in_chans}, T, H, W], got {tuple(x.shape)}")
        T, H, W = x.shape[-3:]
        return T // self.tubelet_size, H // self.patch_size, W // self.patch_size

    def position_table(self, frames: int, grid_h: int, grid_w: int) -> torch.Tensor:
        """The sin-cos table for another token grid, recomputed exactly.

        The official V-JEPA ``interpolate_pos_encoding`` resamples the stored table trilinearly
        when the input size differs (reference B.1); V-JEPA 2 without RoPE truncates it when only
        the clip is shorter. Recomputing equals truncation in that case (t is the slowest axis)
        but differs from trilinear resampling at other spatial sizes.
        """
        if self.pos_embed is None:
            raise RuntimeError("this encoder uses RoPE and has no additive position table")
        if (frames, grid_h, grid_w) == self.grid:
            return self.pos_embed
        table = sincos_3d(self.embed_dim, frames, grid_h, grid_w, uniform_power=self.uniform_power)
        return table.to(self.pos_embed).unsqueeze(0)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Tubelet tokens ``[B, N, D]`` plus the position table (V-JEPA), before any masking."""
        grid = self.token_grid(x)
        tokens = self.patch_embed(x)
        if self.pos_embed is not None:
            tokens = tokens + self.position_table(*grid)
        return tokens

    # -- transformer -----------------------------------------------------------------------

    def _run_blocks(self, x, ids, grid_hw, attn_mask=None, return_layers=None):
        outs = []
        if self.use_rope:  # one set of RoPE tables for all blocks
            ids = RoPETables(ids, grid_hw, self.blocks[0].attn.fix_tiling)
        for i, blk in enumerate(self.blocks):
            x = blk(x, ids, grid_hw, attn_mask) if self.use_rope else blk(x, attn_mask)
            if return_layers is not None and i in return_layers:
                outs.append(self.norm(x))
        if return_layers is not None:
            return outs
        return self.norm(x)

    def forward(
        self,
        x: torch.Tensor,
        masks: torch.Tensor | list[torch.Tensor] | None = None,
        return_layers: Sequence[int] | None = None,
    ) -> torch.Tensor | list[torch.Tensor]:
        grid = self.token_grid(x)
        x = self.embed(x)
        if masks is None:
            ids = torch.arange(x.shape[1], device=x.device)
        else:
            masks = [masks] if isinstance(masks, torch.Tensor) else list(masks)
            x = apply_masks(x, masks)
            ids = torch.cat(masks, dim=0)  # RoPE positions = kept indices (vjepa2 encoder)
        return self._run_blocks(x, ids, grid[1:], None, return_layers)

    def forward_multi(
        self, x: torch.Tensor, masks: Sequence[torch.Tensor], packed: bool = True
    ) -> list[torch.Tensor]:
        """Encode the same clips under several mask configurations: one ``[B, K_i, D]`` per mask.

        The official ``MultiMaskWrapper`` runs the whole encoder once per mask configuration
        (reference B.1, B.7). Here the patch embedding is always shared, and with
        ``packed=True`` the kept tokens of all configurations are concatenated along the token
        axis of each sample, so one pass serves all configurations with no padding: every
        per-token op (LayerNorm, qkv, proj, MLP) runs once over all of them, and attention runs
        per configuration (:class:`jepa_core.nn.vit.Segments`; a block-diagonal mask would
        spend the FLOPs of the masked-out pairs and rule out the flash kernels). The result
        equals separate passes (up to float summation order); ``packed=False`` runs the blocks
        once per mask.
        """
        grid = self.token_grid(x)
        tokens = self.embed(x)
        masks = list(masks)
        if not packed or len(masks) == 1:
            return [self._run_blocks(apply_masks(tokens, m), m, grid[1:]) for m in masks]
        lengths = [m.shape[1] for m in masks]
        seq = torch.cat([apply_masks(tokens, m) for m in masks], dim=1)
        del tokens  # keep only the gathered tokens alive (peak memory)
        ids = torch.cat(masks, dim=1)
        out = self._run_blocks(seq, ids, grid[1:], Segments(lengths))
        return list(out.split(lengths, dim=1))


# name: (embed_dim, depth, num_heads, mlp_ratio). V-JEPA sizes equal I-JEPA's
# (jepa:src/models/vision_transformer.py, reference B.1); V-JEPA 2 adds the released ViT-g,
# ``vit_giant_xformers`` with 22 heads (vjepa2:src/models/vision_transformer.py, reference C.1).
VIDEO_VIT_SIZES: dict[str, tuple[int, int, int, float]] = {
    **VIT_SIZES,
    "vit_giant_xformers": (1408, 40, 22, 48 / 11),
}


def _sized(name: str, **kwargs) -> VideoVisionTransformer:
    if name not in VIDEO_VIT_SIZES:
        raise KeyError(f"unknown ViT size {name!r}; valid sizes: {', '.join(VIDEO_VIT_SIZES)}")
    dim, depth, heads, ratio = VIDEO_VIT_SIZES[name]
    return VideoVisionTransformer(embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=ratio, **kwargs)


def vjepa_vit(name: str = "vit_large", **kwargs) -> VideoVisionTransformer:
    """V-JEPA encoder: 16 frames at 224 px, tubelet 2, patch 16, 3-D sin-cos table with
    ``uniform_power=True``, no depth rescale (jepa:configs/pretrain/vitl16.yaml; reference B.1)."""
    opts = dict(img_size=224, num_frames=16, patch_size=16, tubelet_size=2, uniform_power=True,
                use_rope=False, rescale_init=False)
    opts.update(kwargs)
    return _sized(name, **opts)


def vjepa2_vit(name: str = "vit_large", **kwargs) -> VideoVisionTransformer:
    """V-JEPA 2 encoder: 256 px, tubelet 2, patch 16, 3-D RoPE (official tiled frequencies),
    no ``pos_embed``, depth rescale kept (vjepa2:configs/train/vitl16/pretrain-256px-16f.yaml;
    reference C.1). The released ViT-g is ``vit_giant_xformers`` (22 heads)."""
    opts = dict(img_size=256, num_frames=16, patch_size=16, tubelet_size=2, use_rope=True,
                rope_fix_tiling=False, rescale_init=True)
    opts.update(kwargs)
    return _sized(name, **opts)
