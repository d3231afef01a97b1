"""MAMP's motion-aware masking (Mao et al., ICCV 2023; ``MAMP:model_mamp/transformer.py``
``motion_aware_random_masking``), split into its random draw and its data-dependent part so
that the draw comes from the step-seeded generators of :class:`jepa_core.masks.MaskCollator`.

1. Motion of a token (``t_patch`` frames x 1 joint): the mean absolute difference between its
   values and those of the previous temporal token of the same joint; the first temporal token
   copies the second's.
2. Divided by ``max over the sample's tokens x tau``, then a softmax over the tokens.
3. Score = log-probability + Gumbel noise; the ``round(N * (1 - ratio))`` lowest scores are kept,
   so high-motion tokens are masked more often. ``tau <= 0``: uniform random masking (MAMP's
   ``random_masking``).

:class:`SJEPASampler` draws, for every person-sample of the step's global batch, the Gumbel
noise and the parameters of the Multi-Axis Projection view (:mod:`jepa_skeleton.views`); the
method turns them into masks and views on its device (:func:`motion_aware_masks`,
:func:`jepa_skeleton.views.project`). So masks and views depend on ``(seed, step, slot)`` only:
the same with any number of loader workers or processes, and after a resume.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from jepa_skeleton.nn import patchify, persons_as_samples
from jepa_skeleton.views import draw_views

__all__ = ["MASK_TAG", "VIEW_TAG", "SJEPASampler", "gumbel_noise", "motion_aware_masks", "num_masked",
           "token_motion"]

MASK_TAG = 0x6D61736B  # "mask": the Gumbel noise's generator
VIEW_TAG = 0x76696577  # "view": the projection's generator
_EPS = 1e-10  # MAMP's guard in the Gumbel transform and the max normalisation


def num_masked(num_tokens: int, ratio: float) -> int:
    """Masked tokens per sample: ``round(num_tokens * ratio)`` (MAMP writes ``int(N * (1 - ratio))``
    kept, which float rounding can make one less: ``int(750 * (1 - 0.9)) = 74``)."""
    return int(round(num_tokens * ratio))


def gumbel_noise(shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log(u))`` with MAMP's guards, from ``generator``."""
    u = torch.rand(*shape, generator=generator)
    return -torch.log(-torch.log(u + _EPS) + _EPS)


def token_motion(x: torch.Tensor, t_patch: int) -> torch.Tensor:
    """Motion of every token of person-samples ``x [B', C, T, V]``: ``[B', T' * V]`` (time-major),
    the mean over a token's ``t_patch x C`` values of ``|token(t) - token(t - 1)|``; the first
    temporal token takes the second's value."""
    p = patchify(x.float(), t_patch)  # [B', T', V, t_patch * C]
    motion = torch.zeros_like(p)
    motion[:, 1:] = (p[:, 1:] - p[:, :-1]).abs()
    if p.shape[1] > 1:
        motion[:, 0] = motion[:, 1]
    return motion.mean(-1).flatten(1)


def motion_aware_masks(x: torch.Tensor, gumbel: torch.Tensor, ratio: float, tau: float,
                       t_patch: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """``(visible [B', K], masked [B', N - K])`` token indices, each sorted, for person-samples
    ``x [B', C, T, V]`` (or ``[B, C, T, V, M]``) and their Gumbel noise ``[B', N]`` (or ``[B, M, N]``)."""
    if x.ndim == 5:
        x = persons_as_samples(x)
    gumbel = gumbel.reshape(x.shape[0], -1).to(x.device, torch.float32)
    n = gumbel.shape[1]
    if tau > 0:
        motion = token_motion(x, t_patch)
        if motion.shape[1] != n:
            raise ValueError(f"{motion.shape[1]} tokens but Gumbel noise for {n}")
        logits = motion / (motion.amax(dim=1, keepdim=True) * tau + _EPS)
        score = torch.log_softmax(logits, dim=1) + gumbel
    else:
        score = gumbel
    order = score.argsort(dim=1)  # ascending: the first ones are kept
    keep = n - num_masked(n, ratio)
    return order[:, :keep].sort(dim=1).values, order[:, keep:].sort(dim=1).values


class SJEPASampler:
    """The :class:`jepa_core.masks.MaskSampler` of S-JEPA: for ``batch_size`` samples of ``M``
    persons, ``gumbel [B, M, N]`` (the masking noise, one row per person) and the view parameters
    of :func:`jepa_skeleton.views.draw_views` (``rotation [B, 3, 3]``, ``drop_axis [B]``, one
    view per sample, shared by its persons)."""

    def __init__(self, t_patch: int, angles: Sequence[float], axes: Sequence[int]):
        self.t_patch, self.angles, self.axes = t_patch, tuple(angles), tuple(axes)

    def __call__(self, batch_size: int, seeds, inputs: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if inputs is None:
            raise ValueError("SJEPASampler needs the batch's skeletons [B, C, T, V, M] (its token grid)")
        _, _, t, v, m = inputs.shape
        n = (t // self.t_patch) * v
        fields = {"gumbel": gumbel_noise((batch_size, m, n), seeds.generator(MASK_TAG))}
        fields.update(draw_views(batch_size, seeds.generator(VIEW_TAG), self.angles, self.axes))
        return fields
