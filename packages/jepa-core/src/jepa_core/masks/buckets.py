"""Static shapes for masked steps: mask lengths rounded up to a few bucket sizes.

The official collators truncate every batch's masks to the batch's shortest one
(ijepa:src/masks/multiblock.py), so the number of context and target tokens changes from batch
to batch. A compiled step (``torch.compile``, CUDA graphs) then recompiles or runs with dynamic
shapes. Bucketing pads each mask ``[B, K]`` to the smallest bucket ``L >= K`` and carries a
``valid [B, L]`` flag per slot:

- padded slots repeat the row's last kept index (a real token, so gathers stay in range);
- attention ignores them as keys (:func:`key_padding_mask`, passed to the encoder's and the
  predictor's blocks), so every valid token's output equals the unpadded step's;
- outputs at padded slots are dropped from the loss (:func:`masked_mean`).

The loss and its gradients then equal the unpadded step's up to float summation order (tested),
while a compiled step sees at most ``len(buckets)`` shapes per mask and compiles once per
bucket. :func:`pad_masks` does the padding; :func:`default_buckets` gives a geometric ladder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["bucket_length", "default_buckets", "pad_masks", "key_padding_mask", "masked_mean"]


def default_buckets(max_tokens: int, count: int = 4, multiple: int = 8) -> tuple[int, ...]:
    """``count`` bucket sizes up to ``max_tokens``: a geometric ladder (ratio 2^(1/2)) ending at
    ``max_tokens``, each rounded up to a ``multiple`` (tensor-core friendly), deduplicated."""
    if max_tokens < 1 or count < 1 or multiple < 1:
        raise ValueError(f"need max_tokens, count, multiple >= 1, got {max_tokens}, {count}, {multiple}")
    sizes = {max_tokens}
    for i in range(1, count):
        size = math.ceil(max_tokens / 2 ** (i / 2) / multiple) * multiple
        sizes.add(min(max(size, multiple), max_tokens))
    return tuple(sorted(sizes))


def bucket_length(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket ``>= length`` (an error naming the largest bucket if none is)."""
    fits = [b for b in buckets if b >= length]
    if not fits:
        raise ValueError(f"a mask of {length} tokens exceeds the largest bucket {max(buckets)}; "
                         "add a bucket of at least the token count")
    return min(fits)


def pad_masks(masks: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids [B, length], valid [B, length])``: ``masks [B, K]`` padded by repeating each row's
    last index; ``valid`` is False on the padding."""
    B, K = masks.shape
    if length < K:
        raise ValueError(f"cannot pad a mask of {K} tokens to {length}")
    valid = torch.zeros(B, length, dtype=torch.bool, device=masks.device)
    valid[:, :K] = True
    if length == K:
        return masks, valid
    pad = masks[:, -1:].expand(B, length - K)
    return torch.cat([masks, pad], dim=1), valid


def key_padding_mask(valid: torch.Tensor) -> torch.Tensor:
    """The boolean ``attn_mask [B, 1, 1, L]`` of ``F.scaled_dot_product_attention`` that lets
    every query attend to the valid keys only (True: attend)."""
    return valid[:, None, None, :]


def masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``values [R, L, ...]`` over the valid slots ``valid [R, L]`` (and every trailing
    element): equal to ``values[:, :K].mean()`` for an unpadded ``K`` shared by the rows."""
    weights = valid.to(values.dtype).reshape(*valid.shape, *([1] * (values.ndim - valid.ndim)))
    per_slot = math.prod(values.shape[valid.ndim:])
    return (values * weights).sum() / (weights.sum() * per_slot)
