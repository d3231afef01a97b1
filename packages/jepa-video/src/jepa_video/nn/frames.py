"""An image encoder applied to a clip frame by frame: the usual baseline for video models.

V-JEPA (Bardes et al. 2024, Sec. 5) compares its video encoders with image encoders (I-JEPA,
DINOv2, OpenCLIP) that see every frame on its own. :class:`FrameByFrame` does this for any
encoder that maps ``[B, C, H, W]`` to tokens ``[B, N, D]``: it encodes the frames
``0, stride, 2 * stride, ...`` of a ``[B, C, T, H, W]`` clip independently and returns their
tokens side by side, ``[B, T' * N, D]`` (frame-major), ready for an attentive probe.

An image encoder knows nothing of time: without help, a probe that pools these tokens cannot
tell a clip from the same clip played backwards. ``temporal_embedding=True`` (default) adds a
fixed 1-D sin-cos table over the frame index to each frame's tokens, so the probe knows the
order of the frames and the baseline is not handicapped by construction; what it still lacks
is any modelling *across* frames inside the encoder, which is what a video encoder adds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from jepa_core.nn.pos_embed import sincos_1d
from torch import nn

__all__ = ["FrameByFrame"]


class FrameByFrame(nn.Module):
    """``forward(clips [B, C, T, H, W]) -> [B, ceil(T / stride) * N, D]``.

    ``stride``: encode every ``stride``-th frame (the video encoder's tubelet size gives both
    models the same number of tokens). ``embed_dim``: the image encoder's output width, read
    from ``image_encoder.embed_dim`` when not given (needed for the temporal table).

    It is a :class:`jepa_core.nn.interfaces.Encoder` when the image encoder is one
    (``num_heads``, ``depth`` and ``return_layers`` are the image encoder's; token masks are not
    supported), and exposes the image encoder's ``blocks`` and ``norm`` for partial fine-tuning.
    """

    def __init__(self, image_encoder: nn.Module, stride: int = 1, temporal_embedding: bool = True,
                 embed_dim: int | None = None):
        super().__init__()
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.image_encoder, self.stride, self.temporal_embedding = image_encoder, stride, temporal_embedding
        self.embed_dim = embed_dim if embed_dim is not None else getattr(image_encoder, "embed_dim", None)
        if temporal_embedding and self.embed_dim is None:
            raise ValueError("temporal_embedding needs embed_dim (the image encoder has no .embed_dim)")
        self.num_heads = getattr(image_encoder, "num_heads", None)  # read by jepa-eval's attentive probe
        self.depth = getattr(image_encoder, "depth", None)

    @property
    def blocks(self) -> nn.ModuleList:
        return cast(nn.ModuleList, self.image_encoder.blocks)

    @property
    def norm(self) -> nn.Module:
        return cast(nn.Module, self.image_encoder.norm)

    def forward(
        self, clips: torch.Tensor, masks=None, return_layers: Sequence[int] | None = None
    ) -> torch.Tensor | list[torch.Tensor]:
        if clips.ndim != 5:
            raise ValueError(f"expected clips [B, C, T, H, W], got {tuple(clips.shape)}")
        if masks is not None:
            raise ValueError("FrameByFrame encodes whole frames; token masks are not supported")
        b = clips.shape[0]
        frames = clips[:, :, :: self.stride].transpose(1, 2).flatten(0, 1)  # [B * T', C, H, W]
        if return_layers is None:
            return self._to_clip_tokens(self.image_encoder(frames), b)
        return [self._to_clip_tokens(t, b) for t in self.image_encoder(frames, return_layers=return_layers)]

    def _to_clip_tokens(self, tokens: torch.Tensor, b: int) -> torch.Tensor:
        """Frame tokens ``[B * T', N, D]`` -> clip tokens ``[B, T' * N, D]`` (+ the frame-index table)."""
        if tokens.ndim != 3:
            raise ValueError(f"the image encoder must return tokens [B, N, D], got {tuple(tokens.shape)}")
        tokens = tokens.unflatten(0, (b, -1))  # [B, T', N, D]
        if self.temporal_embedding:
            table = sincos_1d(tokens.shape[-1], torch.arange(tokens.shape[1])).to(tokens)
            tokens = tokens + table[None, :, None, :]
        return tokens.flatten(1, 2)
