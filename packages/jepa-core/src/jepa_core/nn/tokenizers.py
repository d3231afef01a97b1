"""Tokenizers: input -> tokens ``[B, N, D]``, plus the token grid of an input
(:class:`jepa_core.nn.interfaces.Tokenizer`)."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


class PatchEmbed(nn.Module):
    """Image to patch tokens: Conv2d with kernel = stride = patch, flattened row-major
    (ijepa:src/models/vision_transformer.py ``PatchEmbed``; parameter ``proj``)."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768):
        super().__init__()
        self.patch_size, self.in_chans, self.embed_dim = patch_size, in_chans, embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def grid(self, x: torch.Tensor) -> tuple[int, int]:
        """``(H', W')`` patches of images ``x [B, C, H, W]`` (a remainder is dropped, as by the conv)."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected images [B, {self.in_chans}, H, W], got {tuple(x.shape)}")
        return x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Token-major and contiguous once here: the transposed view would otherwise carry its
        # layout through every residual add, and each LayerNorm and reshape would copy it.
        return rearrange(self.proj(x), "b d h w -> b (h w) d").contiguous()
