"""Mask samplers and collators: which tokens the context sees and which the predictor targets."""

from jepa_core.masks.multiblock import (
    MultiBlockMaskCollator,
    MultiBlockMaskConfig,
    MultiBlockMaskGenerator,
)
from jepa_core.masks.ops import apply_masks

__all__ = ["MultiBlockMaskCollator", "MultiBlockMaskConfig", "MultiBlockMaskGenerator", "apply_masks"]
