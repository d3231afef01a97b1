"""DMT-JEPA's neighbour-aggregation head (Mo & Yun, 2024, arXiv 2405.17995, method section and
framework figure, also dmtjepa:assets/framework.png).

A small stack of pre-norm cross-attention blocks in which one *query* token attends to a set
of tokens. It runs in two modes:

- **local** (``head(x, grid=(H, W))``, the targets; paper: "Masked Semantic Neighboring" and
  "Local Aggregation Target"): for every token ``i`` of an ``H x W`` grid, the ``top_k``
  tokens of its ``window x window`` spatial neighbourhood (centre excluded) that are most
  cosine-similar to ``x_i`` are selected; the query is built from them, and each block attends
  from the query to ``[query, selected neighbours]``; the output, after a final LayerNorm, is
  the target of token ``i``. ``[B, N, D] -> [B, N, D]``.
- **global** (``head(z)``, the context side; dmtjepa:src/models/local_agg_head.py ``loc=False``):
  each block attends from the mean of the tokens to ``[mean, tokens]`` and adds the one attended
  vector to every token, then a per-token MLP; a final LayerNorm. ``[B, M, D] -> [B, M, D]``.

In DMT-JEPA the online head runs in global mode after the context encoder and is trained; its
EMA twin (:class:`jepa_core.target.EMATarget`) runs in local mode on the target encoder's
output and makes the targets (dmtjepa:src/train.py ``forward_target`` / ``forward_context``).

Defaults follow the paper; the released code (dmtjepa:src/models/local_agg_head.py) differs in
three ways, each behind a flag here:

- ``query="neighbour_mean"`` (default; the paper's framework figure: "Mean" over the selected neighbours gives
  the query) or ``"image_mean"`` (the code: the mean of all tokens of the image);
  ``query_batch_mixup=True`` (with ``"image_mean"``) also reproduces the code's row order, in
  which the query of token ``n`` of image ``b`` is the mean of image ``(b * N + n) mod B``
  (it tiles the ``[B, 1, D]`` means ``N`` times along the batch axis, while the neighbours are
  laid out image by image), so for ``B > 1`` queries come from other images;
- ``wrap=False`` (default): the window is clipped at the grid border (a corner token has 3
  candidates in a 3x3 window, an edge token 5; when fewer than ``top_k`` exist, the missing
  ones are masked out of the attention and of the query mean); ``wrap=True``: the code's
  indices modulo the grid side, so border tokens take neighbours from the opposite edge;
- the loss (smooth-L1 in the code, L2 in the paper) is the method's (``model.loss``).

Keys and values are the query and the selected neighbours in both modes, as in the released
code (the framework figure draws keys and values from the neighbours alone; with the
neighbour-mean query the extra key is their mean).

Other differences from the released module: any grid (the code precomputes indices for 14x14,
16x16 and 6x6 grids only and asserts otherwise), any window, ``top_k``, depth, head count and
MLP ratio; the code's module does not import (its MLP class ``Mlp`` is undefined; here it is
:class:`jepa_core.nn.Mlp`: Linear, exact GELU, Linear, hidden ``mlp_ratio * D``). The released
training loop also drops both heads from its checkpoints (dmtjepa:src/train.py
``save_checkpoint``), so resuming it re-initialises them; here the heads are submodules of the
method and are saved in every run checkpoint (``head.*``, ``target_head.module.*``).

State-dict names equal the released module's except ``cls_blocks`` -> ``blocks``
(:func:`convert_released_state_dict`).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from jepa_core.config import ConfigError
from jepa_core.nn.layers import LayerNorm, Mlp, trunc_normal_init_
from torch import nn

Query = Literal["neighbour_mean", "image_mean"]


def check_window(window: int, top_k: int) -> None:
    """``window`` is odd and at least 3; ``1 <= top_k <= window**2 - 1``. Raises ConfigError."""
    if window < 3 or window % 2 == 0:
        raise ConfigError(f"the neighbour window must be odd and at least 3 (a centre and a ring around it), got "
                          f"window={window}; e.g. window={max(3, window + 1 if window % 2 == 0 else 3)}")
    candidates = window * window - 1
    if not 1 <= top_k <= candidates:
        raise ConfigError(f"top_k={top_k} neighbours cannot be chosen from the {candidates} neighbours of a "
                          f"{window}x{window} window: use 1 <= top_k <= {candidates}, or a larger window "
                          f"(window={window + 2} has {(window + 2) ** 2 - 1})")


def check_grid(grid: tuple[int, int], window: int) -> None:
    """The window fits the token grid (``window <= H`` and ``window <= W``). Raises ConfigError."""
    h, w = grid
    if window > h or window > w:
        fit = min(h, w) - (1 - min(h, w) % 2)
        fix = f"use a window of at most {fit}" if fit >= 3 else "the grid is too small for any neighbour window"
        raise ConfigError(f"a {window}x{window} neighbour window does not fit the {h}x{w} token grid: {fix}, or a "
                          "larger grid (larger images or smaller patches)")


def neighbour_index(grid_h: int, grid_w: int, window: int = 3, wrap: bool = False,
                    device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The spatial neighbours of every token of a row-major ``grid_h x grid_w`` grid.

    Returns ``(index, valid)``, both ``[N, window**2 - 1]``: slot ``c`` of token ``i`` is the
    token at offset ``c`` of the window (row-major over ``(dy, dx)``, centre left out). With
    ``wrap`` the offsets are taken modulo the grid sides (every slot valid, the released code's
    behaviour); without, slots that fall outside the grid are ``valid=False`` and point at the
    token itself (a harmless in-range index).
    """
    check_grid((grid_h, grid_w), window)
    r = window // 2
    d = torch.arange(-r, r + 1, device=device)
    dy, dx = d.repeat_interleave(window), d.repeat(window)
    keep = (dy != 0) | (dx != 0)
    dy, dx = dy[keep], dx[keep]
    rows = torch.arange(grid_h, device=device).repeat_interleave(grid_w)[:, None]
    cols = torch.arange(grid_w, device=device).repeat(grid_h)[:, None]
    nr, nc = rows + dy, cols + dx
    if wrap:
        nr, nc = nr % grid_h, nc % grid_w
        valid = torch.ones_like(nr, dtype=torch.bool)
    else:
        valid = (nr >= 0) & (nr < grid_h) & (nc >= 0) & (nc < grid_w)
        nr, nc = torch.where(valid, nr, rows), torch.where(valid, nc, cols)
    return nr * grid_w + nc, valid


def select_neighbours(x: torch.Tensor, index: torch.Tensor, valid: torch.Tensor, top_k: int,
                      rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For every token of ``x [B, N, D]`` (or the tokens ``rows [B, R]`` of each image), the
    ``top_k`` candidates of ``index [N, C]`` (valid ones, ``valid [N, C]``) with the highest
    cosine similarity to it. Returns token indices ``[B, N or R, top_k]`` (most similar first)
    and their validity (False only where a clipped window has fewer than ``top_k`` candidates)."""
    b, n, _ = x.shape
    xn = F.normalize(x, dim=-1)
    if rows is None:
        rows = torch.arange(n, device=x.device).expand(b, -1)
    xr = torch.gather(xn, 1, rows.unsqueeze(-1).expand(-1, -1, xn.shape[-1]))  # [B, R, D]
    cand, ok = index[rows], valid[rows]  # [B, R, C]
    if n <= 1024:  # all pairs by one matrix product, then the window's entries
        sim = torch.gather(xr @ xn.transpose(1, 2), 2, cand)
    else:  # large grids: one candidate slot at a time, without a [B, R, N] matrix
        sim = torch.stack([(xr * torch.gather(xn, 1, cand[..., c, None].expand_as(xr))).sum(-1)
                           for c in range(cand.shape[-1])], dim=-1)
    top = sim.masked_fill(~ok, float("-inf")).topk(top_k, dim=-1).indices  # [B, R, k] slots
    return torch.gather(cand, 2, top), torch.gather(ok, 2, top)


class QueryAttention(nn.Module):
    """Multi-head attention of one query token to a set of tokens that includes it, with separate
    ``q``, ``k``, ``v`` Linears and ``proj``, as the released ``Class_Attention``.

    ``forward(u)``: the query is ``u[:, 0]``, the keys and values all of ``u [R, 1 + T, D]``
    (already layer-normed); ``key_mask [R, 1 + T]`` (True: attend) drops keys (never the query's
    own). Returns ``[R, 1, D]``. :meth:`attend` takes projected keys and values instead."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"the head's width {dim} does not split into {num_heads} attention heads; "
                              f"pick a divisor of {dim}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, u: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        q = self.q(u[:, :1])
        return self.attend(q, self.k(u[:, :1]), self.v(u[:, :1]), self.k(u[:, 1:]), self.v(u[:, 1:]),
                           None if key_mask is None else key_mask[:, 1:])

    def attend(self, q: torch.Tensor, k0: torch.Tensor, v0: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Projected query ``q``, its own key and value ``k0``, ``v0`` (``[R, 1, D]`` each), the
        other keys and values ``k``, ``v`` (``[R, T, D]``) and their mask ``key_mask [R, T]``
        (True: attend; the query's own key always is) -> ``proj`` of the attention ``[R, 1, D]``."""
        r, t, d = k.shape
        h = self.num_heads
        q = q.reshape(r, 1, h, d // h) * self.scale
        # one query per row: broadcast products rather than R x heads tiny matrix products
        l0 = (q * k0.reshape(r, 1, h, d // h)).sum(-1)  # [R, 1, h]
        lk = (q * k.reshape(r, t, h, d // h)).sum(-1)  # [R, T, h]
        if key_mask is not None:
            lk = lk.masked_fill(~key_mask[:, :, None], float("-inf"))
        w = torch.cat([l0, lk], dim=1).softmax(dim=1).unsqueeze(-1)  # [R, 1 + T, h, 1]
        out = w[:, 0] * v0.reshape(r, h, d // h) + (w[:, 1:] * v.reshape(r, t, h, d // h)).sum(1)
        return self.proj(out.reshape(r, 1, d))


class AggregationBlock(nn.Module):
    """Pre-norm block: ``x = residual + Attn(LN([query, tokens]))``, then ``x + MLP(LN(x))``.

    ``block(query, tokens)`` (global mode): ``query [B, 1, D]`` attends to ``[query, tokens]``
    (``tokens [B, M, D]``) and the one attended vector is added to every token
    (``residual = tokens``). ``block(query, x, index)`` (local mode): ``query [B * R, 1, D]``
    attends to itself and its neighbours, the rows ``index [B, R, k]`` of ``x [B, N, D]``
    (``residual = query``); ``key_mask [B * R, k]`` (True: attend) drops neighbours, the query
    always attends to itself. LayerNorm, ``k`` and ``v`` act on each token alone, so in local
    mode they run once per token of ``x`` and are then gathered, rather than once per (token,
    neighbour) pair: the same numbers, about k times fewer key/value FLOPs. (One ``forward``
    for both modes, so that FSDP's hooks gather the block's parameters in either.)"""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = QueryAttention(dim, num_heads)
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, query: torch.Tensor, tokens: torch.Tensor, index: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        a = self.attn
        nt = self.norm1(tokens)
        k, v = a.k(nt), a.v(nt)
        if index is not None:  # [B, R, k] rows of the per-token keys and values
            b, d = tokens.shape[0], tokens.shape[-1]
            flat = index.reshape(b, -1, 1).expand(-1, -1, d)
            k = torch.gather(k, 1, flat).reshape(-1, index.shape[-1], d)
            v = torch.gather(v, 1, flat).reshape(-1, index.shape[-1], d)
        nq = self.norm1(query)
        x = (tokens if index is None else query) + a.attend(a.q(nq), a.k(nq), a.v(nq), k, v, key_mask)
        return x + self.mlp(self.norm2(x))


class NeighbourAggregationHead(nn.Module):
    """DMT-JEPA's aggregation head; see the module docstring for the two modes and the flags.

    ``head(x, grid=(H, W))``: local mode, targets of every token of a row-major grid
    (``[B, H*W, D] -> [B, H*W, D]``); ``head(x)``: global mode (``[B, M, D] -> [B, M, D]``).
    Defaults: a 3x3 window, ``top_k=4``, 2 blocks, MLP ratio 4 (dmtjepa:configs/*.yaml
    ``patch_k_size: 3``, ``patch_k_num: 4``; dmtjepa:src/models/local_agg_head.py); give
    ``num_heads`` the encoder's head count, as the released ``init_model`` does.
    """

    def __init__(self, dim: int, num_heads: int, top_k: int = 4, window: int = 3, depth: int = 2,
                 mlp_ratio: float = 4.0, query: Query = "neighbour_mean", query_batch_mixup: bool = False,
                 wrap: bool = False, init_std: float = 0.02):
        super().__init__()
        check_window(window, top_k)
        if query not in ("neighbour_mean", "image_mean"):
            raise ConfigError(f"query={query!r} is not a query of the head; valid: neighbour_mean (the paper), "
                              "image_mean (the released code)")
        if query_batch_mixup and query != "image_mean":
            raise ConfigError("query_batch_mixup=True reproduces the released code's image-mean query rows: it needs "
                              "query='image_mean' (or set query_batch_mixup=False)")
        if depth < 1:
            raise ConfigError(f"the head needs at least one block, got depth={depth}")
        self.dim, self.top_k, self.window = dim, top_k, window
        self.query, self.query_batch_mixup, self.wrap = query, query_batch_mixup, wrap
        self.blocks = nn.ModuleList(AggregationBlock(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = LayerNorm(dim)
        trunc_normal_init_(self, init_std)  # trunc-normal Linears, zero biases, LN 1/0 (as the released head)
        self._index: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def extra_repr(self) -> str:
        return (f"top_k={self.top_k}, window={self.window}, query={self.query}, "
                f"query_batch_mixup={self.query_batch_mixup}, wrap={self.wrap}")

    def neighbours(self, grid: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`neighbour_index` of ``grid`` for this head's window and wrap, cached."""
        key = (int(grid[0]), int(grid[1]), str(device))
        if key not in self._index:
            self._index[key] = neighbour_index(key[0], key[1], self.window, self.wrap, device)
        return self._index[key]

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None,
                rows: torch.Tensor | None = None) -> torch.Tensor:
        """Global mode without ``grid``; with it, local mode for every token, or only for the
        tokens ``rows [B, R]`` of each image (``[B, R, D]`` out; the same values as those rows of
        the full output, at R / N of the cost of the per-token part)."""
        return self.aggregate_global(x) if grid is None else self.aggregate_local(x, grid, rows)

    def aggregate_global(self, x: torch.Tensor) -> torch.Tensor:
        """Context mode: each block's query is the mean of the current tokens, its output is
        added to every token."""
        for blk in self.blocks:
            x = blk(x.mean(dim=1, keepdim=True), x)
        return self.norm(x)

    def queries(self, x: torch.Tensor, nbrs: torch.Tensor, valid: torch.Tensor,
                rows: torch.Tensor | None = None) -> torch.Tensor:
        """The first query of each aggregated token, ``[B * R, 1, D]``, from ``x [B, N, D]``, the
        selected neighbours ``nbrs [B * R, k, D]`` and their validity ``[B * R, k]``; ``rows
        [B, R]`` are the tokens aggregated (default: all, R = N)."""
        b, n, d = x.shape
        if self.query == "neighbour_mean":
            w = valid.to(nbrs.dtype).unsqueeze(-1)
            return (nbrs * w).sum(1, keepdim=True) / w.sum(1, keepdim=True)
        if rows is None:
            rows = torch.arange(n, device=x.device).expand(b, -1)
        image = torch.arange(b, device=x.device)[:, None].expand_as(rows)
        if self.query_batch_mixup:  # the released row order: token n of image b takes image (b N + n) mod B
            image = (image * n + rows) % b
        return x.mean(dim=1)[image].reshape(-1, 1, d)

    def aggregate_local(self, x: torch.Tensor, grid: tuple[int, int], rows: torch.Tensor | None = None
                        ) -> torch.Tensor:
        """Target mode: every token (or the ``rows``) aggregated from its ``top_k`` most similar
        neighbours."""
        b, n, d = x.shape
        if grid[0] * grid[1] != n:
            raise ValueError(f"a {grid[0]}x{grid[1]} grid has {grid[0] * grid[1]} tokens, the input has {n}")
        index, valid = self.neighbours(grid, x.device)
        idx, ok = select_neighbours(x, index, valid, self.top_k, rows)  # [B, R, k] each
        r = idx.shape[1]
        nbrs = torch.gather(x, 1, idx.reshape(b, r * self.top_k, 1).expand(-1, -1, d))
        nbrs, ok = nbrs.reshape(b * r, self.top_k, d), ok.reshape(b * r, self.top_k)
        # a clipped corner has (window // 2 + 1)**2 - 1 candidates: with more than that to choose,
        # some selections are padding, masked out (decided from the shapes: no host sync)
        short = not self.wrap and self.top_k > (self.window // 2 + 1) ** 2 - 1
        key_mask = ok if short else None
        q = self.queries(x, nbrs, ok, rows)
        for blk in self.blocks:
            q = blk(q, x, idx, key_mask)
        return self.norm(q).reshape(b, r, d)


def convert_released_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict of the released ``LocalAggHead`` (dmtjepa:src/models/local_agg_head.py, its
    ``Mlp`` with ``fc1`` / ``fc2``), with or without a DDP ``module.`` prefix, in this module's
    names: ``cls_blocks.{i}.*`` -> ``blocks.{i}.*``; the rest is equal."""
    out = {}
    for k, v in sd.items():
        k = k.removeprefix("module.")
        out["blocks." + k[len("cls_blocks."):] if k.startswith("cls_blocks.") else k] = v
    return out
