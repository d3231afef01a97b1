"""Video datasets: a folder of videos, and the official ``path label`` index files.

Both return ``(clip, label)``: ``clip`` float32 ``[C, T, H, W]`` from the transform (with
``num_clips > 1``: ``[num_clips, C, T, H, W]``, each clip with its own random crop, as the
official code), ``label`` an int (-1 when there is none).

* Videos are decoded with :func:`jepa_video.decoders.open_video` (``backend="auto"`` by default)
  and sampled with a :class:`jepa_video.sampling.ClipSampler` (default: 16 frames, step 4).
* Images (``.jpg``, ``.jpeg``, ``.png``) in the list are decoded once and repeated to
  ``frames_per_clip`` frames (as V-JEPA 2 mixes ImageNet into its video data).
* Videos smaller than 1 KB are treated as broken (the official rule): any sample that is too
  small (an empty file in a folder included), missing or fails to decode raises
  :class:`jepa_core.data.CorruptSampleError` naming the path; the trainer's loader
  (``StampedDataset`` + ``collate_stamped``) skips and counts it. The official code instead
  retries a random other index. These are the checks ``jepa video check`` runs
  (:mod:`jepa_video.check`).
* Frame counts: a clip is drawn inside the frames that decode. An index written by
  ``jepa video check`` carries each file's decodable count; otherwise the decoder's count is
  used (whole packets, not the header's claim), and when a request still runs past the last
  decodable frame (a damaged final frame) the file is counted once, the clip drawn again
  inside, and the count kept for the file.
* Videos shorter than a clip are padded by repeating their last frame (the official rule),
  logged once per file with the number of repeated frames; ``ClipSampler(short_videos="skip")``
  skips them instead (counted like corrupt samples).
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jepa_core.config import ConfigError
from jepa_core.data import CorruptSampleError
from torch.utils.data import Dataset, WeightedRandomSampler

from .decoders import FramesUnavailableError, open_video, resolve_backend
from .sampling import ClipSampler, ShortVideoError
from .transforms import VideoTrainTransform

__all__ = [
    "IMAGE_EXTENSIONS",
    "MIN_VIDEO_BYTES",
    "VIDEO_EXTENSIONS",
    "ClipDataset",
    "VideoFolder",
    "VideoIndex",
    "IndexFormatError",
    "convert_pickled_index",
    "read_array_index",
    "read_frame_counts",
    "read_index",
    "size_problem",
    "write_array_index",
    "write_index",
]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ogv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
MIN_VIDEO_BYTES = 1024


def size_problem(path: str | os.PathLike, min_bytes: int = MIN_VIDEO_BYTES) -> str | None:
    """Why ``path`` cannot be a video by its size alone (missing, or under ``min_bytes``: the
    official 1 KB rule), or None. The loader and ``jepa video check`` share this rule."""
    try:
        size = os.path.getsize(path)
    except OSError as err:
        return str(err)
    if size < min_bytes:
        return f"{size} bytes, under the {min_bytes}-byte minimum for a video"
    return None


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
    ``StampedDataset`` seeds per sample). ``frame_counts``: each sample's decodable frame count
    when known (None entries: unknown), e.g. from an index written by ``jepa video check``.

    ``padded`` counts, per file, the frames repeated to pad a video shorter than a clip, and
    ``recounted`` the files whose frames ran out before their listed count (both per process).
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
        frame_counts: Sequence[int | None] | None = None,
    ):
        self.samples = [(str(p), int(y)) for p, y in samples]
        if frame_counts is not None and len(frame_counts) != len(self.samples):
            raise ValueError(f"{len(frame_counts)} frame counts for {len(self.samples)} samples")
        self.frame_counts = list(frame_counts) if frame_counts is not None else [None] * len(self.samples)
        self.padded: collections.Counter[str] = collections.Counter()
        self.recounted: set[str] = set()
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
        problem = size_problem(path, self.min_bytes)
        if problem:
            raise CorruptSampleError(f"{path}: {problem}")
        known = self.frame_counts[index]
        with open_video(path, self.backend, threads=self.threads, num_frames=known) as video:
            for attempt in range(2):
                try:
                    clips = self.sampler(video.num_frames, video.fps, self.generator)
                except ShortVideoError as err:
                    raise CorruptSampleError(f"{path}: {err}") from err
                except ValueError as err:  # e.g. fps sampling on a stream without a frame rate
                    raise CorruptSampleError(f"{path}: {err}") from err
                try:
                    frames = video.get_frames(np.concatenate(clips))
                except FramesUnavailableError as err:
                    # the decoder now knows the decodable count: draw again inside it, once
                    if attempt or err.decodable < 1:
                        raise
                    if path not in self.recounted:
                        self.recounted.add(path)
                        log.warning("%s: only the first %d frames decode (%s); clips are drawn from those",
                                    path, err.decodable, "the count is kept for the file")
                    continue
                break
            self._note_padding(path, video.num_frames, video.fps)
        return list(np.split(frames, len(clips)))

    def _note_padding(self, path: str, num_frames: int, fps: float) -> None:
        """Log, once per file, that a video too short for a clip was padded (official rule)."""
        if path in self.padded or not hasattr(self.sampler, "padding"):
            return
        n = self.sampler.padding(num_frames, fps)
        if n:
            self.padded[path] = n
            log.info("%s: %d frames, too short for a clip of %d frames every %d: %d repeated copies of the "
                     "last frame pad it (the official rule; ClipSampler(short_videos='skip') skips such videos)",
                     path, num_frames, self.sampler.frames_per_clip, self.sampler.step_for(fps), n)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        clips = [self.transform(c, self.generator) for c in self.load_clips(index)]
        clip = clips[0] if len(clips) == 1 else torch.stack(clips)
        return clip, self.samples[index][1]


class VideoFolder(ClipDataset):
    """Videos (and images) under ``root``. When ``root`` has sub-folders holding videos, each
    such sub-folder is a class (sorted names, label = position; files directly in ``root``
    get -1); otherwise every file has label -1. Files under ``min_bytes`` (an empty file) are
    kept and raise :class:`CorruptSampleError` when loaded, so the trainer counts them as
    skipped like any other broken file; :attr:`too_small` lists them. ``extensions`` defaults
    to the video extensions (add ``IMAGE_EXTENSIONS`` to take images)."""

    def __init__(self, root: str | os.PathLike, *args, extensions: Sequence[str] = VIDEO_EXTENSIONS, **kwargs):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"no such folder: {self.root}")
        exts = tuple(e.lower() for e in extensions)
        min_bytes = kwargs.get("min_bytes", MIN_VIDEO_BYTES)

        def keep(p: Path) -> bool:
            return p.is_file() and p.name.lower().endswith(exts) and not p.name.startswith(".")

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
        self.too_small = [p for p, _ in samples if not is_image(p) and size_problem(p, min_bytes)]
        if self.too_small:
            log.warning("%s: %d of %d files are under %d bytes (e.g. %s): each is skipped and counted as corrupt "
                        "when drawn", self.root, len(self.too_small), len(samples), min_bytes, self.too_small[0])
        super().__init__(samples, *args, **kwargs)


PICKLE_INDEX_ENV = "JEPA_ALLOW_PICKLE_INDEX"


class IndexFormatError(ConfigError):
    """An index file that cannot be read safely (or at all). A :class:`jepa_core.config.ConfigError`
    (so a ``ValueError``): `jepa pretrain` prints it as an error, without a traceback."""


# The only globals a pickled NumPy array of path strings needs; anything else (os.system, eval,
# builtins, ...) is refused before it is called.
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


def _pickle_allowed(allow_pickle: bool | None) -> bool:
    if allow_pickle is not None:
        return bool(allow_pickle)
    return os.environ.get(PICKLE_INDEX_ENV, "").strip().lower() in ("1", "true", "yes")


def _refused(path: Path) -> IndexFormatError:
    if path.suffix == ".npz":
        return IndexFormatError(
            f"{path} holds a pickled NumPy object array; reading it could run code stored in the file, so it "
            f"is refused. Save the index with string and integer arrays instead: "
            f"np.savez(file, paths=np.array(paths, dtype=str), labels=np.array(labels))"
        )
    return IndexFormatError(
        f"{path} is a pickled NumPy object array (the official V-JEPA .npy index format). Reading it "
        f"could run code stored in the file, so it is refused. Convert it once to a safe index (the "
        f"converter never runs code from the file): python -c \"from jepa_video.datasets import "
        f"convert_pickled_index; convert_pickled_index('{path}')\" (writes {path.with_suffix('.safe.npy')}), "
        f"or write a `path label` .csv; or, if you trust the file, opt in with {PICKLE_INDEX_ENV}=1 "
        f"(even then only plain path strings are accepted)."
    )


def _unpickle_object_index(path: Path) -> list[str]:
    """The path strings of a pickled object-array ``.npy``, read with a restricted unpickler that
    builds only NumPy arrays of strings (never calls anything else stored in the file)."""
    import pickle

    class _Restricted(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            if (module, name) not in _SAFE_GLOBALS:
                raise IndexFormatError(
                    f"{path}: the pickled index refers to {module}.{name}, not allowed in an index (only "
                    f"NumPy arrays of path strings are); the file may be malicious, it was not loaded"
                )
            return super().find_class(module, name)

    fmt = np.lib.format
    with open(path, "rb") as f:
        try:
            version = fmt.read_magic(f)
            if version == (1, 0):
                _shape, _order, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                _shape, _order, dtype = fmt.read_array_header_2_0(f)
            else:
                # private numpy helper (read_magic's other versions), absent from numpy's stubs
                _shape, _order, dtype = fmt._read_array_header(f, version)  # type: ignore[attr-defined]  # noqa: SLF001
        except ValueError as err:
            raise IndexFormatError(f"{path} is not a valid .npy file: {err}") from err
        if not dtype.hasobject:
            raise IndexFormatError(f"{path}: expected a pickled object array, found dtype {dtype}")
        try:
            arr = _Restricted(f).load()
        except IndexFormatError:
            raise
        except Exception as err:  # noqa: BLE001
            raise IndexFormatError(f"{path}: cannot read the pickled index: {err}") from err
    if not isinstance(arr, np.ndarray) or arr.ndim != 1:
        raise IndexFormatError(f"{path}: expected a 1-D array of paths, got {type(arr).__name__}")
    out = []
    for i, v in enumerate(arr.tolist()):
        if isinstance(v, bytes):
            v = v.decode()
        if not isinstance(v, str):
            raise IndexFormatError(f"{path}: entry {i} is a {type(v).__name__}, not a path string")
        out.append(v)
    return out


def _paths_of(arr: np.ndarray, path: Path, what: str) -> list[str]:
    if arr.ndim != 1 or arr.dtype.kind not in "US":
        raise IndexFormatError(f"{path}: {what} must be a 1-D string array (dtype U or S), got "
                               f"shape {arr.shape} dtype {arr.dtype}")
    return [v.decode() if isinstance(v, bytes) else str(v) for v in arr.tolist()]


def read_array_index(path: str | os.PathLike, allow_pickle: bool | None = None) -> list[tuple[str, int]]:
    """The ``(path, label)`` rows of a NumPy index, never unpickling code.

    Safe formats (read with ``allow_pickle=False``):

    * ``.npy``: a 1-D string array (``np.array(paths)``, dtype ``U``/``S``): label 0 each (as the
      official code), or a structured array with fields ``path`` (string) and ``label`` (int);
    * ``.npz``: ``paths`` (1-D strings) and optional ``labels`` (ints, same length; default 0),
      e.g. ``np.savez(f, paths=np.array(paths), labels=np.array(labels))``.

    An old pickled object array (``np.save`` of a list of Python strings with
    ``dtype=object``) raises :class:`IndexFormatError` explaining how to convert it
    (:func:`convert_pickled_index`) unless ``allow_pickle`` (None: the environment variable
    ``JEPA_ALLOW_PICKLE_INDEX=1``); even then a restricted unpickler accepts path strings only.
    """
    path = Path(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" not in str(err):
            raise IndexFormatError(f"{path} is not a valid NumPy index: {err}") from err
        if path.suffix == ".npy" and _pickle_allowed(allow_pickle):
            return [(p, 0) for p in _unpickle_object_index(path)]
        raise _refused(path) from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded as z:
            if "paths" not in z.files:
                raise IndexFormatError(f"{path}: an .npz index needs an array `paths` (and optional `labels`); "
                                       f"found {z.files}")
            try:
                paths = _paths_of(z["paths"], path, "`paths`")
                labels = z["labels"] if "labels" in z.files else np.zeros(len(paths), dtype=np.int64)
            except ValueError as err:
                if isinstance(err, IndexFormatError) or "allow_pickle" not in str(err):
                    raise
                raise _refused(path) from None
        if labels.ndim != 1 or len(labels) != len(paths) or labels.dtype.kind not in "iu":
            raise IndexFormatError(f"{path}: `labels` must be {len(paths)} integers, got shape {labels.shape} "
                                   f"dtype {labels.dtype}")
        return list(zip(paths, (int(y) for y in labels.tolist()), strict=True))
    arr = loaded
    if arr.dtype.names:
        if "path" not in arr.dtype.names:
            raise IndexFormatError(f"{path}: a structured index needs fields `path` and `label`, got {arr.dtype.names}")
        paths = _paths_of(arr["path"], path, "field `path`")
        if "label" not in arr.dtype.names:
            return [(p, 0) for p in paths]
        if arr["label"].dtype.kind not in "iu":
            raise IndexFormatError(f"{path}: field `label` must be integers, got {arr['label'].dtype}")
        return list(zip(paths, (int(y) for y in arr["label"].tolist()), strict=True))
    return [(p, 0) for p in _paths_of(arr, path, "the array")]


def read_frame_counts(path: str | os.PathLike) -> list[int | None] | None:
    """The per-file decodable frame counts an ``.npz`` index carries (array ``num_frames``, as
    ``jepa video check`` writes; a negative entry is unknown), or None when it has none."""
    path = Path(path)
    if path.suffix != ".npz":
        return None
    with np.load(path, allow_pickle=False) as z:
        if "num_frames" not in z.files:
            return None
        counts = z["num_frames"]
    if counts.ndim != 1 or counts.dtype.kind not in "iu":
        raise IndexFormatError(f"{path}: `num_frames` must be integers, got shape {counts.shape} dtype {counts.dtype}")
    return [int(n) if n >= 0 else None for n in counts.tolist()]


def write_array_index(path: str | os.PathLike, rows: Sequence[tuple[str, int]],
                      num_frames: Sequence[int | None] | None = None) -> Path:
    """Write ``(path, label)`` rows as a safe ``.npz`` index (string and integer arrays, never
    pickled), with each file's decodable frame count when given (None: unknown, stored as -1)."""
    path = Path(path)
    arrays: dict[str, Any] = {"paths": np.array([str(p) for p, _ in rows], dtype=str),
                              "labels": np.array([int(y) for _, y in rows], dtype=np.int64)}
    if num_frames is not None:
        if len(num_frames) != len(rows):
            raise ValueError(f"{len(num_frames)} frame counts for {len(rows)} rows")
        arrays["num_frames"] = np.array([-1 if n is None else int(n) for n in num_frames], dtype=np.int64)
    with open(path, "wb") as f:  # np.savez would append .npz to another suffix
        np.savez(f, **arrays)
    return path


def convert_pickled_index(src: str | os.PathLike, dst: str | os.PathLike | None = None) -> Path:
    """Rewrite an old pickled object-array ``.npy`` index (the official V-JEPA format) as a safe
    string array (readable without ``allow_pickle``, by this package and by NumPy). Reads the
    source with a restricted unpickler (path strings only; never runs code from the file).
    ``dst`` defaults to ``<src stem>.safe.npy``. Returns ``dst``."""
    src = Path(src)
    dst = Path(dst) if dst is not None else src.with_suffix(".safe.npy")
    paths = _unpickle_object_index(src)
    np.save(dst, np.array(paths, dtype=str), allow_pickle=False)
    return dst


def read_index(path: str | os.PathLike, root: str | os.PathLike | None = None,
               allow_pickle: bool | None = None) -> list[tuple[str, int]]:
    """The ``(path, label)`` entries of one official index file.

    ``.csv``/text: one ``path label`` per line, separated by a space (V-JEPA; V-JEPA 2 falls
    back to ``::``); the label is the last field, so paths may contain spaces; a line with a
    path alone gets label -1. ``.npy`` / ``.npz``: read without unpickling (see
    :func:`read_array_index`). Relative paths are taken relative to ``root``, or to the index
    file's folder when ``root`` is None (the official code uses them as given, relative to the
    working directory).

    ``allow_pickle``: read an old pickled (object-array) ``.npy`` index; None (default) takes
    the environment variable ``JEPA_ALLOW_PICKLE_INDEX=1``. Even then only plain path strings
    are accepted (a restricted unpickler); convert such a file once with
    :func:`convert_pickled_index` instead.
    """
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    if path.suffix in (".npy", ".npz"):
        rows = read_array_index(path, allow_pickle)
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
    :attr:`dataset_ids` tells which file each sample came from. ``allow_pickle``: see
    :func:`read_index` (old pickled ``.npy`` indexes; off by default).
    """

    def __init__(
        self,
        csv_paths: str | os.PathLike | Sequence[str | os.PathLike],
        weights: Sequence[float] | None = None,
        *args,
        root: str | os.PathLike | None = None,
        allow_pickle: bool | None = None,
        **kwargs,
    ):
        paths = [csv_paths] if isinstance(csv_paths, str | os.PathLike) else list(csv_paths)
        if not paths:
            raise ValueError("no index files given")
        if weights is not None and len(weights) != len(paths):
            raise ValueError(f"{len(weights)} weights for {len(paths)} index files")
        samples, ids, sizes, counts = [], [], [], []
        for d, p in enumerate(paths):
            rows = read_index(p, root, allow_pickle)
            if not rows:
                raise ValueError(f"index file {p} lists no samples")
            samples += rows
            counts += read_frame_counts(p) or [None] * len(rows)
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
        kwargs.setdefault("frame_counts", counts)
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
