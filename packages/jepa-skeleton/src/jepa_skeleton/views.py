"""S-JEPA's Multi-Axis Projection (MAP) view (Abdelfattah & Alahi, ECCV 2024, Fig. 2): the 3-D
skeleton is rotated, then projected to 2-D by dropping one axis, and the view encoder sees that
partial 2-D sequence while the EMA target encoder sees the 3-D one.

Not stated by the paper (no code was released), chosen here, each a config key of
:class:`jepa_skeleton.sjepa.SJEPAModelConfig`:

- the rotation: angles drawn uniformly in ``[-a_k, a_k]`` about x, y and z
  (``model.projection_angles``, default MAMP's ``random_rot`` range 0.3 rad, ``R = Rz Ry Rx``);
- which axis is dropped: uniformly among ``model.projection_axes`` (default all three), one per
  sample, shared by its persons;
- the 2-D input keeps 3 channels with the dropped one set to zero, since the EMA target shares
  the view encoder's stem and takes 3-D input;
- the target sees the rotated 3-D skeleton (``model.rotate_target``, default true), so the view
  differs from the target by the dropped axis and the mask only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["draw_views", "project", "rotate", "rotation_matrices"]


def rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """``[B, 3] -> [B, 3, 3]``: ``R = Rz Ry Rx`` for angles (x, y, z) in radians (the order of
    MAMP's ``random_rot``, ``MAMP:feeder/tools.py``)."""
    cx, cy, cz = angles.cos().unbind(-1)
    sx, sy, sz = angles.sin().unbind(-1)
    one, zero = torch.ones_like(cx), torch.zeros_like(cx)
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).view(-1, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).view(-1, 3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).view(-1, 3, 3)
    return rz @ ry @ rx


def draw_views(batch_size: int, generator: torch.Generator, angles: Sequence[float],
               axes: Sequence[int]) -> dict[str, torch.Tensor]:
    """The random parameters of ``batch_size`` views, from ``generator``: ``rotation [B, 3, 3]``
    and ``drop_axis [B]`` (an entry of ``axes``)."""
    bound = torch.tensor(angles, dtype=torch.float32)
    theta = (torch.rand(batch_size, 3, generator=generator) * 2 - 1) * bound
    pick = torch.randint(len(axes), (batch_size,), generator=generator)
    return {"rotation": rotation_matrices(theta), "drop_axis": torch.tensor(axes, dtype=torch.long)[pick]}


def rotate(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate skeletons ``[B, 3, T, V, M]`` (zero padding stays zero) by ``rotation [B, 3, 3]``."""
    return torch.einsum("bij,bj...->bi...", rotation.to(x.dtype), x)


def project(x: torch.Tensor, drop_axis: torch.Tensor) -> torch.Tensor:
    """The 2-D projection of skeletons ``[B, 3, ...]``: channel ``drop_axis[b]`` of sample b set to
    zero, the other two unchanged."""
    keep = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)
    keep[torch.arange(x.shape[0], device=x.device), drop_axis.to(x.device)] = 0
    return x * keep.view(*keep.shape, *([1] * (x.ndim - 2)))
