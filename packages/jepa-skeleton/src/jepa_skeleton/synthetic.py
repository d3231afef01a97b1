"""Procedural 3-D skeleton actions on the NTU RGB+D 25-joint body, made on the spot.

Each sample is one person performing one of :data:`ACTIONS` (repeated movements of the arms,
legs or trunk) for a random number of cycles. The body is kinematic: every joint is its
parent's position plus a bone of fixed length along a unit direction driven by joint angles,
so each bone of :data:`jepa_skeleton.graph.NTU25` keeps its length through the sequence
(before the optional joint noise). Per sample, at random:

* body proportions: an overall scale (0.75-1.25) and a per-bone length factor (0.85-1.15);
* the rest pose of the arms (about 12 degrees) and the amplitude of the movement (0.55-1.25);
* speed (0.7-3.5 cycles over the sequence) and phase;
* an idle movement common to every class: the trunk sways (bend and turn) and the arms swing
  a little at a frequency and phase of their own, so no class is the only one that moves a
  part of the body;
* viewpoint: a rotation about the vertical axis over the whole circle, a camera tilt
  (elevation, +-30 degrees) and roll (+-10 degrees), then a global position in camera space
  (x right, y up, z away from the camera, metres, 2-4 m in front of the camera as in NTU
  RGB+D);
* the number of valid frames: half the samples use every frame, the others end with 0-40 %
  zero frames (so code that crops the valid frames is exercised);
* Gaussian joint noise of standard deviation ``noise`` (metres) on the valid frames and, when
  ``noise > 0``, an occlusion in 30 % of the samples: 1-3 joints stuck near one position
  (jitter ``5 x noise``) for 20-50 % of the valid frames, as a tracker that lost them.

A sample is a pure function of ``(seed, index)``: its parameters come from
``numpy.random.default_rng([seed, index])`` and the label is ``index % num_classes`` (so
classes are balanced). The layout matches the NTU arrays of :func:`jepa_skeleton.ntu.
convert_ntu`: ``(C=3, T, V=25, M)``, body 0 the actor, other bodies zero.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["ACTIONS", "SyntheticSkeletonActions", "generate_arrays", "write_npz"]

ACTIONS = (
    "wave_right_hand", "wave_left_hand", "arms_up_down", "kick_right", "squat",
    "walk_in_place", "bow", "twist", "punch_right", "clap",
)

# bone lengths (metres) of an average adult, by 0-based NTU joint index of the bone's child
_BONE = {
    1: 0.26,  # spine_base -> spine_mid
    20: 0.24,  # spine_mid -> spine_shoulder
    2: 0.08, 3: 0.14,  # neck, head
    4: 0.17, 8: 0.17,  # spine_shoulder -> shoulders
    5: 0.28, 9: 0.28,  # upper arms
    6: 0.25, 10: 0.25,  # forearms (elbow -> wrist)
    7: 0.07, 11: 0.07,  # wrist -> hand
    22: 0.05, 24: 0.05,  # hand -> thumb
    21: 0.06, 23: 0.06,  # thumb -> hand tip
    12: 0.09, 16: 0.09,  # spine_base -> hips
    13: 0.42, 17: 0.42,  # thighs
    14: 0.40, 18: 0.40,  # shins
    15: 0.12, 19: 0.12,  # ankle -> foot
}
_BONE_IDS = tuple(sorted(_BONE))
_FWD = np.array([0.0, 0.0, -1.0])  # the person faces the camera (-z) before the viewpoint


def _rot(v: np.ndarray, a: np.ndarray, axis: int) -> np.ndarray:
    """Rotate vectors ``v (..., 3)`` by angles ``a (...)`` (radians) about x, y or z."""
    c, s = np.cos(a), np.sin(a)
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    if axis == 0:
        return np.stack([x, c * y - s * z, s * y + c * z], -1)
    if axis == 1:
        return np.stack([c * x + s * z, y, -s * x + c * z], -1)
    return np.stack([c * x - s * y, s * x + c * y, z], -1)


def _limb(theta: np.ndarray, phi: np.ndarray, side: float) -> np.ndarray:
    """Unit direction of an arm segment: ``theta`` from hanging down (0) through horizontal
    (pi/2) to straight up (pi); azimuth ``phi`` 0 sideways outwards, pi/2 forwards. ``side``
    +1 for the left arm (towards +x), -1 for the right."""
    st = np.sin(theta)
    return np.stack([side * st * np.cos(phi), -np.cos(theta), -st * np.sin(phi)], -1)


def _leg(a: np.ndarray, side: float) -> np.ndarray:
    """Unit direction of a leg segment swung forwards by ``a`` (radians) from vertical."""
    d = np.stack([np.full_like(a, 0.06 * side), -np.cos(a), -np.sin(a)], -1)
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _params(seed: int, index: int, num_frames: int, num_classes: int) -> dict:
    """The random parameters of sample ``index`` (a pure function of seed and index)."""
    rng = np.random.default_rng([int(seed), int(index)])
    full = rng.random() < 0.5
    valid = num_frames if full else int(rng.integers(max(2, int(np.ceil(0.6 * num_frames))),
                                                     num_frames + 1))
    return {
        "label": int(index) % num_classes,
        "valid": valid,
        "scale": rng.uniform(0.75, 1.25),
        "bones": rng.uniform(0.85, 1.15, len(_BONE_IDS)),
        "cycles": rng.uniform(0.7, 3.5),
        "phase": rng.uniform(0, 2 * np.pi),
        "amp": rng.uniform(0.55, 1.25),
        "rest": rng.normal(0, np.radians(12), 4),  # arm rest-pose offsets
        # idle movement of every actor: trunk sway and arm swing at their own frequency
        "idle": rng.uniform(0, 1, 3) * np.radians([10.0, 15.0, 20.0]),
        "idle_cycles": rng.uniform(0.5, 2.5),
        "idle_phase": rng.uniform(0, 2 * np.pi),
        "yaw": rng.uniform(-np.pi, np.pi),
        "tilt": np.radians(rng.uniform(-30, 30)),
        "roll": np.radians(rng.uniform(-10, 10)),
        "pos": np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.4, 0.3), rng.uniform(2.0, 4.0)]),
        "noise_seed": int(rng.integers(2**63)),
    }


def _animate(ps: list[dict], num_frames: int, class_ids: np.ndarray) -> np.ndarray:
    """Joint positions ``(N, T, 25, 3)`` (float64, no noise, no padding) of samples ``ps``
    whose action indices into :data:`ACTIONS` are ``class_ids``."""
    n, T = len(ps), num_frames
    col = lambda k: np.array([p[k] for p in ps])[:, None]  # noqa: E731  (N, 1)
    valid = col("valid")
    u = np.arange(T)[None, :] / np.maximum(valid - 1, 1)  # 0 .. 1 over the valid frames
    w = 2 * np.pi * col("cycles") * u + col("phase")  # (N, T) cycle angle
    osc = np.sin(w)  # -1 .. 1
    pulse = 0.5 - 0.5 * np.cos(w)  # 0 .. 1 .. 0
    amp = col("amp")
    rest = np.stack([p["rest"] for p in ps])[:, None, :]  # (N, 1, 4)
    deg = np.radians
    zeros = np.zeros((n, T))

    # joint angles, rest pose by default
    ang = {
        "lu_t": deg(12) + rest[..., 0] + zeros, "lu_p": deg(5) + zeros,  # left upper arm
        "lf_t": deg(20) + rest[..., 1] + zeros, "lf_p": deg(40) + zeros,  # left forearm
        "ru_t": deg(12) + rest[..., 2] + zeros, "ru_p": deg(5) + zeros,
        "rf_t": deg(20) + rest[..., 3] + zeros, "rf_p": deg(40) + zeros,
        "lt": zeros.copy(), "lk": zeros.copy(), "rt": zeros.copy(), "rk": zeros.copy(),
        "bow": zeros.copy(), "twist": zeros.copy(),
    }

    def put(name: str, k: int, value) -> None:
        m = class_ids == k
        if m.any():
            ang[name][m] = np.broadcast_to(value, (n, T))[m]

    a = ACTIONS.index
    # waving: upper arm raised sideways, forearm swinging in the frontal plane
    for side, k in (("r", a("wave_right_hand")), ("l", a("wave_left_hand"))):
        put(f"{side}u_t", k, deg(100) + zeros)
        put(f"{side}u_p", k, deg(15) + zeros)
        put(f"{side}f_t", k, deg(150) + deg(30) * amp * osc)
        put(f"{side}f_p", k, zeros)
    # both arms raised and lowered sideways
    k = a("arms_up_down")
    for side in "lr":
        put(f"{side}u_t", k, deg(15) + deg(140) * amp * pulse)
        put(f"{side}f_t", k, deg(20) + deg(145) * amp * pulse)
        put(f"{side}u_p", k, zeros)
        put(f"{side}f_p", k, zeros)
    # kick: the right leg swings forwards and the knee straightens at the top
    k = a("kick_right")
    put("rt", k, deg(75) * amp * pulse)
    put("rk", k, deg(60) * np.sin(np.pi * pulse) ** 2)
    put("lu_t", k, deg(35) + zeros)
    put("ru_t", k, deg(35) + zeros)
    # squat: hips and knees flex together, the trunk leans forwards a little
    k = a("squat")
    put("lt", k, deg(80) * amp * pulse)
    put("rt", k, deg(80) * amp * pulse)
    put("lk", k, deg(125) * amp * pulse)
    put("rk", k, deg(125) * amp * pulse)
    put("bow", k, deg(25) * pulse)
    for side in "lr":
        put(f"{side}u_t", k, deg(12) + deg(70) * pulse)
        put(f"{side}u_p", k, deg(80) + zeros)
    # walking in place: alternate knee lifts with opposite arm swings
    k = a("walk_in_place")
    lift_l, lift_r = np.maximum(osc, 0), np.maximum(-osc, 0)
    put("lt", k, deg(50) * amp * lift_l)
    put("lk", k, deg(90) * amp * lift_l)
    put("rt", k, deg(50) * amp * lift_r)
    put("rk", k, deg(90) * amp * lift_r)
    put("lu_t", k, deg(30) * amp * -osc)
    put("ru_t", k, deg(30) * amp * osc)
    for side in "lr":
        put(f"{side}u_p", k, deg(90) + zeros)
        put(f"{side}f_t", k, deg(40) + zeros)
        put(f"{side}f_p", k, deg(90) + zeros)
    # bow: the trunk bends forwards and back
    put("bow", a("bow"), deg(65) * amp * pulse)
    # twist: the trunk turns left and right about the spine, arms a little out
    k = a("twist")
    put("twist", k, deg(45) * amp * osc)
    for side in "lr":
        put(f"{side}u_t", k, deg(45) + zeros)
        put(f"{side}f_t", k, deg(70) + zeros)
    # punch: the right arm goes from a guard (elbow back, fist forwards) to fully extended
    k = a("punch_right")
    put("ru_t", k, deg(35) + deg(55) * pulse)
    put("ru_p", k, deg(-80) + deg(170) * pulse)
    put("rf_t", k, deg(100) - deg(10) * pulse)
    put("rf_p", k, deg(90) + zeros)
    put("lu_t", k, deg(35) + zeros)
    put("lu_p", k, deg(-80) + zeros)
    put("lf_t", k, deg(100) + zeros)
    put("lf_p", k, deg(90) + zeros)
    # clap: arms forwards, hands open wide and meet in front of the chest
    k = a("clap")
    for side in "lr":
        put(f"{side}u_t", k, deg(70) + zeros)
        put(f"{side}u_p", k, deg(25) + deg(55) * amp * pulse)
        put(f"{side}f_t", k, deg(85) + zeros)
        put(f"{side}f_p", k, deg(45) + deg(60) * amp * pulse)

    # idle movement added to every class: a sway of the trunk (bow, twist) and of both arms
    idle = np.stack([p["idle"] for p in ps])[:, None, :]  # (N, 1, 3)
    iw = np.sin(2 * np.pi * col("idle_cycles") * u + col("idle_phase"))
    ang["bow"] = ang["bow"] + idle[..., 0] * iw
    ang["twist"] = ang["twist"] + idle[..., 1] * np.cos(2 * np.pi * col("idle_cycles") * u)
    ang["lu_t"] = ang["lu_t"] + idle[..., 2] * iw
    ang["ru_t"] = ang["ru_t"] - idle[..., 2] * iw

    # bone lengths
    bones = np.stack([p["bones"] for p in ps]) * col("scale")  # (N, B)
    L = {j: (_BONE[j] * bones[:, i])[:, None, None] for i, j in enumerate(_BONE_IDS)}

    def trunk(d: np.ndarray, with_twist: bool = True) -> np.ndarray:
        if with_twist:
            d = _rot(d, ang["twist"], 1)
        return _rot(d, -ang["bow"], 0)

    up = np.broadcast_to(np.array([0.0, 1.0, 0.0]), (n, T, 3))
    P: dict[int, np.ndarray] = {0: np.zeros((n, T, 3))}  # joint -> (N, T, 3); spine_base at 0
    P[1] = L[1] * trunk(up, with_twist=False)
    P[20] = P[1] + L[20] * trunk(up)
    P[2] = P[20] + L[2] * trunk(up)
    P[3] = P[2] + L[3] * trunk(np.broadcast_to(_unit([0, 1, -0.15]), (n, T, 3)))
    for side, sh, el, wr, ha, th, tip, s in (("l", 4, 5, 6, 7, 22, 21, 1.0),
                                             ("r", 8, 9, 10, 11, 24, 23, -1.0)):
        lat = np.broadcast_to(_unit([s, -0.12, 0.0]), (n, T, 3))
        P[sh] = P[20] + L[sh] * trunk(lat)
        du = trunk(_limb(ang[f"{side}u_t"], ang[f"{side}u_p"], s))
        df = trunk(_limb(ang[f"{side}f_t"], ang[f"{side}f_p"], s))
        P[el] = P[sh] + L[el] * du
        P[wr] = P[el] + L[wr] * df
        P[ha] = P[wr] + L[ha] * df
        dth = _unit(df + 0.8 * _FWD)
        P[th] = P[ha] + L[th] * dth
        P[tip] = P[th] + L[tip] * _unit(df - 0.5 * dth)
    for side, hip, kn, an, ft, s in (("l", 12, 13, 14, 15, 1.0), ("r", 16, 17, 18, 19, -1.0)):
        thigh, knee = ang[f"{side}t"], ang[f"{side}k"]
        P[hip] = L[hip] * np.broadcast_to(_unit([s, -0.35, 0.0]), (n, T, 3))
        P[kn] = P[hip] + L[kn] * _leg(thigh, s)
        P[an] = P[kn] + L[an] * _leg(thigh - knee, s)
        P[ft] = P[an] + L[ft] * np.broadcast_to(_unit([0, -0.35, -1]), (n, T, 3))
    J = np.stack([P[j] for j in range(25)], 2)  # (N, T, 25, 3)
    # the lower foot stands on the ground: lift the whole body by its depth below the hips,
    # hips about 0.9 m above the floor
    lift = -np.minimum(P[15][..., 1], P[19][..., 1]) - 0.9  # (N, T)
    # viewpoint: turn about the vertical axis, tilt the camera, then place in camera space
    yaw, tilt, roll = col("yaw")[:, 0], col("tilt")[:, 0], col("roll")[:, 0]
    R = np.einsum("nij,njk,nkl->nil", _rot_matrix(roll, 2), _rot_matrix(tilt, 0),
                  _rot_matrix(yaw, 1))  # (N, 3, 3)
    pos = np.stack([p["pos"] for p in ps])  # (N, 3)
    out = np.empty_like(J)
    for i in range(3):
        r = R[:, i, :, None, None]  # (N, 3, 1, 1)
        shift = (pos[:, i, None] + R[:, i, 1, None] * lift)[:, :, None]  # (N, T, 1)
        out[..., i] = r[:, 0] * J[..., 0] + r[:, 1] * J[..., 1] + r[:, 2] * J[..., 2] + shift
    return out


def _rot_matrix(a: np.ndarray, axis: int) -> np.ndarray:
    """``(N, 3, 3)`` rotations by angles ``a (N,)`` about x, y or z (as :func:`_rot`)."""
    eye = np.broadcast_to(np.eye(3), (len(a), 3, 3))
    return np.swapaxes(_rot(eye, a[:, None], axis), 1, 2)


def _resolve_classes(classes: Sequence[str | int] | None) -> tuple[tuple[str, ...], np.ndarray]:
    if classes is None:
        return ACTIONS, np.arange(len(ACTIONS))
    names, ids = [], []
    for c in classes:
        i = c if isinstance(c, int) else ACTIONS.index(c) if c in ACTIONS else -1
        if not 0 <= i < len(ACTIONS):
            raise ValueError(f"unknown synthetic action {c!r}; valid: {list(ACTIONS)}")
        names.append(ACTIONS[i])
        ids.append(i)
    if len(set(ids)) != len(ids) or not ids:
        raise ValueError(f"classes must be distinct and non-empty, got {list(classes)}")
    return tuple(names), np.array(ids)


def _generate(indices: Sequence[int], seed: int, num_frames: int, num_bodies: int,
              classes: Sequence[str | int] | None, noise: float) -> tuple[np.ndarray, np.ndarray]:
    if num_frames < 2 or num_bodies < 1:
        raise ValueError(f"need num_frames >= 2 and num_bodies >= 1, got {num_frames}, "
                         f"{num_bodies}")
    _, ids = _resolve_classes(classes)
    ps = [_params(seed, i, num_frames, len(ids)) for i in indices]
    labels = np.array([p["label"] for p in ps], np.int64)
    x = np.zeros((len(ps), 3, num_frames, 25, num_bodies), np.float32)
    if not ps:
        return x, labels
    J = _animate(ps, num_frames, ids[labels])  # (N, T, 25, 3)
    for i, p in enumerate(ps):
        v = p["valid"]
        seq = J[i, :v]
        if noise > 0:
            rng = np.random.default_rng(p["noise_seed"])
            seq = seq + rng.normal(0, noise, seq.shape)
            if rng.random() < 0.3:  # occlusion: a tracker stuck on 1-3 joints for a while
                k = int(rng.integers(1, 4))
                joints = rng.choice(25, k, replace=False)
                length = max(1, int(rng.uniform(0.2, 0.5) * v))
                t0 = int(rng.integers(0, v - length + 1))
                seq[t0:t0 + length, joints] = (seq[t0, joints]
                                               + rng.normal(0, 5 * noise, (length, k, 3)))
        x[i, :, :v, :, 0] = seq.transpose(2, 0, 1)
    return x, labels


def generate_arrays(
    num_samples: int,
    seed: int = 0,
    num_frames: int = 64,
    num_bodies: int = 2,
    classes: Sequence[str | int] | None = None,
    noise: float = 0.01,
    start: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Samples ``start .. start + num_samples - 1``: ``x`` float32 ``(N, 3, T, 25, M)`` and
    ``y`` int64 ``(N,)`` (indices into ``classes``, default all of :data:`ACTIONS`)."""
    return _generate(range(start, start + num_samples), seed, num_frames, num_bodies, classes,
                     noise)


def write_npz(path: str | os.PathLike, train: int, test: int, seed: int = 0, **kwargs) -> dict:
    """Write ``train`` and ``test`` samples to ``path`` with the keys of
    :func:`jepa_skeleton.ntu.convert_ntu` (``x_train``, ``y_train``, ``x_test``, ``y_test``,
    plus ``classes``). The test samples are indices ``train .. train + test - 1`` of the same
    stream, so they differ from the training ones. ``kwargs`` go to :func:`generate_arrays`.
    Returns the counts and class names."""
    x_tr, y_tr = generate_arrays(train, seed, **kwargs)
    x_te, y_te = generate_arrays(test, seed, start=train, **kwargs)
    names, _ = _resolve_classes(kwargs.get("classes"))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
             classes=np.asarray(names, dtype=str))
    return {"train": train, "test": test, "classes": list(names)}


class SyntheticSkeletonActions(Dataset):
    """``num_samples`` procedural action sequences; item ``i`` is ``(x, label)`` with ``x``
    float32 ``(3, num_frames, 25, num_bodies)`` (body 0 the actor) and ``label`` an int index
    into :attr:`classes`. Items are generated on access, a pure function of ``(seed, start +
    i)``; ``start`` offsets the stream (e.g. a test set after the training samples)."""

    def __init__(
        self,
        num_samples: int,
        seed: int = 0,
        num_frames: int = 64,
        num_bodies: int = 2,
        classes: Sequence[str | int] | None = None,
        noise: float = 0.01,
        start: int = 0,
    ):
        self.classes, _ = _resolve_classes(classes)
        self.num_classes = len(self.classes)
        self.num_samples, self.seed, self.start = int(num_samples), int(seed), int(start)
        self.num_frames, self.num_bodies, self.noise = int(num_frames), int(num_bodies), noise
        self._class_arg = tuple(classes) if classes is not None else None

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        index %= self.num_samples
        x, y = _generate([self.start + index], self.seed, self.num_frames, self.num_bodies,
                         self._class_arg, self.noise)
        return torch.from_numpy(x[0]), int(y[0])

    @property
    def labels(self) -> np.ndarray:
        """The label of every item (no generation needed)."""
        return (np.arange(self.start, self.start + self.num_samples) % self.num_classes
                ).astype(np.int64)
