"""Neural-network building blocks shared by every modality: the interfaces of the parts
(:mod:`jepa_core.nn.interfaces`), the generic masked encoder and mask-token predictor, the ViT
layers, the 2-D encoder and the I-JEPA predictor, sin-cos position tables and activation
checkpointing."""

from jepa_core.nn.checkpointing import enable_activation_checkpointing
from jepa_core.nn.encoder import MaskedEncoder
from jepa_core.nn.interfaces import (
    BlockwiseEncoder,
    Encoder,
    PositionEncoding,
    Predictor,
    Tokenizer,
)
from jepa_core.nn.layers import build_blocks, init_transformer_
from jepa_core.nn.pos_embed import sincos_1d, sincos_2d, sincos_3d
from jepa_core.nn.positions import FixedTable, SinCos1D, SinCos2D
from jepa_core.nn.predictor import MaskTokenPredictor
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
    "VIT_SIZES", "Attention", "Block", "BlockwiseEncoder", "Encoder", "FixedTable", "MaskTokenPredictor",
    "MaskedEncoder", "Mlp", "PatchEmbed", "PositionEncoding", "Predictor", "SinCos1D", "SinCos2D", "Tokenizer",
    "VisionTransformer", "VisionTransformerPredictor", "build_blocks", "enable_activation_checkpointing",
    "init_transformer_", "repeat_interleave_batch", "sincos_1d", "sincos_2d", "sincos_3d", "vit",
]
