"""Clip transforms as in the official V-JEPA / V-JEPA 2 pretraining (no torchvision needed).

Input: a clip ``[T, H, W, C]`` (uint8 from a decoder, or float in 0-255), as a numpy array or
tensor. Output: float32 ``[C, T, size, size]``, normalised with the ImageNet mean and std.

Training (:class:`VideoTrainTransform`): one random-resized crop for the whole clip (area
scale in [0.3, 1.0], aspect ratio log-uniform in [0.75, 1.35], 10 tries, then a centre crop),
resized with ``F.interpolate(mode="bilinear", align_corners=False)``, flipped horizontally
with probability 0.5 (the same for every frame). No RandAugment, no random erasing.

Evaluation (:class:`VideoEvalTransform`): resize the short side to ``int(size * 256 / 224)``,
centre crop ``size``, normalise.

Randomness comes from ``generator`` (the global torch generator when None, which
:class:`jepa_core.data.StampedDataset` seeds per sample).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VideoTrainTransform",
    "VideoEvalTransform",
    "random_resized_crop_params",
    "to_tensor_clip",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_tensor_clip(clip) -> torch.Tensor:
    """A ``[T, H, W, C]`` array or tensor as a tensor (no copy when possible)."""
    t = torch.from_numpy(np.ascontiguousarray(clip)) if isinstance(clip, np.ndarray) else torch.as_tensor(clip)
    if t.ndim != 4:
        raise ValueError(f"expected a clip [T, H, W, C], got shape {tuple(t.shape)}")
    return t


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return float(torch.empty(1).uniform_(lo, hi, generator=generator))


def _randint(lo: int, hi_inclusive: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(lo, hi_inclusive + 1, (1,), generator=generator))


def random_resized_crop_params(
    height: int,
    width: int,
    scale: Sequence[float] = (0.3, 1.0),
    ratio: Sequence[float] = (0.75, 1.35),
    generator: torch.Generator | None = None,
    tries: int = 10,
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random crop covering ``scale`` of the area with aspect ratio
    ``w / h`` log-uniform in ``ratio``; after ``tries`` misses, the largest centred crop with
    an aspect ratio inside ``ratio``."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(tries):
        target = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(log_lo, log_hi, generator))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = _randint(0, height - h, generator)
            left = _randint(0, width - w, generator)
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[T, C, h, w]`` float -> ``[T, C, *size]`` (bilinear, align_corners=False)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class _Normalize:
    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        # Works on 0-255 values, as the official code (mean and std times 255).
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1, 1) * 255.0
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1, 1) * 255.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # [C, T, H, W]
        return (x - self.mean) / self.std


class VideoTrainTransform:
    """Clip-consistent random-resized crop, horizontal flip and normalisation.

    ``__call__(clip [T,H,W,C], generator=None) -> float32 [C, T, size, size]``.
    """

    def __init__(
        self,
        size: int | tuple[int, int] = 224,
        scale: Sequence[float] = (0.3, 1.0),
        ratio: Sequence[float] = (0.75, 1.35),
        hflip: float = 0.5,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        self.size: tuple[int, int] = (
            (size, size) if isinstance(size, int) else cast(tuple[int, int], tuple(size))
        )
        self.scale, self.ratio, self.hflip = tuple(scale), tuple(ratio), hflip
        self.normalize = _Normalize(mean, std)

    def __call__(self, clip, generator: torch.Generator | None = None) -> torch.Tensor:
        x = to_tensor_clip(clip)
        _, H, W, _ = x.shape
        top, left, h, w = random_resized_crop_params(H, W, self.scale, self.ratio, generator)
        x = x[:, top : top + h, left : left + w, :]  # crop first: less to convert and resize
        x = x.permute(0, 3, 1, 2).float()  # [T, C, h, w]
        x = _resize(x, self.size)
        if self.hflip > 0 and _uniform(0.0, 1.0, generator) < self.hflip:
            x = x.flip(-1)
        return self.normalize(x.permute(1, 0, 2, 3).contiguous())

    def __repr__(self) -> str:
        return (f"VideoTrainTransform(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
                f"hflip={self.hflip})")


class VideoEvalTransform:
    """Resize the short side to ``short_side`` (default ``int(size * 256 / 224)``), centre
    crop ``size``, normalise. ``__call__(clip [T,H,W,C]) -> float32 [C, T, size, size]``."""

    def __init__(
        self,
        size: int = 224,
        short_side: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        self.size = size
        self.short_side = short_side if short_side is not None else int(size * 256 / 224)
        if self.short_side < size:
            raise ValueError(f"short_side {self.short_side} is smaller than the crop {size}")
        self.normalize = _Normalize(mean, std)

    def __call__(self, clip, generator: torch.Generator | None = None) -> torch.Tensor:
        x = to_tensor_clip(clip).permute(0, 3, 1, 2).float()  # [T, C, H, W]
        H, W = x.shape[-2:]
        if H <= W:
            new = (self.short_side, max(self.short_side, int(round(W * self.short_side / H))))
        else:
            new = (max(self.short_side, int(round(H * self.short_side / W))), self.short_side)
        x = _resize(x, new)
        top, left = (new[0] - self.size) // 2, (new[1] - self.size) // 2
        x = x[..., top : top + self.size, left : left + self.size]
        return self.normalize(x.permute(1, 0, 2, 3).contiguous())

    def __repr__(self) -> str:
        return f"VideoEvalTransform(size={self.size}, short_side={self.short_side})"
