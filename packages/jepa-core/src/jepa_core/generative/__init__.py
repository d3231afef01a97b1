"""Reusable generative pieces for next-set-of-tokens methods (D-JEPA, MAR-style).

- :mod:`.heads`: :class:`DenoisingMLP`, the per-token AdaLN residual MLP;
- :mod:`.diffusion`: :class:`DiffusionLoss`, cosine Gaussian diffusion with learned variance,
  ``batch_mul`` repetition and a respaced ancestral sampler with temperature and CFG;
- :mod:`.flow_matching`: :class:`FlowMatchingLoss`, velocity flow matching with Euler / Heun;
- :mod:`.sampler`: the cosine next-set-of-tokens schedule, the linear CFG schedule, the generic
  :func:`generate_tokens` loop and the truncated-normal mask-ratio sampler.

Nothing here knows about images: tokens are rows of size ``token_dim`` and conditions rows of
size ``cond_dim``, so other modalities can use the same parts.
"""

from .diffusion import DiffusionLoss, GaussianDiffusion, cosine_betas, spaced_timesteps
from .flow_matching import FlowMatchingLoss, shift_time
from .heads import DenoisingMLP, timestep_embedding
from .sampler import (
    TruncatedNormalMaskRatio,
    cosine_schedule_counts,
    cosine_unknown_after,
    generate_tokens,
    linear_cfg,
    mask_by_order,
    mask_ratio_sampler,
    random_orders,
)

__all__ = [
    "DenoisingMLP",
    "DiffusionLoss",
    "FlowMatchingLoss",
    "GaussianDiffusion",
    "TruncatedNormalMaskRatio",
    "cosine_betas",
    "cosine_schedule_counts",
    "cosine_unknown_after",
    "generate_tokens",
    "linear_cfg",
    "mask_by_order",
    "mask_ratio_sampler",
    "random_orders",
    "shift_time",
    "spaced_timesteps",
    "timestep_embedding",
]
