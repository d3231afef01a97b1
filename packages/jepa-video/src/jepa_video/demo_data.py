"""A small labelled video set made on the spot: Fashion-MNIST sprites moving across a canvas.

Each clip shows one object (a Fashion-MNIST image, scaled to ``sprite_size``) on a black
``size x size`` canvas, moving in a straight line in one of 8 directions at ``speed`` pixels
per frame along each moving axis (so diagonal motion is sqrt(2) times faster). The clips are
real mp4 files (H.264 through PyAV's bundled libx264, or MPEG-4 Part 2), listed in an official
``path label`` index file, so the whole video pipeline (decoder, clip sampling, transforms,
:class:`jepa_video.datasets.VideoIndex`) reads them as it would Kinetics.

Labels: ``object class`` (0-9, :data:`CLASS_NAMES`) and ``direction`` (0-7,
:data:`DIRECTION_NAMES`, counter-clockwise from "right" as seen on screen). The index file
holds one combined label ``class * 8 + direction`` (:func:`split_label` undoes it); a second
file, ``meta.csv``, has every field by name. Appearance (class) and motion (direction) can
thus be probed separately. Everything is a deterministic function of ``seed``.

The sprites are bundled (``demo_data/fashion_mnist_sprites.npz``, 50 per class, MIT licence,
see ``demo_data/LICENSE``): the first 40 of each class form the ``"train"`` sprites, the last
10 the ``"test"`` sprites.
"""

from __future__ import annotations

import csv
import os
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import cast

import numpy as np

from .datasets import write_index

__all__ = [
    "CLASS_NAMES",
    "DIRECTIONS",
    "DIRECTION_NAMES",
    "clutter_background",
    "load_sprites",
    "make_demo_videos",
    "read_demo_meta",
    "render_clip",
    "rgb_to_yuv420p",
    "split_label",
    "write_video",
]

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
#: (dx, dy) per direction in image coordinates (x to the right, y down the rows).
DIRECTIONS = ((1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1))
DIRECTION_NAMES = ("right", "up-right", "up", "up-left", "left", "down-left", "down", "down-right")
SPRITES_PER_CLASS, TRAIN_SPRITES_PER_CLASS = 50, 40


def split_label(label: int) -> tuple[int, int]:
    """``(object class, direction)`` of a combined demo label ``class * 8 + direction``."""
    return int(label) // len(DIRECTIONS), int(label) % len(DIRECTIONS)


def load_sprites(split: str = "all") -> tuple[np.ndarray, np.ndarray]:
    """The bundled sprites: uint8 ``[N, 28, 28]`` and labels ``[N]``; ``split`` is ``"train"``
    (first 40 per class), ``"test"`` (last 10 per class) or ``"all"``."""
    ref = resources.files("jepa_video") / "demo_data" / "fashion_mnist_sprites.npz"
    with resources.as_file(ref) as p, np.load(p) as z:
        images, labels = z["images"], z["labels"]
    if split == "all":
        return images, labels
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    rank = np.zeros(len(labels), np.int64)  # position of each image within its class
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        rank[where] = np.arange(len(where))
    keep = rank < TRAIN_SPRITES_PER_CLASS if split == "train" else rank >= TRAIN_SPRITES_PER_CLASS
    return images[keep], labels[keep]


def _scale_sprite(sprite: np.ndarray, size: int) -> np.ndarray:
    if sprite.shape == (size, size):
        return sprite
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(sprite.astype(np.float32))[None, None]
    x = F.interpolate(x, size=(size, size), mode="area")
    return x[0, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def render_clip(sprite: np.ndarray, direction: int, speed: float, frames: int, size: int,
                x0: float, y0: float, background: np.ndarray | None = None) -> np.ndarray:
    """uint8 ``[frames, size, size]``: ``sprite`` with its top-left corner at
    ``(x0, y0) + t * speed * DIRECTIONS[direction]`` (rounded to whole pixels) in frame ``t``.

    ``background`` (uint8 ``[size, size]``, default black) is the static scene behind it; the
    sprite covers it where the sprite's pixels are non-zero (its black surround is transparent,
    so no moving box gives the object away)."""
    dx, dy = DIRECTIONS[direction]
    s = sprite.shape[0]
    if background is not None and background.shape != (size, size):
        raise ValueError(f"background must be {size}x{size}, got {tuple(background.shape)}")
    out = np.zeros((frames, size, size), np.uint8) if background is None else np.repeat(
        background.astype(np.uint8)[None], frames, axis=0)
    opaque = sprite > 0
    for t in range(frames):
        x, y = int(round(x0 + t * speed * dx)), int(round(y0 + t * speed * dy))
        if not (0 <= x <= size - s and 0 <= y <= size - s):
            raise ValueError(f"frame {t}: the sprite at ({x}, {y}) leaves the {size}x{size} canvas")
        region = out[t, y : y + s, x : x + s]
        region[opaque] = sprite[opaque]
    return out


def clutter_background(images: np.ndarray, count: int, size: int, sprite_size: int,
                       rng: np.random.Generator) -> np.ndarray:
    """A static uint8 ``[size, size]`` scene of ``count`` sprites drawn from ``images`` (any
    class), each scaled to ``sprite_size`` and pasted at a random place (later ones on top,
    black surround transparent), as bright as the moving object: only motion tells them apart."""
    out = np.zeros((size, size), np.uint8)
    room = size - sprite_size
    for _ in range(count):
        sprite = _scale_sprite(images[int(rng.integers(len(images)))], sprite_size)
        x, y = (int(v) for v in rng.integers(0, room + 1, size=2))
        region = out[y : y + sprite_size, x : x + sprite_size]
        region[sprite > 0] = sprite[sprite > 0]
    return out


def _encoder(codec: str) -> str:
    import av

    if codec in ("h264", "libx264"):
        return "libx264" if "libx264" in av.codecs_available else "mpeg4"
    if codec == "mpeg4":
        return "mpeg4"
    raise ValueError(f"codec must be 'h264' or 'mpeg4', got {codec!r}")


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]`` RGB -> PyAV's packed yuv420p array ``[H * 3 // 2, W]`` (BT.601,
    limited range, the decoders' default; chroma averaged over 2x2 blocks). Converting here
    rather than through swscale keeps the encoded bytes reproducible."""
    x = rgb.astype(np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    cb = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    cr = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    H, W = y.shape

    def sub(c: np.ndarray) -> np.ndarray:
        return c.reshape(H // 2, 2, W // 2, 2).mean((1, 3))

    planes = [np.clip(np.round(p), 0, 255).astype(np.uint8).ravel() for p in (y, sub(cb), sub(cr))]
    return np.concatenate(planes).reshape(H * 3 // 2, W)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 8, codec: str = "h264",
                quality: int = 12) -> Path:
    """Write ``frames`` (uint8 ``[T, H, W, 3]`` RGB or ``[T, H, W]`` grey; H and W even) as a
    video file through PyAV. ``quality``: the constant quantiser, 0-51 for H.264 (0 is lossless
    in luma) or 1-31 for MPEG-4; lower is better. Single-threaded, colour converted here and
    without rate control, so the bytes depend only on the input."""
    import av

    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    T, H, W, _ = frames.shape
    if H % 2 or W % 2:
        raise ValueError(f"frame size {H}x{W} must be even (yuv420p)")
    path = Path(path)
    name = _encoder(codec)
    with av.open(str(path), "w", format="mp4" if path.suffix.lower() in (".mp4", ".m4v") else None) as out:
        rate = Fraction(fps).limit_denominator(1001)
        stream = cast("av.VideoStream", out.add_stream(name, rate=rate))  # a video codec name
        stream.codec_context.time_base = 1 / rate
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.thread_count = 1
        if name == "libx264":
            # Constant quantiser: x264's rate control (CRF's macroblock tree and adaptive
            # quantisation) gave run-to-run different bytes on these tiny frames.
            stream.codec_context.options = {"qp": str(quality), "preset": "medium"}
        else:
            stream.codec_context.options = {"qmin": str(quality), "qmax": str(quality)}
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(f), format="yuv420p")
            frame.pts = i  # explicit timestamps: x264's rate control reads them
            frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def make_demo_videos(
    out_dir: str | os.PathLike,
    n_clips: int = 200,
    *,
    frames: int = 16,
    size: int = 32,
    sprite_size: int = 14,
    speeds: tuple[float, ...] = (1.0,),
    fps: int = 8,
    codec: str = "h264",
    sprites: str = "all",
    clutter: int = 0,
    seed: int = 0,
) -> Path:
    """Write ``n_clips`` moving-sprite mp4 files into ``out_dir`` and return the path of their
    index file ``out_dir/index.csv`` (``clip_00000.mp4 <class * 8 + direction>`` per line).

    Every (class, direction) pair occurs ``n_clips // 80`` or one more times, in an order
    shuffled by ``seed``; the sprite (from ``sprites``: "train", "test", "all"), speed (from
    ``speeds``) and start point (so the whole path stays on the canvas) are drawn from
    ``seed`` too. ``out_dir/meta.csv`` lists path, object_class, class_name, direction,
    direction_name, speed, x0, y0, sprite_index (into ``load_sprites(sprites)``).

    ``clutter`` > 0 puts the object in front of a static scene of that many other sprites
    (:func:`clutter_background`, drawn per clip from a second stream of ``seed``, so the
    object, path and labels are the same as with ``clutter=0``): the object then differs from
    the scene only by moving, so a probe must find it by its motion.
    """
    if n_clips < 1:
        raise ValueError("n_clips must be >= 1")
    if clutter < 0:
        raise ValueError(f"clutter must be >= 0 (static sprites behind the moving one), got {clutter}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images, labels = load_sprites(sprites)
    room = size - sprite_size
    for v in speeds:
        if v * (frames - 1) > room:
            raise ValueError(f"speed {v} over {frames} frames travels {v * (frames - 1):g} px, but a "
                             f"{sprite_size}-px sprite on a {size}-px canvas has {room} px of room")
    rng = np.random.default_rng(seed)
    scene_rng = np.random.default_rng([seed, 1])  # its own stream: clutter leaves the clips' draws alone
    n_dir = len(DIRECTIONS)
    combos = rng.permutation(np.resize(np.arange(10 * n_dir), n_clips))
    scaled: dict[int, np.ndarray] = {}
    rows, meta = [], []
    for i, combo in enumerate(combos.tolist()):
        cls, direction = split_label(combo)
        pool = np.flatnonzero(labels == cls)
        k = int(pool[rng.integers(len(pool))])
        if k not in scaled:
            scaled[k] = _scale_sprite(images[k], sprite_size)
        speed = float(speeds[int(rng.integers(len(speeds)))])
        travel = speed * (frames - 1)
        dx, dy = DIRECTIONS[direction]
        start = []
        for d in (dx, dy):
            lo, hi = (0.0, room - travel) if d > 0 else (travel, float(room)) if d < 0 else (0.0, float(room))
            start.append(int(rng.integers(int(np.ceil(lo)), int(np.floor(hi)) + 1)))
        background = clutter_background(images, clutter, size, sprite_size, scene_rng) if clutter else None
        clip = render_clip(scaled[k], direction, speed, frames, size, start[0], start[1], background=background)
        name = f"clip_{i:05d}.mp4"
        write_video(out / name, clip, fps=fps, codec=codec)
        rows.append((name, combo))
        meta.append(dict(path=name, object_class=cls, class_name=CLASS_NAMES[cls], direction=direction,
                         direction_name=DIRECTION_NAMES[direction], speed=speed, x0=start[0], y0=start[1],
                         sprite_index=k))
    index = write_index(out / "index.csv", rows)
    with open(out / "meta.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(meta[0]))
        w.writeheader()
        w.writerows(meta)
    return index


def read_demo_meta(out_dir: str | os.PathLike) -> list[dict]:
    """The rows of ``out_dir/meta.csv`` with numbers as numbers."""
    with open(Path(out_dir) / "meta.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("object_class", "direction", "x0", "y0", "sprite_index"):
            r[k] = int(r[k])
        r["speed"] = float(r["speed"])
    return rows
