"""Activation checkpointing for any list of transformer blocks."""

from __future__ import annotations

import torch
from torch import nn


def enable_activation_checkpointing(blocks: nn.ModuleList) -> None:
    """Recompute each block's activations in the backward pass (``torch.utils.checkpoint``,
    non-reentrant, one segment per block, as ``use_activation_checkpointing`` in V-JEPA 2's
    encoder and predictor).

    Trades an extra forward of the blocks for not keeping their activations, so a larger batch
    or model fits on a GPU (ViT-L steps on an H100: 2.3-5.5x less step memory, 1.8x the time;
    BENCHMARKS.md). The block's ``forward`` is wrapped on the instance, so
    parameter names and state dicts do not change, and gradients are those of the plain blocks.
    Without gradients (the target encoder, evaluation) the block runs as usual. Calling it twice
    is harmless.
    """
    from torch.utils.checkpoint import checkpoint

    for blk in blocks:
        if getattr(blk, "_jepa_checkpointed", False):
            continue
        inner = blk.forward

        def forward(*args, _inner=inner, **kwargs):
            if torch.is_grad_enabled():
                return checkpoint(_inner, *args, use_reentrant=False, **kwargs)
            return _inner(*args, **kwargs)

        blk.forward = forward  # type: ignore[method-assign]
        blk.__dict__["_jepa_checkpointed"] = True  # a plain attribute (nn.Module typing would refuse it)
