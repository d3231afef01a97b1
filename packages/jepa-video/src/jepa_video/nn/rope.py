"""3-D rotary position embedding (RoPE) of V-JEPA 2, and attention / blocks that use it.

As in vjepa2:src/models/utils/modules.py (``RoPEAttention``, ``rotate_queries_or_keys``):

- Per head of size ``Dh``, each axis gets ``S = 2 * floor(floor(Dh / 3) / 2)`` channels, laid out
  ``[time S | height S | width S | rest]``; the rest is left untouched (Dh=64 -> S=20, 4 untouched;
  Dh=80 -> S=26, 2 untouched; predictor Dh=32 -> S=10, 2 untouched).
- Positions are integer token coordinates taken from the token index ``n`` (the mask index when
  tokens were dropped): ``frame = n // (H' W')``, ``row = (n mod H'W') // W'``, ``col = n mod W'``.
- For an ``S``-channel sub-block, ``omega_k = 1 / 10000 ** (k / (S / 2))``, ``k < S / 2``, and
  ``theta_k = pos * omega_k``. Channels are rotated in *adjacent pairs* ``(x_2i, x_2i+1)``:
  ``y_2i = x_2i cos a_2i - x_2i+1 sin a_2i``, ``y_2i+1 = x_2i+1 cos a_2i+1 + x_2i sin a_2i+1``.
- **Official quirk (kept by default)**: the per-channel angles are *tiled*,
  ``a_j = theta_(j mod S/2)`` (``repeat``), so the two members of a pair turn by different angles
  and the map is not a rotation of the pair (vjepa2 PR #15, kept open for checkpoint
  compatibility). ``fix_tiling=True`` uses the textbook interleaved layout
  ``a_2i = a_2i+1 = theta_i`` (``repeat_interleave``), which is a true rotation and gives
  relative-position attention scores. Released V-JEPA 2 weights need the tiled form.
- Frequencies and angles are computed in the activation dtype (q's dtype, bf16 under autocast),
  as vjepa2:src/models/utils/modules.py does, so bf16 results match bit for bit.
"""

from __future__ import annotations

from functools import partial

import torch
from jepa_core.nn.layers import Block, attend, split_heads
from torch import nn


def rope_axis_dim(head_dim: int) -> int:
    """Channels per axis: ``2 * floor(floor(head_dim / 3) / 2)`` (vjepa2:src/models/utils/modules.py)."""
    return 2 * ((head_dim // 3) // 2)


def token_coordinates(
    ids: torch.Tensor, grid_h: int, grid_w: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split token indices of a ``(t, h, w)``-ordered grid into (frame, row, col) integers."""
    per_frame = grid_h * grid_w
    frame = ids // per_frame
    rest = ids - frame * per_frame
    row = rest // grid_w
    return frame, row, rest - row * grid_w


def rope_angles(
    pos: torch.Tensor, dim: int, dtype: torch.dtype, fix_tiling: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the per-channel angles ``[..., dim]`` for integer positions ``pos [...]``.

    ``fix_tiling=False`` (official): ``a_j = theta_(j mod dim/2)``; ``True``: ``a_j = theta_(j // 2)``.
    """
    if dim % 2:
        raise ValueError(f"RoPE needs an even number of channels, got {dim}")
    omega = torch.arange(dim // 2, dtype=dtype, device=pos.device) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    theta = pos.to(dtype).unsqueeze(-1) * omega  # [..., dim/2]
    if fix_tiling:
        theta = theta.repeat_interleave(2, dim=-1)
    else:
        theta = torch.cat([theta, theta], dim=-1)
    return theta.cos(), theta.sin()


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x * cos + rot(x) * sin`` with ``rot(x)_(2i, 2i+1) = (-x_2i+1, x_2i)`` (adjacent pairs)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    rot = torch.stack((-x2, x1), dim=-1).flatten(-2)
    return x * cos + rot * sin


def rope_3d_tables(
    ids: torch.Tensor,
    grid_hw: tuple[int, int],
    head_dim: int,
    dtype: torch.dtype,
    fix_tiling: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin ``[..., 3S]`` for the ``[t | h | w]`` channels of tokens with indices ``ids [...]``."""
    S = rope_axis_dim(head_dim)
    coords = token_coordinates(ids, *grid_hw)
    cs = [rope_angles(c, S, dtype, fix_tiling) for c in coords]
    return torch.cat([c for c, _ in cs], dim=-1), torch.cat([s for _, s in cs], dim=-1)


class RoPETables:
    """The cos/sin tables of one set of token indices, computed on first use per (head_dim,
    dtype) and then shared by every block (and by q and k) of a forward pass: the official code
    recomputes them in each attention call, i.e. ``2 * depth`` times per pass. Pass one in place
    of ``ids`` to :class:`RoPEBlock` / :class:`RoPEAttention`; the tables are those
    :func:`rope_3d_tables` gives, so results are bitwise the same."""

    def __init__(self, ids: torch.Tensor, grid_hw: tuple[int, int], fix_tiling: bool = False):
        self.ids, self.grid_hw, self.fix_tiling = ids, grid_hw, fix_tiling
        self._cache: dict[tuple[int, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, head_dim: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos, signed sin)`` over all ``head_dim`` channels, ready for :func:`rotate_full`:
        the pass-through channels ``3S..Dh`` get cos 1 and sin 0, and the sign of ``rot``
        is folded into sin (even channels negated)."""
        key = (head_dim, dtype)
        if key not in self._cache:
            cos, sin = rope_3d_tables(self.ids, self.grid_hw, head_dim, dtype, self.fix_tiling)
            rest = head_dim - cos.shape[-1]
            if rest:
                cos = torch.cat([cos, cos.new_ones(*cos.shape[:-1], rest)], -1)
                sin = torch.cat([sin, sin.new_zeros(*sin.shape[:-1], rest)], -1)
            sign = torch.ones(head_dim, dtype=dtype, device=sin.device)
            sign[0::2] = -1
            sin = sin * sign
            if self.ids.ndim == 2:  # [B, N, Dh] -> [B, 1, N, Dh], shared over heads
                cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
            self._cache[key] = (cos, sin)
        return self._cache[key]


def rotate_full(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """:func:`rotate_pairs` over all channels with the tables of :meth:`RoPETables.get`: the
    adjacent pairs are swapped (one flip), the signs live in ``signed_sin``, and
    the pass-through channels come out as ``x * 1 + y * 0 = x``: no negation, slicing or concat."""
    # (x0, x1, x2, x3, ...) -> (x1, x0, x3, x2, ...): one flip over the pair axis, whose backward
    # is one flip too (stacking two strided slices would zero-fill and add two full-size buffers).
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return x * cos + swapped * signed_sin


def _need_grid(grid_hw):
    if grid_hw is None:
        raise ValueError("token indices need grid_hw = (H', W') (or pass a RoPETables)")
    return grid_hw


def apply_rope_3d(
    x: torch.Tensor,
    ids: torch.Tensor | RoPETables,
    grid_hw: tuple[int, int],
    fix_tiling: bool = False,
) -> torch.Tensor:
    """Rotate queries or keys ``x [B, heads, N, Dh]`` by the 3-D RoPE of token indices ``ids``.

    ``ids``: ``[N]`` (same positions for every row) or ``[B, N]``. Channels ``3S..Dh`` pass through.
    Since S is even, no rotation pair straddles two axis blocks, so all three are rotated at once.
    """
    tables = ids if isinstance(ids, RoPETables) else RoPETables(ids, grid_hw, fix_tiling)
    return rotate_full(x, *tables.get(x.shape[-1], x.dtype))


class RoPEAttention(nn.Module):
    """Self-attention with 3-D RoPE on q and k; parameters ``qkv`` and ``proj`` as in
    :class:`jepa_core.nn.vit.Attention` (vjepa2:src/models/utils/modules.py ``RoPEAttention``).

    ``forward(x, ids, grid_hw=None, attn_mask=None)``: ``ids`` are the token indices on the full
    ``(T', H', W')`` grid (``[N]`` or ``[B, N]``) with ``grid_hw = (H', W')``, or a
    :class:`RoPETables` of them shared across blocks (which carries the grid). SDPA, default
    scale ``Dh ** -0.5``.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, fix_tiling: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.fix_tiling = fix_tiling
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        ids: torch.Tensor | RoPETables,
        grid_hw: tuple[int, int] | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q, k, v = split_heads(self.qkv(x), self.num_heads)
        # q and k rotated one after the other: with one unbind, the backward stacks the three
        # gradients once (slicing qkv[:2] and qkv[2] would zero-fill and add full-size buffers).
        tables = ids if isinstance(ids, RoPETables) else RoPETables(ids, _need_grid(grid_hw), self.fix_tiling)
        cos, sin = tables.get(self.head_dim, q.dtype)
        return attend(rotate_full(q, cos, sin), rotate_full(k, cos, sin), v, attn_mask, self.proj)


class RoPEBlock(Block):
    """Pre-norm block whose attention is :class:`RoPEAttention` (same parameter names as Block)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        fix_tiling: bool = False,
    ):
        super().__init__(dim, num_heads, mlp_ratio, qkv_bias, drop_path)
        # replaces Block's Attention (a different forward: ids / grid_hw); Block.forward is overridden too
        self.attn = RoPEAttention(dim, num_heads, qkv_bias, fix_tiling)  # type: ignore[assignment]

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        ids: torch.Tensor | RoPETables,
        grid_hw: tuple[int, int] | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), ids, grid_hw, attn_mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class RoPE3D:
    """3-D RoPE as a :class:`jepa_core.nn.interfaces.PositionEncoding`: nothing additive,
    :class:`RoPEBlock` blocks, and per forward one :class:`RoPETables` of the token indices on
    the ``(T', H', W')`` grid, shared by every block (vjepa2:src/models/vision_transformer.py
    ``use_rope``, vjepa2:src/models/predictor.py)."""

    def __init__(self, fix_tiling: bool = False):
        self.fix_tiling = fix_tiling
        self.block = partial(RoPEBlock, fix_tiling=fix_tiling)

    def table(self, grid: tuple[int, ...], dim: int) -> None:
        return None

    def attention_context(self, ids: torch.Tensor, grid: tuple[int, ...]) -> RoPETables:
        if len(grid) != 3:
            raise ValueError(f"3-D RoPE needs a (T', H', W') token grid, got {grid}")
        return RoPETables(ids, (grid[1], grid[2]), self.fix_tiling)

    def __repr__(self) -> str:
        return f"RoPE3D(fix_tiling={self.fix_tiling})"
