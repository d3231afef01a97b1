"""Neural-network building blocks shared by every modality: the ViT parts, the 2-D encoder and
the I-JEPA predictor, sin-cos position tables and activation checkpointing."""

from jepa_core.nn.checkpointing import enable_activation_checkpointing
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
    "enable_activation_checkpointing",
]
