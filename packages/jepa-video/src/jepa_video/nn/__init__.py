"""Video models of V-JEPA and V-JEPA 2: the tubelet ViT, the two predictors, 3-D RoPE, and an
image encoder applied frame by frame."""

from jepa_video.nn.frames import FrameByFrame
from jepa_video.nn.predictor import (
    VJEPA2Predictor,
    VJEPAPredictor,
    vjepa2_predictor,
    vjepa_predictor,
)
from jepa_video.nn.rope import (
    RoPEAttention,
    RoPEBlock,
    apply_rope_3d,
    rope_axis_dim,
    token_coordinates,
)
from jepa_video.nn.vit import (
    VIDEO_VIT_SIZES,
    PatchEmbed3D,
    VideoVisionTransformer,
    vjepa2_vit,
    vjepa_vit,
)

__all__ = [
    "VIDEO_VIT_SIZES", "FrameByFrame", "PatchEmbed3D", "RoPEAttention", "RoPEBlock", "VJEPA2Predictor",
    "VJEPAPredictor", "VideoVisionTransformer", "apply_rope_3d", "rope_axis_dim", "token_coordinates",
    "vjepa2_predictor", "vjepa2_vit", "vjepa_predictor", "vjepa_vit",
]
