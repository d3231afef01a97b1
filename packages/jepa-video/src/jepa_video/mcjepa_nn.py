"""MC-JEPA networks: pyramid encoders shared by flow and content, and a PWC-style flow estimator.

MC-JEPA paper (arXiv 2307.12698): one encoder yields a feature pyramid for two frames; a
coarse-to-fine flow estimator runs on the two pyramids; the pooled coarsest level gives the
content features trained with VICReg. There is no official code; details marked "not stated"
are not stated in the sources we could check.

Pyramids return features finest-first; level ``l`` (0-based) has stride ``2**(l+1)`` and size
``ceil(H / 2**(l+1)) x ceil(W / 2**(l+1))`` for any input size (odd sizes are padded by one
row/column on the bottom/right before each stride-2 step, so no pixel is dropped).
Flows follow :mod:`jepa_video.flow_ops` (``[B, 2, h, w]``, x then y, pixels of that level).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F
from jepa_core.nn.layers import DropPath

from .flow_ops import local_correlation, upsample_flow, warp

__all__ = ["ConvNeXtBlock", "ConvNeXtPyramid", "ConvPyramid", "FlowEstimator", "LayerNorm2d"]


def _pad_even(x: torch.Tensor) -> torch.Tensor:
    """Pad odd H / W by one zero row / column at the bottom / right (so stride 2 gives ceil)."""
    h, w = x.shape[-2:]
    return F.pad(x, (0, w % 2, 0, h % 2)) if (h % 2 or w % 2) else x


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of ``[B, C, H, W]`` (each position normalised on its own)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _PyramidBase(nn.Module):
    dims: tuple[int, ...]

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(2 ** (i + 1) for i in range(len(self.dims)))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Content features ``[B, dims[-1]]``: global average of the coarsest level."""
        return self.forward(x)[-1].mean(dim=(-2, -1))


class ConvPyramid(_PyramidBase):
    """Small CPU-friendly pyramid: per level a strided 3x3 conv, GELU, 3x3 conv.

    ``forward(x [B, in_chans, H, W]) -> [f_0, ..., f_{L-1}]`` finest-first, ``f_l`` is
    ``[B, channels[l], ceil(H / 2**(l+1)), ceil(W / 2**(l+1))]``. A GELU also precedes every
    level after the first (so two levels are never a single linear map).
    """

    def __init__(self, in_chans: int = 3, channels: Sequence[int] = (16, 32, 48, 64)):
        super().__init__()
        self.dims = tuple(int(c) for c in channels)
        ins = (in_chans,) + self.dims[:-1]
        self.levels = nn.ModuleList(
            nn.Sequential(
                nn.GELU() if i else nn.Identity(),
                nn.Conv2d(cin, cout, 3, stride=2, padding=1),
                nn.GELU(),
                nn.Conv2d(cout, cout, 3, padding=1),
            )
            for i, (cin, cout) in enumerate(zip(ins, self.dims))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for level in self.levels:
            x = level(x)
            feats.append(x)
        return feats


class ConvNeXtBlock(nn.Module):
    """``x + gamma * MLP(LN(dwconv7x7(x)))``; MLP is 4x wide with GELU, ``gamma`` starts at 1e-6."""

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale)))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # channels-last for LN and the MLP
        y = self.fc2(self.act(self.fc1(self.norm(y)))) * self.gamma
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class ConvNeXtPyramid(_PyramidBase):
    """ConvNeXt-T-like encoder with a split stem: 6 levels at strides 2, 4, 8, 16, 32, 64.

    MC-JEPA paper (arXiv 2307.12698) splits ConvNeXt-T's 4x4 stride-4 stem into a 3x3 and a
    4x4 conv to get a finer pyramid level (~21 M parameters reported). The channels are not
    stated in the sources we could check; we follow an unofficial reimplementation:
    ``stem_dims + dims = (48, 48, 96, 192, 384, 768)``. With the defaults this gives 27.9 M
    parameters, more than the ~21 M reported; the difference is not explained in the sources
    we could check (smaller ``dims`` / ``depths`` can match it).

    * level 0 (stride 2): 3x3 stride-2 conv, LayerNorm;
    * level 1 (stride 4): GELU, 4x4 stride-2 conv, LayerNorm (the norms/activation in the
      stem are not stated; our choice);
    * levels 2-5 (strides 8-64): downsampling LayerNorm + 2x2 stride-2 conv, then ``depths[i]``
      ConvNeXt blocks (7x7 depthwise conv, LN, 4x MLP with GELU, layer scale 1e-6).

    ``drop_path`` is the maximum stochastic-depth rate (linear over blocks, ConvNeXt's rule).
    ``forward(x) -> 6 features finest-first``; ``pooled(x) -> [B, dims[-1]]``.
    """

    def __init__(
        self,
        in_chans: int = 3,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        stem_dims: Sequence[int] = (48, 48),
        drop_path: float = 0.0,
        layer_scale: float = 1e-6,
    ):
        super().__init__()
        if len(depths) != len(dims) or len(stem_dims) != 2:
            raise ValueError("need len(depths) == len(dims) and two stem_dims")
        s0, s1 = (int(d) for d in stem_dims)
        self.dims = (s0, s1) + tuple(int(d) for d in dims)
        self.stem0 = nn.Sequential(nn.Conv2d(in_chans, s0, 3, stride=2, padding=1), LayerNorm2d(s0, eps=1e-6))
        self.stem1 = nn.Sequential(nn.GELU(), nn.Conv2d(s0, s1, 4, stride=2, padding=1), LayerNorm2d(s1, eps=1e-6))
        rates = torch.linspace(0, drop_path, sum(depths)).tolist()
        self.downs, self.stages = nn.ModuleList(), nn.ModuleList()
        cin, k = s1, 0
        for depth, dim in zip(depths, dims):
            self.downs.append(nn.Sequential(LayerNorm2d(cin, eps=1e-6), nn.Conv2d(cin, dim, 2, stride=2)))
            self.stages.append(nn.Sequential(*(ConvNeXtBlock(dim, rates[k + j], layer_scale) for j in range(depth))))
            cin, k = dim, k + depth
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem0(x)
        feats = [x]
        x = self.stem1(_pad_even(x))
        feats.append(x)
        for down, stage in zip(self.downs, self.stages):
            x = stage(down(_pad_even(x)))
            feats.append(x)
        return feats


def _level_net(cin: int, hidden: Sequence[int], slope: float) -> nn.Sequential:
    """3x3 convs, each followed by LayerNorm over channels and LeakyReLU; last conv to 2 channels."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Conv2d(cin, h, 3, padding=1), LayerNorm2d(h), nn.LeakyReLU(slope)]
        cin = h
    layers.append(nn.Conv2d(cin, 2, 3, padding=1))
    return nn.Sequential(*layers)


class FlowEstimator(nn.Module):
    """PWC-Net-style coarse-to-fine flow on two feature pyramids (separate weights per level).

    ``feature_dims``: channels per level, finest-first (a pyramid's ``dims``). At the coarsest
    level the flow is predicted from ``[f1, corr(f1, f2)]``; at each finer level the previous
    flow is upsampled (:func:`upsample_flow`), ``f2`` is warped with it and a *residual* flow is
    predicted from ``[f1, corr(f1, warped f2), upsampled flow]``. ``corr`` is
    :func:`local_correlation` with ``radius``. Every hidden conv is followed by a LayerNorm
    over channels (MC-JEPA paper (arXiv 2307.12698): critical for stability) and LeakyReLU 0.1
    (the activation is not stated in the sources we could check; PWC-Net's). With
    ``max_flow`` (a float, or one per level finest-first) each level's flow is clamped to
    ``[-max_flow, max_flow]`` pixels of that level (the paper clips flow; the bound is not
    stated). ``zero_init`` zeroes each level's last conv so the initial flow is 0. ``normalize``
    layer-normalises each pixel's features over channels before the cost volume and the nets
    (not stated in the sources we could check; it makes the matching independent of the
    features' scale, which is small early in training).

    ``forward(feats1, feats2) -> [flow_0, ..., flow_{L-1}]`` finest-first, ``flow_l`` is
    ``[B, 2, h_l, w_l]``: ``flow_{1->2}`` in pixels of level ``l``.
    """

    def __init__(
        self,
        feature_dims: Sequence[int],
        radius: int = 4,
        hidden: Sequence[int] = (128, 96, 64),
        max_flow: float | Sequence[float] | None = None,
        zero_init: bool = False,
        negative_slope: float = 0.1,
        normalize: bool = False,
    ):
        super().__init__()
        self.normalize = normalize
        self.feature_dims = tuple(int(d) for d in feature_dims)
        self.radius = int(radius)
        n = len(self.feature_dims)
        if max_flow is None or isinstance(max_flow, int | float):
            self.max_flow = [max_flow] * n
        else:
            self.max_flow = [float(m) for m in max_flow]
            if len(self.max_flow) != n:
                raise ValueError(f"max_flow has {len(self.max_flow)} entries for {n} levels")
        ncorr = (2 * self.radius + 1) ** 2
        self.nets = nn.ModuleList(
            _level_net(d + ncorr + (2 if i < n - 1 else 0), hidden, negative_slope)
            for i, d in enumerate(self.feature_dims)
        )
        if zero_init:
            for net in self.nets:
                last = cast(nn.Conv2d, cast(nn.Sequential, net)[-1])  # _level_net ends in a Conv2d
                assert last.bias is not None  # built with bias=True
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)

    def forward(self, feats1: Sequence[torch.Tensor], feats2: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(feats1) != len(self.nets) or len(feats2) != len(self.nets):
            raise ValueError(f"expected {len(self.nets)} levels, got {len(feats1)} and {len(feats2)}")
        flows: list[torch.Tensor] = []
        flow = None
        for i in reversed(range(len(self.nets))):
            f1, f2 = feats1[i], feats2[i]
            if self.normalize:  # per-pixel LayerNorm over channels: the cost volume ignores feature scale
                f1 = F.layer_norm(f1.transpose(1, -1), (f1.shape[1],)).transpose(1, -1)
                f2 = F.layer_norm(f2.transpose(1, -1), (f2.shape[1],)).transpose(1, -1)
            if flow is None:
                x = torch.cat((f1, local_correlation(f1, f2, self.radius)), 1)
                flow = self.nets[i](x)
            else:
                up = upsample_flow(flow, f1.shape[-2:])
                corr = local_correlation(f1, warp(f2, up), self.radius)
                flow = up + self.nets[i](torch.cat((f1, corr, up), 1))
            if self.max_flow[i] is not None:
                flow = flow.clamp(-self.max_flow[i], self.max_flow[i])
            flows.append(flow)
        return flows[::-1]
