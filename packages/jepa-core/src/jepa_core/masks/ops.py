"""Gathering kept tokens by index masks."""

from __future__ import annotations

import torch


def apply_masks(x: torch.Tensor, masks: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """Keep the tokens ``x[b, masks[b]]``; with a list of masks, stack the results on the batch.

    ``x``: ``[B, N, D]``; each mask: LongTensor ``[B, K]``. Returns ``[len(masks) * B, K, D]``
    mask-major, like the official ``apply_masks`` (ijepa:src/masks/utils.py), with an expanded
    index instead of a copied one.
    """
    if isinstance(masks, torch.Tensor):
        masks = [masks]
    out = []
    for m in masks:
        if m.ndim != 2 or m.shape[0] != x.shape[0]:
            raise ValueError(f"mask of shape {tuple(m.shape)} does not fit tokens {tuple(x.shape)}")
        out.append(torch.gather(x, 1, m.unsqueeze(-1).expand(-1, -1, x.shape[-1])))
    return out[0] if len(out) == 1 else torch.cat(out, dim=0)
