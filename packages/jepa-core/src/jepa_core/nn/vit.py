"""The 2-D Vision Transformer encoder and the I-JEPA predictor, as configurations of
:class:`jepa_core.nn.encoder.MaskedEncoder` and :class:`jepa_core.nn.predictor.MaskTokenPredictor`.

Parameter names and shapes follow the official I-JEPA code (ijepa:src/models/vision_transformer.py)
so that official state dicts load without renaming: ``patch_embed.proj``, ``pos_embed``,
``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``; predictor
``predictor_embed``, ``mask_token``, ``predictor_pos_embed``, ``predictor_blocks.{i}.*``,
``predictor_norm``, ``predictor_proj``. The layers are re-exported from
:mod:`jepa_core.nn.layers` for existing imports.
"""

from __future__ import annotations

import math

from jepa_core.nn.encoder import MaskedEncoder
from jepa_core.nn.layers import (  # noqa: F401  (re-exported)
    Attention,
    Block,
    DropPath,
    LayerNorm,
    Mlp,
    Segments,
    attend,
    build_blocks,
    init_transformer_,
    repeat_interleave_batch,
    rescale_blocks_,
    trunc_normal_init_,
)
from jepa_core.nn.pos_embed import Order2D
from jepa_core.nn.positions import SinCos2D
from jepa_core.nn.predictor import MaskTokenPredictor
from jepa_core.nn.tokenizers import PatchEmbed


class VisionTransformer(MaskedEncoder):
    """ViT encoder without a class token, with a fixed 2-D sin-cos table added before masking.

    ``forward(images, masks)``: ``masks`` is None (all tokens), a LongTensor ``[B, K]`` of kept
    token indices, or a list of them; with a list, the kept tokens of each mask are stacked
    along the batch (mask-major), as the official ``apply_masks`` does. Returns ``[B', K, D]``
    after the final LayerNorm. Images of another size run with the table recomputed for their
    grid (the official I-JEPA ``interpolate_pos_encoding`` assumes a class token and breaks at
    any other resolution; recomputing the sin-cos table is exact).
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        pos_embed_order: Order2D = "wh",
        rescale_init: bool = False,
        init_std: float = 0.02,
    ):
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        grid = img_size // patch_size
        super().__init__(
            PatchEmbed(patch_size, in_chans, embed_dim), SinCos2D(pos_embed_order), (grid, grid),
            embed_dim, depth, num_heads, mlp_ratio, qkv_bias, drop_path_rate, rescale_init, init_std,
        )
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.grid = grid
        self.pos_embed_order = pos_embed_order


class VisionTransformerPredictor(MaskTokenPredictor):
    """The I-JEPA predictor (ijepa:src/models/vision_transformer.py ``VisionTransformerPredictor``).

    Narrow ViT over [context tokens + one mask token per target position]: one trunc-normal
    ``mask_token`` (not zeros), the 2-D sin-cos ``predictor_pos_embed`` on the square patch grid.
    Each (context mask, target mask) pair is its own batch row, target-major, so the output lines
    up with ``repeat_interleave_batch(apply_masks(targets, masks_pred), B, len(masks_ctx))``.
    Full bidirectional attention, no attention mask, as in the official code.
    """

    def __init__(
        self,
        num_patches: int,
        embed_dim: int = 768,
        predictor_embed_dim: int = 384,
        depth: int = 6,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        pos_embed_order: Order2D = "wh",
        init_std: float = 0.02,
    ):
        grid = math.isqrt(num_patches)
        if grid * grid != num_patches:
            raise ValueError(f"num_patches {num_patches} is not a square grid")
        super().__init__(
            SinCos2D(pos_embed_order), (grid, grid), embed_dim, predictor_embed_dim, depth, num_heads,
            mlp_ratio, qkv_bias, drop_path_rate, num_mask_tokens=None, zero_init_mask_tokens=False,
            rescale_init=False, init_std=init_std,
        )


# name: (embed_dim, depth, num_heads, mlp_ratio), ijepa:src/models/vision_transformer.py
VIT_SIZES: dict[str, tuple[int, int, int, float]] = {
    "vit_tiny": (192, 12, 3, 4.0),
    "vit_small": (384, 12, 6, 4.0),
    "vit_base": (768, 12, 12, 4.0),
    "vit_large": (1024, 24, 16, 4.0),
    "vit_huge": (1280, 32, 16, 4.0),
    "vit_giant": (1408, 40, 16, 48 / 11),  # I-JEPA / V-JEPA ViT-g: 16 heads (head_dim 88)
}


def vit(name: str, **kwargs) -> VisionTransformer:
    """Build an official-size encoder by name (``vit_tiny`` .. ``vit_giant``)."""
    if name not in VIT_SIZES:
        raise KeyError(f"unknown ViT size {name!r}; valid sizes: {', '.join(VIT_SIZES)}")
    dim, depth, heads, ratio = VIT_SIZES[name]
    return VisionTransformer(embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=ratio, **kwargs)
