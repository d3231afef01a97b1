"""Mask samplers and collators: which tokens the context sees and which the predictor targets.

:class:`MaskCollator` is the one ``collate_fn`` (step stamps, corrupt-sample skipping, seeding,
batch transform); a method plugs in a :class:`MaskSampler` such as :class:`MultiBlockMaskSampler`.
"""

from jepa_core.masks.collator import MaskCollator, MaskSampler, StepSeeds, mix_seed
from jepa_core.masks.multiblock import (
    MultiBlockMaskCollator,
    MultiBlockMaskConfig,
    MultiBlockMaskGenerator,
    MultiBlockMaskSampler,
)
from jepa_core.masks.ops import apply_masks

__all__ = [
    "MaskCollator",
    "MaskSampler",
    "MultiBlockMaskCollator",
    "MultiBlockMaskConfig",
    "MultiBlockMaskGenerator",
    "MultiBlockMaskSampler",
    "StepSeeds",
    "apply_masks",
    "mix_seed",
]
