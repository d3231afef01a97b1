"""Neural-network building blocks."""

from jepa_core.nn.pos_embed import sincos_1d, sincos_2d, sincos_3d
from jepa_core.nn.vit import (
    VIT_SIZES,
    Attention,
    Block,
    Mlp,
    PatchEmbed,
    VisionTransformer,
    VisionTransformerPredictor,
    repeat_interleave_batch,
    vit,
)

__all__ = [
    "VIT_SIZES", "Attention", "Block", "Mlp", "PatchEmbed", "VisionTransformer",
    "VisionTransformerPredictor", "repeat_interleave_batch", "sincos_1d", "sincos_2d", "sincos_3d", "vit",
]
