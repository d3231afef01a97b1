"""Video datasets: a folder of videos, and the official ``path label`` index files.

Both return ``(clip, label)``: ``clip`` float32 ``[C, T, H, W]`` from the transform (with
``num_clips > 1``: ``[num_clips, C, T, H, W]``, each clip with its own random crop, as the
official code), ``label`` an int (-1 when there is none).

* Videos are decoded with :func:`jepa_video.decoders.open_video` (``backend="auto"`` by default)
  and sampled with a :class:`jepa_video.sampling.ClipSampler` (default: 16 frames, step 4).
* Images (``.jpg``, ``.jpeg``, ``.png``) in the list are decoded once and repeated to
  ``frames_per_clip`` frames (as V-JEPA 2 mixes ImageNet into its video data).
* Videos smaller than 1 KB are treated as broken (the official rule): :class:`VideoFolder`
  leaves them out when it scans, and any sample that is too small, missing or fails to decode
  raises :class:`jepa_core.data.CorruptSampleError` naming the path; the trainer's loader
  (``StampedDataset`` + ``collate_stamped``) skips and counts it. The official code instead
  retries a random other index.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from jepa_core.data import CorruptSampleError
from torch.utils.data import Dataset, WeightedRandomSampler

from .decoders import open_video, resolve_backend
from .sampling import ClipSampler
from .transforms import VideoTrainTransform

__all__ = [
    "IMAGE_EXTENSIONS",
    "MIN_VIDEO_BYTES",
    "VIDEO_EXTENSIONS",
    "ClipDataset",
    "VideoFolder",
    "VideoIndex",
    "read_index",
    "write_index",
]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ogv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
MIN_VIDEO_BYTES = 1024


def is_image(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def _load_image(path: str) -> np.ndarray:
    """One RGB image as uint8 ``[H, W, 3]``, decoded by PyAV (no Pillow or torchvision needed)."""
    import av

    try:
        with av.open(path) as c:
            for frame in c.decode(video=0):
                return frame.to_ndarray(format="rgb24")
    except Exception as err:  # noqa: BLE001
        raise CorruptSampleError(f"{path}: could not decode the image: {err}") from err
    raise CorruptSampleError(f"{path}: the image has no frame")


class ClipDataset(Dataset):
    """Clips from a list of ``(path, label)``; the base of :class:`VideoFolder` and
    :class:`VideoIndex`.

    ``sampler``: a :class:`ClipSampler` (default 16 frames, frame_step 4).
    ``transform``: ``f(clip uint8 [T,H,W,C], generator) -> tensor`` (default
    ``VideoTrainTransform(224)``). ``backend``: decoder name or ``"auto"``, checked now.
    ``threads``: decoder threads (1 suits DataLoader workers). ``generator``: source of the
    clip position and augmentation randomness (default: the global torch generator, which
    ``StampedDataset`` seeds per sample).
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        sampler: ClipSampler | None = None,
        transform: Callable | None = None,
        backend: str = "auto",
        threads: int = 1,
        min_bytes: int = MIN_VIDEO_BYTES,
        generator: torch.Generator | None = None,
    ):
        self.samples = [(str(p), int(y)) for p, y in samples]
        self.sampler = sampler if sampler is not None else ClipSampler(frames_per_clip=16, frame_step=4)
        self.transform = transform if transform is not None else VideoTrainTransform(224)
        self.backend = resolve_backend(backend)
        self.threads, self.min_bytes, self.generator = threads, min_bytes, generator

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        return [y for _, y in self.samples]

    def load_clips(self, index: int) -> list[np.ndarray]:
        """The sampled uint8 clips ``[T, H, W, 3]`` of sample ``index`` (before the transform)."""
        path, _ = self.samples[index]
        fpc = self.sampler.frames_per_clip
        if is_image(path):
            img = _load_image(path)
            return [np.repeat(img[None], fpc, axis=0) for _ in range(self.sampler.num_clips)]
        try:
            size = os.path.getsize(path)
        except OSError as err:
            raise CorruptSampleError(f"{path}: {err}") from err
        if size < self.min_bytes:
            raise CorruptSampleError(f"{path}: {size} bytes, under the {self.min_bytes}-byte minimum for a video")
        with open_video(path, self.backend, threads=self.threads) as video:
            try:
                clips = self.sampler(video.num_frames, video.fps, self.generator)
            except ValueError as err:  # e.g. fps sampling on a stream without a frame rate
                raise CorruptSampleError(f"{path}: {err}") from err
            frames = video.get_frames(np.concatenate(clips))
        return list(np.split(frames, len(clips)))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        clips = [self.transform(c, self.generator) for c in self.load_clips(index)]
        clip = clips[0] if len(clips) == 1 else torch.stack(clips)
        return clip, self.samples[index][1]


class VideoFolder(ClipDataset):
    """Videos (and images) under ``root``. When ``root`` has sub-folders holding videos, each
    such sub-folder is a class (sorted names, label = position; files directly in ``root``
    get -1); otherwise every file has label -1. Files under ``min_bytes`` are left out.
    ``extensions`` defaults to the video extensions (add ``IMAGE_EXTENSIONS`` to take images)."""

    def __init__(self, root: str | os.PathLike, *args, extensions: Sequence[str] = VIDEO_EXTENSIONS, **kwargs):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"no such folder: {self.root}")
        exts = tuple(e.lower() for e in extensions)
        min_bytes = kwargs.get("min_bytes", MIN_VIDEO_BYTES)

        def keep(p: Path) -> bool:
            if not p.is_file() or not p.name.lower().endswith(exts) or p.name.startswith("."):
                return False
            return is_image(p) or p.stat().st_size >= min_bytes

        class_files = {}
        for d in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = sorted(p for p in d.rglob("*") if keep(p))
            if files:
                class_files[d.name] = files
        self.classes = sorted(class_files)
        samples = [(str(p), -1) for p in sorted(self.root.iterdir()) if keep(p)]
        for y, c in enumerate(self.classes):
            samples += [(str(p), y) for p in class_files[c]]
        if not samples:
            raise FileNotFoundError(f"no videos with extensions {exts} under {self.root}")
        super().__init__(samples, *args, **kwargs)


def read_index(path: str | os.PathLike, root: str | os.PathLike | None = None) -> list[tuple[str, int]]:
    """The ``(path, label)`` entries of one official index file.

    ``.csv``/text: one ``path label`` per line, separated by a space (V-JEPA; V-JEPA 2 falls
    back to ``::``); the label is the last field, so paths may contain spaces; a line with a
    path alone gets label -1. ``.npy``: an array of paths, label 0 (as the official code).
    Relative paths are taken relative to ``root``, or to the index file's folder when ``root``
    is None (the official code uses them as given, relative to the working directory).
    """
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    if path.suffix == ".npy":
        rows = [(str(p), 0) for p in np.load(path, allow_pickle=True).tolist()]
    else:
        rows = []
        with open(path, newline="") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                if "::" in line:
                    parts = line.rsplit("::", 1)
                else:
                    parts = line.rsplit(" ", 1) if " " in line else [line]
                if len(parts) == 1:
                    rows.append((parts[0].strip(), -1))
                    continue
                p, label = parts[0].strip(), parts[1].strip()
                try:
                    rows.append((p, int(label)))
                except ValueError:
                    if n == 1:  # a header line
                        continue
                    raise ValueError(f"{path}:{n}: label {label!r} is not an integer") from None
    return [(p if os.path.isabs(p) else str(base / p), y) for p, y in rows]


class VideoIndex(ClipDataset):
    """The samples of one or more official index files (``csv_paths``), concatenated.

    ``weights``: one weight per file (V-JEPA 2: K710 0.335, SSv2 0.100, HowTo100M 0.565);
    :attr:`sample_weights` then gives each sample ``weight / size of its file`` (all 1 without
    weights), for weighted sampling with replacement, e.g. :meth:`weighted_sampler`.
    :attr:`dataset_ids` tells which file each sample came from.
    """

    def __init__(
        self,
        csv_paths: str | os.PathLike | Sequence[str | os.PathLike],
        weights: Sequence[float] | None = None,
        *args,
        root: str | os.PathLike | None = None,
        **kwargs,
    ):
        paths = [csv_paths] if isinstance(csv_paths, str | os.PathLike) else list(csv_paths)
        if not paths:
            raise ValueError("no index files given")
        if weights is not None and len(weights) != len(paths):
            raise ValueError(f"{len(weights)} weights for {len(paths)} index files")
        samples, ids, sizes = [], [], []
        for d, p in enumerate(paths):
            rows = read_index(p, root)
            if not rows:
                raise ValueError(f"index file {p} lists no samples")
            samples += rows
            ids += [d] * len(rows)
            sizes.append(len(rows))
        self.index_files = [str(p) for p in paths]
        self.dataset_ids = ids
        self.dataset_sizes = sizes
        self.dataset_weights = list(weights) if weights is not None else None
        if weights is None:
            self.sample_weights = [1.0] * len(samples)
        else:
            self.sample_weights = [float(weights[d]) / sizes[d] for d in ids]
        super().__init__(samples, *args, **kwargs)

    def weighted_sampler(self, num_samples: int | None = None,
                         generator: torch.Generator | None = None) -> WeightedRandomSampler:
        """Draws indices with replacement in proportion to :attr:`sample_weights`."""
        return WeightedRandomSampler(self.sample_weights, num_samples or len(self), replacement=True,
                                     generator=generator)


def write_index(path: str | os.PathLike, rows: Sequence[tuple[str, int]]) -> Path:
    """Write ``(path, label)`` rows as an official space-separated index file."""
    path = Path(path)
    with open(path, "w") as f:
        for p, y in rows:
            if "\n" in str(p):
                raise ValueError(f"path {p!r} has a line break")
            f.write(f"{p} {int(y)}\n")
    return path
