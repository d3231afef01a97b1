"""Video Vision Transformer encoders of V-JEPA and V-JEPA 2, as configurations of
:class:`jepa_core.nn.encoder.MaskedEncoder`: tubelet tokens (:class:`PatchEmbed3D`) with a 3-D
sin-cos table (:class:`SinCos3D`) or 3-D RoPE (:class:`jepa_video.nn.rope.RoPE3D`).

Parameter names follow the official code so official state dicts load after stripping the
``module.backbone.`` prefix (jepa:src/models/vision_transformer.py,
vjepa2:src/models/vision_transformer.py): ``patch_embed.proj`` (Conv3d), ``pos_embed`` (V-JEPA
only), ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``.

- V-JEPA (jepa:src/models/vision_transformer.py): fixed 3-D sin-cos table with
  ``uniform_power=True`` (every released config), stored as a frozen parameter, added after the
  patch embedding and before masking. The constructor's depth rescale is undone by
  ``init_video_model`` (jepa:app/vjepa/utils.py), so ``rescale_init=False`` is its default.
- V-JEPA 2 (vjepa2:src/models/vision_transformer.py): ``use_rope=True``, no additive table at
  all (``pos_embed`` is None), 3-D RoPE inside every attention, positions from the kept token
  indices, the patch grid from the actual input (``handle_nonsquare_inputs``); the depth
  rescale is kept (vjepa2:app/vjepa/utils.py ``init_video_model`` does not re-initialise).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from jepa_core.nn.encoder import MaskedEncoder
from jepa_core.nn.pos_embed import sincos_3d
from jepa_core.nn.positions import FixedTable
from jepa_core.nn.vit import VIT_SIZES
from torch import nn

from jepa_video.nn.rope import RoPE3D


class PatchEmbed3D(nn.Module):
    """Video to tubelet tokens: ``proj`` = Conv3d with kernel = stride = (tubelet, p, p), flattened
    in (t, h, w) order with t slowest (jepa:src/models/utils/patch_embed.py ``PatchEmbed3D``)."""

    def __init__(self, patch_size: int = 16, tubelet_size: int = 2, in_chans: int = 3, embed_dim: int = 768):
        super().__init__()
        self.patch_size, self.tubelet_size = patch_size, tubelet_size
        self.in_chans, self.embed_dim = in_chans, embed_dim
        k = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=k, stride=k)

    def grid(self, x: torch.Tensor) -> tuple[int, int, int]:
        """``(T', H', W')`` tubelets of videos ``x [B, C, T, H, W]`` (remainders dropped, as by the conv)."""
        if x.ndim != 5 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected videos [B, {self.in_chans}, T, H, W], got {tuple(x.shape)}")
        T, H, W = x.shape[-3:]
        return T // self.tubelet_size, H // self.patch_size, W // self.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Token-major and contiguous once here: the transposed view would otherwise carry its
        # layout through every residual add, and each LayerNorm and reshape would copy it.
        return rearrange(self.proj(x), "b d t h w -> b (t h w) d").contiguous()


class SinCos3D(FixedTable):
    """The fixed 3-D sin-cos table over a ``(T', H', W')`` grid, channels ``[time | height | width]``
    (jepa:src/models/utils/pos_embs.py ``get_3d_sincos_pos_embed``; ``uniform_power`` as there)."""

    def __init__(self, uniform_power: bool = True):
        self.uniform_power = uniform_power

    def table(self, grid: tuple[int, ...], dim: int) -> torch.Tensor:
        if len(grid) != 3:
            raise ValueError(f"a 3-D sin-cos table needs a (T', H', W') token grid, got {grid}")
        return sincos_3d(dim, *grid, uniform_power=self.uniform_power)


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def block_diagonal_mask(lengths: Sequence[int], device=None) -> torch.Tensor:
    """Boolean ``[L, L]`` attention mask (True = may attend) that keeps segments apart."""
    seg = torch.repeat_interleave(torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device))
    return seg[:, None] == seg[None, :]


class VideoVisionTransformer(MaskedEncoder):
    """Video ViT without a class token; input ``[B, C, T, H, W]``.

    ``forward(videos, masks)``: ``masks`` is None (all tokens), a LongTensor ``[B, K]`` of kept
    token indices on the ``(T', H', W')`` grid, or a list of them stacked on the batch
    (mask-major, equal K), exactly like :class:`jepa_core.nn.vit.VisionTransformer`.
    :meth:`forward_multi` runs several mask configurations (different K) in one pass.

    Defaults are V-JEPA's (``uniform_power=True``, no rescale); see :func:`vjepa_vit` and
    :func:`vjepa2_vit` for the two official recipes. With the sin-cos table, clips of another
    size run with the table recomputed for their grid: the official V-JEPA
    ``interpolate_pos_encoding`` resamples the stored table trilinearly instead, and V-JEPA 2
    without RoPE truncates it when only the clip is shorter; recomputing equals truncation in
    that case (t is the slowest axis) but differs from trilinear resampling at other spatial
    sizes.
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
        img = _pair(img_size)
        if img[0] % patch_size or img[1] % patch_size or num_frames % tubelet_size:
            raise ValueError(
                f"input {num_frames}x{img} is not a multiple of the tubelet {tubelet_size}x{patch_size}"
            )
        grid = (num_frames // tubelet_size, img[0] // patch_size, img[1] // patch_size)
        positions = RoPE3D(rope_fix_tiling) if use_rope else SinCos3D(uniform_power)
        super().__init__(
            PatchEmbed3D(patch_size, tubelet_size, in_chans, embed_dim), positions, grid, embed_dim, depth,
            num_heads, mlp_ratio, qkv_bias, drop_path_rate, rescale_init, init_std,
        )
        self.img_size = img
        self.num_frames, self.patch_size, self.tubelet_size, self.in_chans = num_frames, patch_size, tubelet_size, in_chans
        self.grid = grid
        self.uniform_power, self.use_rope = uniform_power, use_rope

    def position_table(self, *grid: int) -> torch.Tensor:
        """The sin-cos table ``[1, T' H' W', D]`` for a token grid ``(frames, grid_h, grid_w)``
        (the stored one for the nominal grid, else recomputed exactly; see the class docstring)."""
        if self.pos_embed is None:
            raise RuntimeError("this encoder uses RoPE and has no additive position table")
        return super().position_table(*grid)


# name: (embed_dim, depth, num_heads, mlp_ratio). V-JEPA sizes equal I-JEPA's
# (jepa:src/models/vision_transformer.py); V-JEPA 2 adds the released ViT-g,
# ``vit_giant_xformers`` with 22 heads (vjepa2:src/models/vision_transformer.py).
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
    ``uniform_power=True``, no depth rescale (jepa:configs/pretrain/vitl16.yaml)."""
    opts = dict(img_size=224, num_frames=16, patch_size=16, tubelet_size=2, uniform_power=True,
                use_rope=False, rescale_init=False)
    opts.update(kwargs)
    return _sized(name, **opts)


def vjepa2_vit(name: str = "vit_large", **kwargs) -> VideoVisionTransformer:
    """V-JEPA 2 encoder: 256 px, tubelet 2, patch 16, 3-D RoPE (official tiled frequencies),
    no ``pos_embed``, depth rescale kept (vjepa2:configs/train/vitl16/pretrain-256px-16f.yaml). The released
    ViT-g is ``vit_giant_xformers`` (22 heads)."""
    opts = dict(img_size=256, num_frames=16, patch_size=16, tubelet_size=2, use_rope=True,
                rope_fix_tiling=False, rescale_init=True)
    opts.update(kwargs)
    return _sized(name, **opts)
