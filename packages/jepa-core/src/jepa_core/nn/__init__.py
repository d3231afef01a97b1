"""Neural-network building blocks."""

from jepa_core.nn.checkpointing import enable_activation_checkpointing
from jepa_core.nn.frames import FrameByFrame
from jepa_core.nn.pos_embed import sincos_1d, sincos_2d, sincos_3d
from jepa_core.nn.rope import (
    RoPEAttention,
    RoPEBlock,
    apply_rope_3d,
    rope_axis_dim,
    token_coordinates,
)
from jepa_core.nn.video import (
    VIDEO_VIT_SIZES,
    PatchEmbed3D,
    VideoVisionTransformer,
    vjepa2_vit,
    vjepa_vit,
)
from jepa_core.nn.video_predictor import (
    VJEPA2Predictor,
    VJEPAPredictor,
    vjepa2_predictor,
    vjepa_predictor,
)
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
    "VIDEO_VIT_SIZES", "FrameByFrame", "PatchEmbed3D", "RoPEAttention", "RoPEBlock", "VJEPA2Predictor", "VJEPAPredictor",
    "VideoVisionTransformer", "apply_rope_3d", "rope_axis_dim", "token_coordinates", "vjepa2_predictor",
    "vjepa2_vit", "vjepa_predictor", "vjepa_vit", "enable_activation_checkpointing",
]
