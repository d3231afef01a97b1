"""MAMP's skeleton preprocessing chain on ``(C, T, V, M)`` tensors.

The chain of MAMP (Mao et al., "Masked Motion Predictors are Strong 3D Action Representation
Learners", ICCV 2023), which S-JEPA (Abdelfattah and Alahi, ECCV 2024) builds on:

1. :func:`center`: translate the sequence so that the centre joint (NTU: middle of the spine)
   of body 0 in its first valid frame is the origin; frames where a body is absent stay zero
   (``MAMP:data/ntu/seq_transformation.py``, ``seq_translation``, done offline there).
2. :func:`valid_crop_resize`: crop the valid frames, at random (training) or in the centre
   (test), and resize them linearly to a fixed window (``MAMP:feeder/tools.py``,
   ``valid_crop_resize``; window 120, ``p_interval`` [0.5, 1] for training and [0.95] for
   test in MAMP's configs).
3. :func:`random_rotation` (training only): one random rotation about x, y and z, each angle
   uniform in [-0.3, 0.3] rad, the same for every frame (``MAMP:feeder/tools.py``,
   ``random_rot``).

Randomness comes from an optional ``torch.Generator``; without one the global torch generator
is used (the Trainer seeds it for each sample). Inputs may be tensors or arrays; outputs are
float32 tensors. A sample without a valid frame, or with a non-finite coordinate, raises
:class:`jepa_core.data.CorruptSampleError`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jepa_core.data import CorruptSampleError

from .graph import NTU25, SkeletonGraph, get_graph

__all__ = ["MAMPTransform", "center", "check_finite", "random_rotation", "rotation_matrix",
           "valid_crop_resize", "valid_frames", "valid_mask"]

MAMP_MAX_ANGLE_DEG = math.degrees(0.3)  # random_rot's theta = 0.3 rad (about 17.2 degrees)


def _as_tensor(x) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() != 4:
        raise ValueError(f"expected a (C, T, V, M) sample, got shape {tuple(x.shape)}")
    return x.float()


def check_finite(x) -> torch.Tensor:
    """``x`` as a float tensor; raises CorruptSampleError when a coordinate is NaN or inf."""
    x = _as_tensor(x)
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).sum().item()
        raise CorruptSampleError(f"skeleton sample has {bad} non-finite coordinates")
    return x


def valid_mask(x) -> torch.Tensor:
    """Bool ``(T,)``: frames where some joint of some body is non-zero."""
    return (_as_tensor(x) != 0).flatten(2).permute(1, 0, 2).flatten(1).any(1)


def valid_frames(x) -> int:
    """Number of frames where some joint is non-zero (MAMP's ``valid_frame_num``; the valid
    frames are assumed to come first, followed by zero padding)."""
    return int(valid_mask(x).sum().item())


def center(x, graph: SkeletonGraph | str = NTU25) -> torch.Tensor:
    """Subtract the centre joint of body 0's first valid frame from every coordinate; joints
    of a body in a frame where that body is absent (all zero) stay zero.

    If body 0 never appears, the first body that does is used. Raises CorruptSampleError when
    no frame is valid.
    """
    x = _as_tensor(x)
    graph = get_graph(graph)
    graph.validate(x)
    present = (x != 0).any(0).any(1)  # (T, M): body m is in frame t
    for m in range(x.shape[-1]):
        frames = torch.nonzero(present[:, m]).flatten()
        if len(frames):
            origin = x[:, frames[0], graph.center, m]
            break
    else:
        raise CorruptSampleError("skeleton sample has no valid frame")
    out = x - origin[:, None, None, None]
    return out * present[None, :, None, :].to(out.dtype)


def valid_crop_resize(
    x,
    num_valid: int,
    p_interval: Sequence[float] = (0.5, 1.0),
    window: int = 120,
    generator: torch.Generator | None = None,
    min_length: int = 64,
) -> torch.Tensor:
    """Crop the first ``num_valid`` frames and resize the crop to ``window`` frames.

    With one ratio ``p`` (test): the centre ``num_valid - 2 * int((1 - p) * num_valid / 2)``
    frames. With two ``(lo, hi)`` (training): ``p ~ U(lo, hi)``, length
    ``clip(floor(num_valid * p), min_length, num_valid)`` at a uniform random start. The crop
    is resized along time by linear interpolation with ``align_corners=False`` (MAMP's
    bilinear ``F.interpolate`` over a ``(C*V*M, T)`` image, whose other axis keeps its size).
    """
    x = _as_tensor(x)
    num_valid = int(num_valid)
    if num_valid <= 0:
        raise CorruptSampleError("skeleton sample has no valid frame")
    num_valid = min(num_valid, x.shape[1])
    if len(p_interval) == 1:
        bias = int((1 - p_interval[0]) * num_valid / 2)
        start, length = bias, num_valid - 2 * bias
    elif len(p_interval) == 2:
        lo, hi = p_interval
        p = lo + (hi - lo) * torch.rand((), generator=generator).item()
        length = min(max(math.floor(num_valid * p), min_length), num_valid)
        start = int(torch.randint(0, num_valid - length + 1, (), generator=generator))
    else:
        raise ValueError(f"p_interval must have 1 or 2 values, got {tuple(p_interval)}")
    if length <= 0:
        raise CorruptSampleError(f"empty crop of {num_valid} valid frames")
    crop = x[:, start:start + length]
    C, _, V, M = x.shape
    seq = crop.permute(0, 2, 3, 1).reshape(1, C * V * M, length)
    seq = F.interpolate(seq, size=window, mode="linear", align_corners=False)
    return seq.reshape(C, V, M, window).permute(0, 3, 1, 2).contiguous()


def rotation_matrix(angles: torch.Tensor) -> torch.Tensor:
    """float64 ``R = Rz @ Ry @ Rx`` for ``angles = (ax, ay, az)`` in radians (right-handed
    rotations about the x, y and z axes)."""
    angles = torch.as_tensor(angles, dtype=torch.float64)
    cx, cy, cz = torch.cos(angles).tolist()
    sx, sy, sz = torch.sin(angles).tolist()
    f64 = torch.float64
    rx = torch.tensor([[1.0, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=f64)
    ry = torch.tensor([[cy, 0, sy], [0, 1.0, 0], [-sy, 0, cy]], dtype=f64)
    rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1.0]], dtype=f64)
    return rz @ ry @ rx


def random_rotation(
    x,
    max_angle_deg: float = MAMP_MAX_ANGLE_DEG,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Rotate every frame and body by one random rotation: angles about x, y and z each
    uniform in ``[-max_angle_deg, max_angle_deg]`` (MAMP: 0.3 rad), ``R = Rz Ry Rx``.
    Zero (padding) joints stay zero."""
    x = _as_tensor(x)
    if x.shape[0] != 3:
        raise ValueError(f"random_rotation needs 3 coordinates, got {x.shape[0]}")
    a = math.radians(max_angle_deg)
    angles = (torch.rand(3, generator=generator, dtype=torch.float64) * 2 - 1) * a
    r = rotation_matrix(angles).to(x.dtype)
    return torch.einsum("ij,jtvm->itvm", r, x).contiguous()


class MAMPTransform:
    """MAMP's per-sample chain: :func:`center` (when ``center``), :func:`valid_crop_resize`
    to ``window`` frames and, for training when ``rotate``, :func:`random_rotation`.

    ``p_interval`` defaults to ``(0.5, 1.0)`` for training and ``(0.95,)`` for test. Call as
    ``transform(x, generator=None)`` with ``x`` ``(C, T, V, M)``. Raises CorruptSampleError
    for a sample with no valid frame or a non-finite coordinate.
    """

    def __init__(
        self,
        train: bool,
        window: int = 120,
        p_interval: Sequence[float] | None = None,
        rotate: bool = True,
        graph: SkeletonGraph | str = NTU25,
        center: bool = True,
        max_angle_deg: float = MAMP_MAX_ANGLE_DEG,
        min_length: int = 64,
    ):
        self.train, self.window, self.rotate = bool(train), int(window), bool(rotate)
        self.p_interval = tuple(p_interval) if p_interval is not None else (
            (0.5, 1.0) if train else (0.95,))
        self.graph = get_graph(graph)
        self.center, self.max_angle_deg, self.min_length = center, max_angle_deg, min_length

    def __call__(self, x, generator: torch.Generator | None = None) -> torch.Tensor:
        x = check_finite(x)
        self.graph.validate(x)
        n = valid_frames(x)
        if n == 0:
            raise CorruptSampleError("skeleton sample has no valid frame")
        if self.center:
            x = center(x, self.graph)
        x = valid_crop_resize(x, n, self.p_interval, self.window, generator, self.min_length)
        if self.train and self.rotate and x.shape[0] == 3:
            x = random_rotation(x, self.max_angle_deg, generator)
        return x

    def __repr__(self) -> str:
        return (f"MAMPTransform(train={self.train}, window={self.window}, "
                f"p_interval={self.p_interval}, rotate={self.rotate}, graph={self.graph.name}, "
                f"center={self.center})")
