"""Block geometry shared by the mask samplers (2-D I-JEPA, 3-D V-JEPA, and new ones): block
corners, cached block and span tables, and kept-index extraction.

Past the seeded draws (torch) the work is a handful of small array ops on CPU, where numpy's
per-call overhead is several times lower than torch's; hence the numpy paths.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

__all__ = ["block_masks", "block_table", "block_table_np", "draw_positions", "first_k", "paint_blocks", "span_table",
           "to_indices"]


def to_indices(masks: torch.Tensor) -> list[torch.Tensor]:
    """Boolean ``[B, M, N]`` -> M LongTensors ``[B, K]`` of raster-sorted kept indices, truncated
    to the smallest count over the batch and the M masks (keeping the first indices), as the
    official collators do (ijepa:src/masks/multiblock.py)."""
    B, M, N = masks.shape
    flat = masks.reshape(B * M, N)
    counts = flat.sum(-1)
    k = int(counts.min())
    return list(first_k(flat, k, counts).view(B, M, k).unbind(1))


def first_k(masks, k: int, counts=None) -> torch.Tensor:
    """Boolean ``[R, N]`` (a tensor, or a numpy array) with at least k True per row ->
    LongTensor ``[R, k]``: the k smallest True indices of each row, ascending. One flat
    ``nonzero`` (row-major, so each row's indices come sorted), then the first k of each row as
    a window starting at the row's offset; no sort. ``counts``: ``masks.sum(-1)``.
    On CPU the work is numpy's (several times less per-call overhead than torch's for these
    small arrays; collators run on CPU)."""
    R, N = masks.shape
    if isinstance(masks, torch.Tensor) and masks.device.type != "cpu":
        counts = masks.sum(-1) if counts is None else counts
        flat = masks.contiguous().view(-1).nonzero().squeeze(1)
        starts = counts.cumsum(0) - counts
        rows = torch.arange(R, device=masks.device) * N
        return flat[starts[:, None] + torch.arange(k, device=masks.device)] - rows[:, None]
    m: Any = masks.numpy() if isinstance(masks, torch.Tensor) else masks
    c = m.sum(-1) if counts is None else (counts.numpy() if isinstance(counts, torch.Tensor) else counts)
    if k == 0:
        return torch.zeros(R, 0, dtype=torch.long)
    return torch.from_numpy(_first_k_numpy(m, c, k))


def _first_k_numpy(m: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
    R, N = m.shape
    starts = np.cumsum(c) - c
    flat = np.flatnonzero(m)
    # windows of k consecutive entries (a strided view built directly: as_strided's and
    # sliding_window_view's argument handling cost more than the gather here), then a copy of
    # row r = flat[starts[r]:][:k]
    step = flat.strides[0]
    windows = np.ndarray((len(flat) - k + 1, k), flat.dtype, flat, 0, (step, step))
    out = windows[starts]
    out -= (np.arange(R) * N)[:, None]
    return out.astype(np.int64, copy=False)


@functools.lru_cache(maxsize=64)
def block_table(n_h: int, n_w: int, h: int, w: int) -> torch.Tensor | None:
    """``table[top, left]`` = the flattened ``n_h x n_w`` mask of the h x w block at (top, left),
    for every position that fits; None when the table would be large (then blocks are painted)."""
    rows, cols = n_h - h + 1, n_w - w + 1
    if rows * cols * n_h * n_w > 1 << 22:
        return None
    return paint_blocks(torch.arange(rows)[:, None].expand(rows, cols), torch.arange(cols)[None].expand(rows, cols),
                        h, w, n_h, n_w)


@functools.lru_cache(maxsize=64)
def block_table_np(n_h: int, n_w: int, h: int, w: int) -> np.ndarray | None:
    """:func:`block_table` as a numpy array (shares its memory)."""
    table = block_table(n_h, n_w, h, w)
    return None if table is None else table.numpy()


def paint_blocks(top, left, h: int, w: int, n_h: int, n_w: int) -> torch.Tensor:
    """:func:`block_masks` without the table."""
    r, c = torch.arange(n_h), torch.arange(n_w)
    in_rows = (r >= top[..., None]) & (r < (top + h)[..., None])
    in_cols = (c >= left[..., None]) & (c < (left + w)[..., None])
    return (in_rows[..., :, None] & in_cols[..., None, :]).flatten(-2)


def block_masks(top: torch.Tensor, left: torch.Tensor, h: int, w: int, n_h: int, n_w: int) -> torch.Tensor:
    """Flattened boolean masks ``[*top.shape, n_h * n_w]`` of h x w blocks at (top, left)
    (blocks must fit): one lookup in a cached table of all positions."""
    table = block_table(n_h, n_w, h, w)
    if table is None:
        return paint_blocks(top, left, h, w, n_h, n_w)
    return table[top, left]


@functools.lru_cache(maxsize=64)
def span_table(n: int, length: int) -> torch.Tensor:
    """``table[start]`` = boolean ``[n]``, True on ``start .. start + length - 1``."""
    r = torch.arange(n)
    lo = torch.arange(n - length + 1)[:, None]
    return (r >= lo) & (r < lo + length)


def draw_positions(g: torch.Generator, shape: tuple[int, ...], *extents: int) -> tuple[np.ndarray, ...]:
    """Block corners, one numpy int array of ``shape`` per extent ``n``, each uniform on
    ``0 .. n - 1``, from one seeded draw of ``len(extents) x shape`` uniforms in [0, 1) (one call
    instead of one ``randint`` per axis: the per-call overhead is what costs here)."""
    u = torch.rand((len(extents), *shape), generator=g, dtype=torch.float64).numpy()
    scale = np.array(extents, dtype=np.float64)
    # (samples, blocks) is the shape every sampler uses: plain indexing is cheaper than reshape
    scale = scale[:, None, None] if len(shape) == 2 else scale.reshape((-1,) + (1,) * len(shape))
    idx = (u * scale).astype(np.intp)
    return tuple(idx[i] for i in range(len(extents)))
