"""Vision Transformer building blocks with token masks.

Parameter names and shapes follow the official I-JEPA / V-JEPA code
(ijepa:src/models/vision_transformer.py) so that official state dicts load without renaming:
``patch_embed.proj``, ``pos_embed``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
``norm``. Attention runs through ``F.scaled_dot_product_attention``; the official I-JEPA code
computes the same softmax by hand (equal to float rounding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from jepa_core.masks.ops import apply_masks
from jepa_core.nn.pos_embed import Order2D, sincos_2d

LayerNorm = partial(nn.LayerNorm, eps=1e-6)  # every official factory passes eps=1e-6


def trunc_normal_init_(module: nn.Module, std: float = 0.02) -> None:
    """The official init: trunc_normal(std) on Linear and Conv weights, zero biases, LN to 1/0.

    The official ``trunc_normal_`` truncates at absolute +-2 (ijepa:src/utils/tensors.py), which
    never triggers at std 0.02; we do the same.
    """
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.Conv3d)):
            nn.init.trunc_normal_(m.weight, std=std, a=-2.0, b=2.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def rescale_blocks_(blocks: Sequence[nn.Module]) -> None:
    """Divide ``attn.proj`` and ``mlp.fc2`` weights of block i (1-based) by sqrt(2 i).

    The official constructors do this, but I-JEPA and V-JEPA re-initialise every Linear
    afterwards (ijepa:src/helper.py ``init_model``), so it is off by default there; V-JEPA 2
    keeps it (reference, part D item 8).
    """
    for i, block in enumerate(blocks, start=1):
        block.attn.proj.weight.data.div_(math.sqrt(2.0 * i))
        block.mlp.fc2.weight.data.div_(math.sqrt(2.0 * i))


class PatchEmbed(nn.Module):
    """Image to patch tokens: Conv2d with kernel = stride = patch, flattened row-major."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Token-major and contiguous once here: the transposed view would otherwise carry its
        # layout through every residual add, and each LayerNorm and reshape would copy it.
        return self.proj(x).flatten(2).transpose(1, 2).contiguous()


class Segments(tuple):
    """Token-axis segment lengths that stand in for a block-diagonal attention mask: tokens
    attend only within their segment. Passed as ``attn_mask``, attention runs once per segment
    (no masked-out FLOPs, kernels without mask support stay usable), while every per-token op
    of the block (LayerNorm, qkv, proj, MLP) runs once over all segments."""


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask, proj: nn.Module) -> torch.Tensor:
    """``proj`` of ``F.scaled_dot_product_attention`` over ``[B, heads, N, Dh]``, as ``[B, N, C]``.

    With :class:`Segments` for ``attn_mask``, attention *and* ``proj`` run per segment and the
    projected parts are concatenated: ``proj`` then reads each attention output through a view
    (as in one unsegmented pass), so no concatenated copy of it is kept for the backward pass.
    """
    B, H, N, Dh = q.shape
    if isinstance(attn_mask, Segments):
        parts = zip(q.split(attn_mask, 2), k.split(attn_mask, 2), v.split(attn_mask, 2))
        outs = [F.scaled_dot_product_attention(a, b, c) for a, b, c in parts]
        return torch.cat([proj(o.transpose(1, 2).reshape(B, o.shape[2], H * Dh)) for o in outs], dim=1)
    x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    return proj(x.transpose(1, 2).reshape(B, N, H * Dh))


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
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
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


class VisionTransformer(nn.Module):
    """ViT encoder without a class token, with a fixed 2-D sin-cos table added before masking.

    ``forward(images, masks)``: ``masks`` is None (all tokens), a LongTensor ``[B, K]`` of kept
    token indices, or a list of them; with a list, the kept tokens of each mask are stacked
    along the batch (mask-major), as the official ``apply_masks`` does. Returns ``[B', K, D]``
    after the final LayerNorm.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        pos_embed_order: Order2D = "wh",
        rescale_init: bool = False,
        init_std: float = 0.02,
    ):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.embed_dim, self.num_heads, self.depth = embed_dim, num_heads, depth
        self.grid = img_size // patch_size
        self.num_patches = self.grid**2
        self.pos_embed_order = pos_embed_order
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        # A frozen Parameter, not a buffer, so it is saved like the official checkpoints save it.
        self.pos_embed = nn.Parameter(
            sincos_2d(embed_dim, self.grid, order=pos_embed_order).unsqueeze(0), requires_grad=False
        )
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()  # cpu: also under a meta-device context
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias, r) for r in rates)
        self.norm = LayerNorm(embed_dim)
        trunc_normal_init_(self, init_std)
        if rescale_init:
            rescale_blocks_(self.blocks)

    def position_table(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """The table for another grid: recomputed exactly (the table is a fixed function).

        The official I-JEPA ``interpolate_pos_encoding`` assumes a class token and breaks at any
        other resolution (reference A.1); recomputing the sin-cos table is exact instead.
        """
        if (grid_h, grid_w) == (self.grid, self.grid):
            return self.pos_embed
        table = sincos_2d(self.embed_dim, grid_h, grid_w, order=self.pos_embed_order)
        return table.to(self.pos_embed).unsqueeze(0)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected images [B, {self.in_chans}, H, W], got {tuple(x.shape)}")
        tokens = self.patch_embed(x)
        gh, gw = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        return tokens + self.position_table(gh, gw)

    def forward(
        self,
        x: torch.Tensor,
        masks: torch.Tensor | list[torch.Tensor] | None = None,
        return_layers: Sequence[int] | None = None,
    ) -> torch.Tensor | list[torch.Tensor]:
        x = self.embed(x)
        if masks is not None:
            x = apply_masks(x, masks)
        outs = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if return_layers is not None and i in return_layers:
                outs.append(self.norm(x))
        if return_layers is not None:
            return outs
        return self.norm(x)


class VisionTransformerPredictor(nn.Module):
    """The I-JEPA predictor (ijepa:src/models/vision_transformer.py ``VisionTransformerPredictor``).

    Narrow ViT over [context tokens + one mask token per target position]. Each (context mask,
    target mask) pair is its own batch row, target-major, so the output lines up with
    ``repeat_interleave_batch(apply_masks(targets, masks_pred), B, len(masks_ctx))``.
    Full bidirectional attention, no attention mask, as in the official code.
    """

    def __init__(
        self,
        num_patches: int,
        embed_dim: int = 768,
        predictor_embed_dim: int = 384,
        depth: int = 6,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        pos_embed_order: Order2D = "wh",
        init_std: float = 0.02,
    ):
        super().__init__()
        grid = math.isqrt(num_patches)
        if grid * grid != num_patches:
            raise ValueError(f"num_patches {num_patches} is not a square grid")
        self.num_patches = num_patches
        self.predictor_embed = nn.Linear(embed_dim, predictor_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_embed_dim))
        self.predictor_pos_embed = nn.Parameter(
            sincos_2d(predictor_embed_dim, grid, order=pos_embed_order).unsqueeze(0), requires_grad=False
        )
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()  # cpu: also under a meta-device context
        self.predictor_blocks = nn.ModuleList(
            Block(predictor_embed_dim, num_heads, mlp_ratio, qkv_bias, r) for r in rates
        )
        self.predictor_norm = LayerNorm(predictor_embed_dim)
        self.predictor_proj = nn.Linear(predictor_embed_dim, embed_dim, bias=True)
        trunc_normal_init_(self, init_std)
        # I-JEPA draws its mask token from trunc_normal(0.02), not zeros (reference, part D 8).
        nn.init.trunc_normal_(self.mask_token, std=init_std, a=-2.0, b=2.0)

    def forward(
        self, x: torch.Tensor, masks_ctx: list[torch.Tensor], masks_tgt: list[torch.Tensor]
    ) -> torch.Tensor:
        if not isinstance(masks_ctx, (list, tuple)):
            masks_ctx = [masks_ctx]
        if not isinstance(masks_tgt, (list, tuple)):
            masks_tgt = [masks_tgt]
        B = x.shape[0] // len(masks_ctx)
        pos = self.predictor_pos_embed.expand(B, -1, -1)
        x = self.predictor_embed(x) + apply_masks(pos, masks_ctx)
        n_ctx = x.shape[1]
        # Target queries: mask token + position, ordered (target mask, context mask, sample).
        tgt_pos = apply_masks(pos, masks_tgt)  # [npred * B, K, d]
        tgt_pos = repeat_interleave_batch(tgt_pos, B, len(masks_ctx))
        queries = self.mask_token.to(x.dtype) + tgt_pos
        x = torch.cat([x.repeat(len(masks_tgt), 1, 1), queries], dim=1)
        for blk in self.predictor_blocks:
            x = blk(x)
        x = self.predictor_norm(x)[:, n_ctx:]
        return self.predictor_proj(x)


def repeat_interleave_batch(x: torch.Tensor, B: int, repeat: int) -> torch.Tensor:
    """Split ``x`` into chunks of B rows and repeat each chunk ``repeat`` times in place.

    Same semantics as the official helper (ijepa:src/utils/tensors.py).
    """
    if repeat == 1:
        return x
    n = x.shape[0] // B
    return x.reshape(n, 1, B, *x.shape[1:]).expand(n, repeat, B, *x.shape[1:]).reshape(n * repeat * B, *x.shape[1:])


# name: (embed_dim, depth, num_heads, mlp_ratio), ijepa:src/models/vision_transformer.py
VIT_SIZES: dict[str, tuple[int, int, int, float]] = {
    "vit_tiny": (192, 12, 3, 4.0),
    "vit_small": (384, 12, 6, 4.0),
    "vit_base": (768, 12, 12, 4.0),
    "vit_large": (1024, 24, 16, 4.0),
    "vit_huge": (1280, 32, 16, 4.0),
    "vit_giant": (1408, 40, 16, 48 / 11),  # I-JEPA / V-JEPA ViT-g: 16 heads (head_dim 88)
}


def vit(name: str, **kwargs) -> VisionTransformer:
    """Build an official-size encoder by name (``vit_tiny`` .. ``vit_giant``)."""
    if name not in VIT_SIZES:
        raise KeyError(f"unknown ViT size {name!r}; valid sizes: {', '.join(VIT_SIZES)}")
    dim, depth, heads, ratio = VIT_SIZES[name]
    return VisionTransformer(embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=ratio, **kwargs)
