"""Fixed sine-cosine position tables.

Every table is computed in float64 and returned as float32, as the official code does with
numpy (ijepa:src/models/vision_transformer.py, jepa:src/models/utils/pos_embs.py), so the
values match the tables stored in official checkpoints bit for bit.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Order2D = Literal["wh", "hw"]


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """1-D table: ``[sin(p * w_0..w_{d/2-1}) | cos(p * w_0..)]`` (not interleaved).

    ``w_k = 1 / 10000 ** (k / (dim / 2))``. Returns ``[len(positions), dim]`` float64.
    """
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions.to(torch.float64).reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int | None = None, order: Order2D = "wh") -> torch.Tensor:
    """2-D table of shape ``[grid_h * grid_w, dim]`` for tokens in raster order (row-major).

    Half of the channels encode each axis. ``order`` says which comes first:

    - ``"wh"``: first half = column (x) index, second half = row index. This is I-JEPA's table
      (ijepa:src/models/vision_transformer.py ``get_2d_sincos_pos_embed``, built from
      ``np.meshgrid(grid_w, grid_h)``, the MAE convention).
    - ``"hw"``: first half = row, second half = column: V-JEPA's 2-D table
      (jepa:src/models/utils/pos_embs.py).
    """
    grid_w = grid_h if grid_w is None else grid_w
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a dimension divisible by 4, got {dim}")
    rows = torch.arange(grid_h, dtype=torch.float64).repeat_interleave(grid_w)
    cols = torch.arange(grid_w, dtype=torch.float64).repeat(grid_h)
    first, second = (cols, rows) if order == "wh" else (rows, cols)
    table = torch.cat([sincos_1d(dim // 2, first), sincos_1d(dim // 2, second)], dim=1)
    return table.float()


def sincos_3d(
    dim: int, frames: int, grid_h: int, grid_w: int | None = None, uniform_power: bool = True
) -> torch.Tensor:
    """3-D table ``[frames * grid_h * grid_w, dim]``, channels ``[time | height | width]``.

    ``uniform_power=True`` (all V-JEPA configs): each axis gets ``2 * ceil(dim / 6)`` channels
    and the concatenation is truncated to ``dim``; otherwise time gets ``dim / 2`` and each
    spatial axis ``dim / 4`` (jepa:src/models/utils/pos_embs.py ``get_3d_sincos_pos_embed``).
    Tokens are ordered (t, h, w) with t slowest, like a Conv3d flatten.
    """
    grid_w = grid_h if grid_w is None else grid_w
    if uniform_power:
        d_t = d_h = d_w = 2 * math.ceil(dim / 6)
    else:
        d_t, d_h, d_w = dim // 2, dim // 4, dim // 4
    t = torch.arange(frames, dtype=torch.float64).repeat_interleave(grid_h * grid_w)
    h = torch.arange(grid_h, dtype=torch.float64).repeat_interleave(grid_w).repeat(frames)
    w = torch.arange(grid_w, dtype=torch.float64).repeat(frames * grid_h)
    table = torch.cat([sincos_1d(d_t, t), sincos_1d(d_h, h), sincos_1d(d_w, w)], dim=1)
    return table[:, :dim].float()
