"""Synthetic videos with exactly known dense optical flow and occlusion, made on the spot.

Scene: a textured background (a smooth random colour field plus a texture of random plane
waves and faint per-pixel noise, so it has gradients everywhere) larger than the frame, seen
through a camera that pans at a constant velocity, and ``num_objects`` Fashion-MNIST items
(the bundled sprites of :mod:`jepa_video.demo_data`, resized to 3/8-5/8 of the frame, tinted
a random colour and shaded by their intensity; alpha = resized intensity > ``alpha_threshold``)
moving in front of it, each at its own constant velocity in the image. Objects may overlap,
occlude each other and leave the frame; the depth order is fixed per clip: object ``i + 1``
is in front of object ``i`` (all in front of the background).

Motion is translation only, with integer velocities and positions: every frame is an exact
pixel copy of the scene, so the flow is exact and ``frames[t + 1][p + flow[t][p]] ==
frames[t][p]`` holds bit for bit for every pixel ``p`` that is not occluded.
Velocities are integer vectors with ``0 < |v| <= max_*_speed`` (px/frame); their direction
label is the nearest of the 8 compass classes of :data:`jepa_video.demo_data.DIRECTIONS`
(0 right, 1 up-right, ... counter-clockwise as seen on screen).

Flow convention (project-wide): ``flow[t]`` is float32 ``[2, H, W]`` in pixels, channel 0 the
horizontal (x, column) and channel 1 the vertical (y, row) displacement; ``flow[t][:, p]``
says where pixel ``p`` of frame ``t`` is in frame ``t + 1``. An object pixel moves by its
object's velocity; a background pixel by minus the camera velocity (the camera pans right, the
background moves left). Backward warping ``warp(frames[t + 1], flow[t])`` rebuilds frame ``t``.

Occlusion rule: pixel ``p`` of frame ``t`` is occluded when ``p + flow[t][p]`` is outside the
frame, or when in frame ``t + 1`` that position shows something else than ``p``'s owner (an
object nearer the camera covers it): ``segmentation[t + 1][p + flow] != segmentation[t][p]``.

Everything is a pure function of the seed (a ``numpy.random.Generator`` per clip).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .demo_data import TRAIN_SPRITES_PER_CLASS, load_sprites

__all__ = ["SyntheticFlowClips", "SyntheticFramePairs", "VideoFramePairs", "compass_direction", "render_clip",
           "sprite_pool"]

SPLITS = {"train": 1, "test": 2, "all": 3}  # also the clip seed's split code (disjoint seeds)


@cache
def sprite_pool(split: str = "all") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images uint8 [N, 28, 28], labels [N], indices into load_sprites("all") [N])`` of the
    sprites of ``split``: "train" (first 40 per class), "test" (last 10 per class), "all"."""
    if split not in SPLITS:
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    images, labels = load_sprites("all")
    rank = np.zeros(len(labels), np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        rank[where] = np.arange(len(where))
    keep = {"all": rank >= 0, "train": rank < TRAIN_SPRITES_PER_CLASS,
            "test": rank >= TRAIN_SPRITES_PER_CLASS}[split]
    return images[keep], labels[keep], np.flatnonzero(keep)


def compass_direction(v: Sequence[int] | np.ndarray) -> int:
    """The nearest of the 8 compass classes (0 right, 2 up, 4 left, 6 down) of the image-plane
    vector ``v = (dx, dy)`` (y down the rows); -1 for the zero vector."""
    dx, dy = int(v[0]), int(v[1])
    if dx == 0 and dy == 0:
        return -1
    return int(round(math.atan2(-dy, dx) / (math.pi / 4))) % 8


def _velocity(rng: np.random.Generator, vmax: float) -> np.ndarray:
    """A uniformly drawn integer vector with 0 < |v| <= vmax (zero when there is none)."""
    m = int(math.floor(vmax))
    cands = [(x, y) for x in range(-m, m + 1) for y in range(-m, m + 1) if 0 < x * x + y * y <= vmax**2]
    return np.array(cands[rng.integers(len(cands))] if cands else (0, 0), np.int64)


def _background(rng: np.random.Generator, h: int, w: int, texture: float = 0.45) -> np.ndarray:
    """uint8 ``[3, h, w]``: smooth colour field + plane-wave texture (amplitude ``texture``) +
    faint noise."""
    yy, xx = np.mgrid[:h, :w].astype(np.float64)

    def waves(n: int, lo: float, hi: float) -> np.ndarray:  # mean of n plane waves, in [-1, 1]
        ang, ph = rng.uniform(0, 2 * np.pi, n), rng.uniform(0, 2 * np.pi, n)
        k = 2 * np.pi / rng.uniform(lo, hi, n)
        return np.cos(xx[..., None] * (k * np.cos(ang)) + yy[..., None] * (k * np.sin(ang)) + ph).mean(-1)

    colour = rng.uniform(0.25, 0.75, (3, 1, 1)) + 0.2 * np.stack([waves(3, 40, 120) for _ in range(3)])
    pattern = texture * waves(8, 3, 16) + rng.uniform(-0.03, 0.03, (h, w))
    return np.clip(np.round(255 * (colour + pattern)), 0, 255).astype(np.uint8)


def _resize(sprite: np.ndarray, s: int) -> np.ndarray:
    x = torch.from_numpy(sprite.astype(np.float32))[None, None]
    x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=s < sprite.shape[0])
    return x[0, 0].clamp(0, 255).numpy()


def _paste(frame, seg, colour, alpha, x: int, y: int, k: int) -> None:
    """Draw sprite ``colour [3, s, s]`` where ``alpha`` with its top-left corner at (x, y)."""
    s, (H, W) = alpha.shape[0], seg.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + s, W), min(y + s, H)
    if x0 >= x1 or y0 >= y1:
        return
    a = alpha[y0 - y : y1 - y, x0 - x : x1 - x]
    frame[:, y0:y1, x0:x1][:, a] = colour[:, y0 - y : y1 - y, x0 - x : x1 - x][:, a]
    seg[y0:y1, x0:x1][a] = k


def render_clip(
    seed: int | Sequence[int],
    num_frames: int = 8,
    size: int = 64,
    num_objects: int = 3,
    *,
    object_size: tuple[int, int] | None = None,
    max_object_speed: float = 3.0,
    max_camera_speed: float = 2.0,
    texture: float = 0.45,
    alpha_threshold: float = 40.0,
    sprites: str = "all",
) -> dict:
    """One clip (see the module docstring), a pure function of ``seed`` (anything
    ``numpy.random.default_rng`` takes). Returns a dict of numpy arrays:

    ``frames`` uint8 [T, 3, H, W]; ``flow`` float32 [T-1, 2, H, W] (forward, t -> t+1);
    ``occluded`` bool [T-1, H, W]; ``segmentation`` uint8 [T, H, W] (0 background, i+1 object
    i); ``classes``, ``directions`` (compass class), ``sprite_indices`` (into
    ``load_sprites("all")``) int64 [N]; ``velocities`` int64 [N, 2] and ``positions`` int64
    [T, N, 2] (top-left corner, (x, y) in frame pixels); ``alphas`` (N bool [s_i, s_i]);
    ``camera_velocity`` int64 [2] (the pan: the background's flow is minus it) and
    ``camera_direction`` (its compass class); ``largest``: the object with the most visible
    pixels over the clip. ``object_size``: (min, max) side in px, default 3/8-5/8 of ``size``.
    ``texture``: the amplitude of the background's fine plane-wave texture (0 leaves the smooth
    colour field; the same draws either way, so only the background's contrast changes).
    """
    if num_frames < 2:
        raise ValueError(f"num_frames={num_frames}: a flow clip needs at least 2 frames "
                         "(one frame pair); pass num_frames >= 2")
    if num_objects < 1:
        raise ValueError(f"num_objects must be >= 1, got {num_objects}")
    lo, hi = object_size if object_size is not None else (round(size * 3 / 8), round(size * 5 / 8))
    if not 1 <= lo <= hi <= size:
        raise ValueError(f"object_size ({lo}, {hi}) must satisfy 1 <= min <= max <= size={size}")
    rng = np.random.default_rng(seed)
    images, labels, global_idx = sprite_pool(sprites)
    T = num_frames

    v_cam = _velocity(rng, max_camera_speed)
    pad = int(np.abs(v_cam).max()) * (T - 1)
    canvas = _background(rng, size + 2 * pad, size + 2 * pad, texture)

    picks = rng.choice(len(images), num_objects, replace=False)
    sides = rng.integers(lo, hi + 1, num_objects)
    velocities = np.stack([_velocity(rng, max_object_speed) for _ in range(num_objects)])
    colours, alphas, starts = [], [], []
    for k, s, v in zip(picks, sides.tolist(), velocities):
        grey = _resize(images[k], s)
        tint = rng.uniform(0.3, 1.0, (3, 1, 1))
        colours.append(np.round(255 * tint * (0.3 + 0.7 * grey / 255)).astype(np.uint8))
        alphas.append(grey > alpha_threshold)
        centre_mid = rng.uniform(0.15 * size, 0.85 * size, 2)  # its centre half-way through
        starts.append(np.round(centre_mid - s / 2 - v * (T - 1) / 2).astype(np.int64))
    positions = np.stack(starts)[None] + np.arange(T)[:, None, None] * velocities[None]

    frames = np.empty((T, 3, size, size), np.uint8)
    seg = np.zeros((T, size, size), np.uint8)
    for t in range(T):
        ox, oy = pad + t * v_cam[0], pad + t * v_cam[1]
        frames[t] = canvas[:, oy : oy + size, ox : ox + size]
        for i in range(num_objects):  # back to front
            x, y = positions[t, i].tolist()
            _paste(frames[t], seg[t], colours[i], alphas[i], x, y, i + 1)

    table = np.concatenate([-v_cam[None], velocities])  # flow of owner 0 (background), 1, 2, ...
    disp = table[seg[:-1]]  # [T-1, H, W, 2] (dx, dy)
    yy, xx = np.mgrid[:size, :size]
    qx, qy = xx + disp[..., 0], yy + disp[..., 1]
    inside = (qx >= 0) & (qx < size) & (qy >= 0) & (qy < size)
    tt = np.arange(1, T)[:, None, None]
    owner_next = seg[tt, qy.clip(0, size - 1), qx.clip(0, size - 1)]
    occluded = ~inside | (owner_next != seg[:-1])

    visible = np.bincount(seg.ravel(), minlength=num_objects + 1)[1:]
    return dict(
        frames=frames, flow=np.ascontiguousarray(disp.transpose(0, 3, 1, 2), np.float32),
        occluded=occluded, segmentation=seg, classes=labels[picks].astype(np.int64),
        directions=np.array([compass_direction(v) for v in velocities], np.int64),
        sprite_indices=global_idx[picks].astype(np.int64), velocities=velocities,
        positions=positions, alphas=alphas, camera_velocity=v_cam,
        camera_direction=compass_direction(v_cam), largest=int(np.argmax(visible)),
    )


class SyntheticFlowClips(Dataset):
    """``num_clips`` clips of :func:`render_clip`, rendered on first access and kept in memory
    (about 0.2 MB per 8-frame 64-px clip). Clip ``i`` uses the seed ``(seed, split code, i)``,
    so train and test clips never share a seed, and the sprites of ``split`` (train and test
    sprites are disjoint: first 40 / last 10 per class). ``render_kwargs`` go to
    :func:`render_clip`.

    Each item is a dict of tensors: ``frames`` float32 [T, 3, H, W] in [0, 1] (uint8 0-255 with
    ``uint8=True``), ``flow`` float32 [T-1, 2, H, W], ``occluded`` bool [T-1, H, W],
    ``segmentation`` int64 [T, H, W], ``label`` (class of the largest object, the object with
    most visible pixels over the clip), ``camera_direction`` (compass class of the pan; the
    background flows the opposite way), ``classes`` and ``directions`` int64 [N] (per object).
    """

    def __init__(self, split: str = "train", num_clips: int = 1000, num_frames: int = 8,
                 size: int = 64, seed: int = 0, *, uint8: bool = False, **render_kwargs):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if num_frames < 2:
            raise ValueError(f"num_frames={num_frames}: a flow clip needs at least 2 frames "
                             "(one frame pair); pass num_frames >= 2")
        self.split, self.num_clips, self.num_frames, self.size = split, num_clips, num_frames, size
        self.seed, self.uint8, self.render_kwargs = seed, uint8, render_kwargs
        self._cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return self.num_clips

    def clip_seed(self, index: int) -> tuple[int, int, int]:
        return (self.seed, SPLITS[self.split], index)

    def clip(self, index: int) -> dict:
        """The compact cached clip: numpy arrays (frames uint8, flow int8) and labels."""
        if not 0 <= index < self.num_clips:
            raise IndexError(f"clip {index} out of range for {self.num_clips} clips")
        if index not in self._cache:
            c = render_clip(self.clip_seed(index), self.num_frames, self.size,
                            sprites=self.split, **self.render_kwargs)
            self._cache[index] = dict(
                frames=c["frames"], flow=c["flow"].astype(np.int8), occluded=c["occluded"],
                segmentation=c["segmentation"], label=int(c["classes"][c["largest"]]),
                camera_direction=c["camera_direction"], classes=c["classes"],
                directions=c["directions"], sprite_indices=c["sprite_indices"])
        return self._cache[index]

    def _frames(self, x: np.ndarray) -> torch.Tensor:  # numpy: no torch threads per item
        return torch.from_numpy(x.copy() if self.uint8 else x.astype(np.float32) / np.float32(255))

    def __getitem__(self, index: int) -> dict:
        c = self.clip(index)
        return dict(
            frames=self._frames(c["frames"]), flow=torch.from_numpy(c["flow"].astype(np.float32)),
            occluded=torch.from_numpy(c["occluded"].copy()),
            segmentation=torch.from_numpy(c["segmentation"].astype(np.int64)), label=c["label"],
            camera_direction=c["camera_direction"], classes=torch.from_numpy(c["classes"].copy()),
            directions=torch.from_numpy(c["directions"].copy()))


class SyntheticFramePairs(Dataset):
    """Every consecutive frame pair of a :class:`SyntheticFlowClips` (same arguments), as a
    tuple ``(frame_t, frame_t1, flow, occluded)``: frames float32 [3, H, W] in [0, 1] (uint8
    with ``uint8=True``), flow float32 [2, H, W] (t -> t+1), occluded bool [H, W]. Item ``i``
    is pair ``i % (T - 1)`` of clip ``i // (T - 1)``; ``self.clips`` is the clip dataset."""

    def __init__(self, split: str = "train", num_clips: int = 1000, num_frames: int = 8,
                 size: int = 64, seed: int = 0, **kwargs):
        self.clips = SyntheticFlowClips(split, num_clips, num_frames, size, seed, **kwargs)
        self.pairs_per_clip = num_frames - 1

    def __len__(self) -> int:
        return len(self.clips) * self.pairs_per_clip

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"pair {index} out of range for {len(self)} pairs")
        i, t = divmod(index, self.pairs_per_clip)
        c = self.clips.clip(i)
        return (self.clips._frames(c["frames"][t]), self.clips._frames(c["frames"][t + 1]),
                torch.from_numpy(c["flow"][t].astype(np.float32)), torch.from_numpy(c["occluded"][t].copy()))


class VideoFramePairs(Dataset):
    """Unsupervised frame pairs of real videos, for MC-JEPA (``data.dataset=video``).

    ``root``: a folder of videos (:class:`jepa_video.datasets.VideoFolder`, class sub-folders
    give labels) or an index file (:class:`jepa_video.datasets.VideoIndex`: the ``path label``
    lines or ``.npy`` indexes V-JEPA takes). Item i: ``({"pair": [2, 3, S, S], "still": [3, S,
    S]}, label)``: frames ``t`` and ``t + frame_gap`` of video i (``t`` uniform, from the global
    torch generator, which the Trainer's loader seeds per sample), decoded with
    :func:`jepa_video.decoders.open_video`, in [0, 1], the short side resized to ``image_size``
    and the same random ``image_size`` square cropped from both; ``still`` (the content
    stream's image) is frame t itself (the paper draws its stills from ImageNet instead).

    Bad input raises :class:`jepa_core.data.CorruptSampleError` naming the file, which the
    Trainer skips and counts in the run's skipped samples: a file under ``min_bytes``, one that
    does not open or decode, and a video with fewer than ``frame_gap + 1`` frames (no pair).
    """

    def __init__(self, root, image_size: int, frame_gap: int = 1, backend: str = "auto", threads: int = 1,
                 min_bytes: int | None = None):
        from pathlib import Path

        from jepa_core.config import ConfigError

        from .datasets import MIN_VIDEO_BYTES, VideoFolder, VideoIndex

        if frame_gap < 1:
            raise ValueError(f"frame_gap must be >= 1, got {frame_gap}")
        self.image_size, self.frame_gap, self.threads = int(image_size), int(frame_gap), threads
        self.min_bytes = MIN_VIDEO_BYTES if min_bytes is None else int(min_bytes)
        path = Path(root)
        kw: dict[str, Any] = dict(backend=backend, min_bytes=self.min_bytes)
        listing: VideoFolder | VideoIndex
        if path.is_dir():
            listing = VideoFolder(path, **kw)
        elif path.is_file():
            listing = VideoIndex(str(path), **kw)
        else:
            raise ConfigError(f"data.root={str(root)!r}: no such folder or index file")
        self.samples, self.frame_counts, self.backend = listing.samples, listing.frame_counts, listing.backend

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from jepa_core.data import CorruptSampleError

        from .datasets import size_problem
        from .decoders import FramesUnavailableError, open_video

        path, label = self.samples[index]
        problem = size_problem(path, self.min_bytes)
        if problem:
            raise CorruptSampleError(f"{path}: {problem}")
        gap = self.frame_gap
        with open_video(path, self.backend, threads=self.threads, num_frames=self.frame_counts[index]) as video:
            n = video.num_frames
            for attempt in range(2):
                if n < gap + 1:
                    raise CorruptSampleError(f"{path}: {n} decodable frame(s), too short for a frame pair "
                                             f"{gap} apart (data.frame_gap={gap})")
                t = int(torch.randint(0, n - gap, ()))
                try:
                    frames = video.get_frames([t, t + gap])
                except FramesUnavailableError as err:  # fewer frames decode than listed: once more inside
                    if attempt or err.decodable < 1:
                        raise
                    n = err.decodable
                    continue
                break
        return self._pair(frames), label

    def _pair(self, frames: np.ndarray) -> dict[str, torch.Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0  # [2, 3, H, W]
        h, w = x.shape[-2:]
        s = self.image_size
        scale = s / min(h, w)
        nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=scale < 1)
        top = int(torch.randint(0, nh - s + 1, ()))
        left = int(torch.randint(0, nw - s + 1, ()))
        x = x[..., top:top + s, left:left + s].clamp(0, 1).contiguous()
        return {"pair": x, "still": x[0]}
