"""Position encodings (:class:`jepa_core.nn.interfaces.PositionEncoding`): fixed 1-D and 2-D sin-cos tables.

A position encoding is a plain object, not a module: a fixed table is stored by the model that
uses it (as the frozen ``pos_embed`` / ``predictor_pos_embed`` parameters of the official
checkpoints), so the encoding itself adds nothing to a state dict. The 3-D sin-cos table and
3-D RoPE of the video models live in ``jepa_video.nn``.
"""

from __future__ import annotations

import torch

from jepa_core.nn.layers import Block
from jepa_core.nn.pos_embed import Order2D, sincos_1d, sincos_2d


class FixedTable:
    """Base of the additive fixed tables: plain :class:`Block` s, no per-forward attention context.

    Subclasses implement :meth:`table`.
    """

    block = Block

    def table(self, grid: tuple[int, ...], dim: int) -> torch.Tensor:
        raise NotImplementedError

    def attention_context(self, ids: torch.Tensor, grid: tuple[int, ...]) -> None:
        return None

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class SinCos2D(FixedTable):
    """The fixed 2-D sin-cos table over an ``(H', W')`` grid in raster order, with the channel
    halves in ``order`` (``"wh"``: I-JEPA, ijepa:src/models/vision_transformer.py
    ``get_2d_sincos_pos_embed``; ``"hw"``: jepa:src/models/utils/pos_embs.py)."""

    def __init__(self, order: Order2D = "wh"):
        self.order = order

    def table(self, grid: tuple[int, ...], dim: int) -> torch.Tensor:
        if len(grid) != 2:
            raise ValueError(f"a 2-D sin-cos table needs a 2-D token grid, got {grid}")
        return sincos_2d(dim, grid[0], grid[1], order=self.order)


class SinCos1D(FixedTable):
    """The fixed 1-D sin-cos table over a sequence of ``L`` tokens (``grid = (L,)``): the
    Transformer's sinusoids with the sin half first (the axis table of
    ijepa:src/models/vision_transformer.py ``get_1d_sincos_pos_embed``)."""

    def table(self, grid: tuple[int, ...], dim: int) -> torch.Tensor:
        if len(grid) != 1:
            raise ValueError(f"a 1-D sin-cos table needs a 1-D token grid, got {grid}")
        return sincos_1d(dim, torch.arange(grid[0])).float()
