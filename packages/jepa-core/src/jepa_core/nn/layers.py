"""Transformer layers shared by every encoder and predictor, and the constructor helpers.

Parameter names follow the official code (ijepa:src/models/vision_transformer.py,
vjepa2:src/models/utils/modules.py) so that official state dicts load without renaming:
``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``. Attention runs through
``F.scaled_dot_product_attention``; the official I-JEPA code computes the same softmax by hand
(equal to float rounding).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import partial

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

LayerNorm = partial(nn.LayerNorm, eps=1e-6)  # every official factory passes eps=1e-6


def trunc_normal_init_(module: nn.Module, std: float = 0.02) -> None:
    """The official init: trunc_normal(std) on Linear and Conv weights, zero biases, LN to 1/0.

    The official ``trunc_normal_`` truncates at absolute +-2 (ijepa:src/utils/tensors.py), which
    never triggers at std 0.02; we do the same.
    """
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.trunc_normal_(m.weight, std=std, a=-2.0, b=2.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def rescale_blocks_(blocks: Iterable[nn.Module]) -> None:
    """Divide ``attn.proj`` and ``mlp.fc2`` weights of block i (1-based) by sqrt(2 i).

    The official constructors do this, but I-JEPA and V-JEPA re-initialise every Linear
    afterwards (ijepa:src/helper.py ``init_model``, jepa:app/vjepa/utils.py ``init_video_model``),
    so it is off by default there; V-JEPA 2 keeps it (vjepa2:app/vjepa/utils.py ``init_video_model``
    does not re-initialise).
    """
    for i, block in enumerate(blocks, start=1):
        block.attn.proj.weight.data.div_(math.sqrt(2.0 * i))
        block.mlp.fc2.weight.data.div_(math.sqrt(2.0 * i))


class Segments(tuple):
    """Token-axis segment lengths that stand in for a block-diagonal attention mask: tokens
    attend only within their segment. Passed as ``attn_mask``, attention runs once per segment
    (no masked-out FLOPs, kernels without mask support stay usable), while every per-token op
    of the block (LayerNorm, qkv, proj, MLP) runs once over all segments."""


def split_heads(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fused ``qkv [B, N, 3 C]`` (rows Q, K, V; heads contiguous) -> q, k, v ``[B, heads, N, Dh]``.

    One ``unbind`` of one view: the backward stacks the three gradients once.
    """
    q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=num_heads).unbind(0)
    return q, k, v


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[B, heads, N, Dh]`` -> ``[B, N, heads * Dh]``."""
    return rearrange(x, "b h n d -> b n (h d)")


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask, proj: nn.Module) -> torch.Tensor:
    """``proj`` of ``F.scaled_dot_product_attention`` over ``[B, heads, N, Dh]``, as ``[B, N, C]``.

    With :class:`Segments` for ``attn_mask``, attention *and* ``proj`` run per segment and the
    projected parts are concatenated: ``proj`` then reads each attention output through a view
    (as in one unsegmented pass), so no concatenated copy of it is kept for the backward pass.
    """
    if isinstance(attn_mask, Segments):
        lengths = list(attn_mask)  # plain ints: torch.compile cannot pass the tuple subclass to split
        parts = zip(q.split(lengths, 2), k.split(lengths, 2), v.split(lengths, 2))
        outs = [F.scaled_dot_product_attention(a, b, c) for a, b, c in parts]
        return torch.cat([proj(merge_heads(o)) for o in outs], dim=1)
    return proj(merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)))


class Attention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` Linear (rows Q, K, V; heads contiguous)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = split_heads(self.qkv(x), self.num_heads)
        return attend(q, k, v, attn_mask, self.proj)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact erf GELU, as the official code
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth per sample. Official rate is 0 everywhere; kept for users."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path: float = 0.0
    ):
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), attn_mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


BlockFactory = Callable[..., nn.Module]
"""``factory(dim, num_heads, mlp_ratio, qkv_bias, drop_path) -> block``, e.g. :class:`Block`."""


def build_blocks(
    block: BlockFactory,
    dim: int,
    depth: int,
    num_heads: int,
    mlp_ratio: float = 4.0,
    qkv_bias: bool = True,
    drop_path_rate: float = 0.0,
) -> nn.ModuleList:
    """``depth`` blocks with stochastic-depth rates rising linearly from 0 to ``drop_path_rate``
    (ijepa:src/models/vision_transformer.py ``dpr``)."""
    rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()  # cpu: also under a meta-device context
    return nn.ModuleList(block(dim, num_heads, mlp_ratio, qkv_bias, r) for r in rates)


def init_transformer_(module: nn.Module, blocks: Iterable[nn.Module], init_std: float, rescale_init: bool) -> None:
    """The official constructor init of an encoder or predictor: :func:`trunc_normal_init_` on
    every submodule, then (``rescale_init``) :func:`rescale_blocks_` on ``blocks``. Call it last,
    once every layer exists."""
    trunc_normal_init_(module, init_std)
    if rescale_init:
        rescale_blocks_(blocks)


def repeat_interleave_batch(x: torch.Tensor, B: int, repeat: int) -> torch.Tensor:
    """Split ``x`` into chunks of B rows and repeat each chunk ``repeat`` times in place.

    Same semantics as the official helper (ijepa:src/utils/tensors.py).
    """
    if repeat == 1:
        return x
    n = x.shape[0] // B
    return x.reshape(n, 1, B, *x.shape[1:]).expand(n, repeat, B, *x.shape[1:]).reshape(n * repeat * B, *x.shape[1:])
