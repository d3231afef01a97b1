"""Regression losses between predictions and (normalised) targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jepa_core.masks.buckets import masked_mean


def smooth_l1(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """I-JEPA's loss: Huber with beta 1, mean over all elements (ijepa:src/train.py); the paper
    writes L2 (I-JEPA paper, Section 3), the code uses smooth-L1. ``valid [R, K]``: the real
    tokens of bucketed (padded) masks, the mean over those only (:mod:`jepa_core.masks.buckets`)."""
    if valid is not None:
        return masked_mean(F.smooth_l1_loss(pred, target, reduction="none"), valid)
    return F.smooth_l1_loss(pred, target)


def l1(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """V-JEPA / V-JEPA 2: mean |z - h| (``loss_exp`` = 1, jepa:app/vjepa/train.py)."""
    if valid is not None:
        return masked_mean((pred - target).abs(), valid)
    return (pred - target).abs().mean()


def l2(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error, the loss the I-JEPA paper writes."""
    if valid is not None:
        return masked_mean(F.mse_loss(pred, target, reduction="none"), valid)
    return F.mse_loss(pred, target)


LOSSES = {"smooth_l1": smooth_l1, "l1": l1, "l2": l2}


def get_loss(name: str):
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}")
    return LOSSES[name]
