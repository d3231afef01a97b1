"""Skeleton graphs: the joints of a body layout, its bones and the joint used for centring.

Two layouts are defined:

* :data:`NTU25`: the 25 Kinect v2 joints of NTU RGB+D 60/120 (Shahroudy et al., CVPR 2016;
  Liu et al., TPAMI 2019). The bones are the 24 standard pairs of the skeleton-action
  literature (``2s-AGCN:graph/ntu_rgb_d.py``, and the ``ntu_pairs`` of
  ``MAMP:feeder/feeder_ntu.py`` without its ``(21, 21)`` self-pair), written 0-based as
  ``(child, parent)``: every joint but the spine-shoulder joint (index 20) has exactly one
  parent, so the bones form a tree rooted there. The centre is the middle of the spine (index
  1, joint 2 in the 1-based numbering of the dataset), the origin MAMP translates every
  sequence to (``MAMP:data/ntu/seq_transformation.py``, ``seq_translation``).
* :data:`COCO17`: the 17 COCO keypoints (Lin et al., ECCV 2014) as estimated by 2-D pose
  detectors, with the 19 links of the COCO keypoint skeleton (0-based). COCO has no pelvis
  joint; the centre is the nose (index 0), the choice of PYSKL's COCO graph.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COCO17", "GRAPHS", "NTU25", "SkeletonGraph", "get_graph"]


@dataclass(frozen=True)
class SkeletonGraph:
    """A body layout: ``num_joints`` joints, 0-based bone pairs and the centring joint."""

    name: str
    num_joints: int
    edges: tuple[tuple[int, int], ...]
    center: int
    joint_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.joint_names) != self.num_joints:
            raise ValueError(f"{self.name}: {len(self.joint_names)} joint names for "
                             f"{self.num_joints} joints")
        if not 0 <= self.center < self.num_joints:
            raise ValueError(f"{self.name}: centre joint {self.center} out of range")
        for a, b in self.edges:
            if not (0 <= a < self.num_joints and 0 <= b < self.num_joints) or a == b:
                raise ValueError(f"{self.name}: bad bone ({a}, {b})")

    def validate(self, x, joint_dim: int = -2) -> None:
        """Check that ``x`` (any array or tensor) has ``num_joints`` joints on ``joint_dim``.

        The default ``joint_dim=-2`` fits the ``(C, T, V, M)`` layout; pass ``joint_dim`` for
        others, e.g. ``1`` for ``(T, V, C)``. Raises ValueError naming both counts.
        """
        shape = tuple(x.shape)
        if len(shape) < (joint_dim + 1 if joint_dim >= 0 else -joint_dim):
            raise ValueError(f"{self.name}: expected an array with a joint axis {joint_dim}, "
                             f"got shape {shape}")
        got = shape[joint_dim]
        if got != self.num_joints:
            raise ValueError(f"{self.name} expects {self.num_joints} joints, got {got} "
                             f"(shape {shape}, joint axis {joint_dim})")

    def parents(self) -> tuple[int, ...]:
        """Parent of each joint (-1 for a root) when the bones form a tree of
        ``(child, parent)`` pairs; raises ValueError when a joint has two parents."""
        parent = [-1] * self.num_joints
        for child, par in self.edges:
            if parent[child] != -1:
                raise ValueError(f"{self.name}: joint {child} has two parents")
            parent[child] = par
        return tuple(parent)


_NTU_NAMES = (
    "spine_base", "spine_mid", "neck", "head",
    "left_shoulder", "left_elbow", "left_wrist", "left_hand",
    "right_shoulder", "right_elbow", "right_wrist", "right_hand",
    "left_hip", "left_knee", "left_ankle", "left_foot",
    "right_hip", "right_knee", "right_ankle", "right_foot",
    "spine_shoulder", "left_hand_tip", "left_thumb", "right_hand_tip", "right_thumb",
)
# 1-based (child, parent) pairs of the NTU skeleton, as listed in the literature above.
_NTU_PAIRS_1 = (
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
    (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
    (20, 19), (22, 23), (23, 8), (24, 25), (25, 12),
)

NTU25 = SkeletonGraph(
    name="ntu25",
    num_joints=25,
    edges=tuple((a - 1, b - 1) for a, b in _NTU_PAIRS_1),
    center=1,
    joint_names=_NTU_NAMES,
)

COCO17 = SkeletonGraph(
    name="coco17",
    num_joints=17,
    edges=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
        (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    ),
    center=0,
    joint_names=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
)

GRAPHS: dict[str, SkeletonGraph] = {"ntu25": NTU25, "coco17": COCO17}


def get_graph(name: str | SkeletonGraph) -> SkeletonGraph:
    """The graph called ``name`` (case-insensitive; a :class:`SkeletonGraph` passes through)."""
    if isinstance(name, SkeletonGraph):
        return name
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in GRAPHS:
        raise ValueError(f"unknown skeleton graph {name!r}; valid names: {sorted(GRAPHS)}")
    return GRAPHS[key]
