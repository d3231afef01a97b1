"""Skeleton datasets: fixed-size arrays (NTU ``.npz`` / ``.npy``), folders of per-sequence
``.npy`` files, and class-balanced labelled subsets.

Every dataset returns ``(x, label)`` with ``x`` a float32 tensor ``(C, T, V, M)`` (coordinates,
frames, joints, bodies) after the optional ``transform(x)`` (e.g.
:class:`jepa_skeleton.preprocess.MAMPTransform`; called without a generator, so its draws
come from the global torch generator, which the Trainer seeds per sample). A sample with no
valid frame or a non-finite coordinate raises :class:`jepa_core.data.CorruptSampleError`,
which :func:`jepa_core.data.collate_stamped` skips and counts.

Array layouts read by :class:`SkeletonArrays`:

* ``(N, C, T, V, M)``: :func:`jepa_skeleton.ntu.convert_ntu`,
  :func:`jepa_skeleton.synthetic.write_npz`, and 2s-AGCN's ``<part>_data_joint.npy``
  (``2s-AGCN:data_gen/ntu_gendata.py``) with its ``<part>_label.pkl`` of ``(names, labels)``;
* ``(N, T, M * V * C)``: MAMP's ``NTU60_XSub.npz`` and the like
  (``MAMP:data/ntu/seq_transformation.py``; each frame is body 0's 25 joints then body 1's,
  ``x y z`` per joint), reshaped on load as ``MAMP:feeder/feeder_ntu.py`` does.

Labels may be integers or one-hot rows (MAMP), which become their argmax.
"""

from __future__ import annotations

import os
import pickle
import struct
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from jepa_core.data import CorruptSampleError
from torch.utils.data import Dataset

from .graph import NTU25, SkeletonGraph, get_graph

__all__ = ["SkeletonArrays", "SkeletonFolder", "subset_fraction"]


def _labels(y) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2:  # one-hot (or scores): the largest entry
        y = y.argmax(1)
    if y.ndim != 1:
        raise ValueError(f"labels must be (N,) or one-hot (N, K), got shape {y.shape}")
    return y.astype(np.int64)


def _load_labels(path: Path) -> np.ndarray:
    if path.suffix == ".pkl":
        with open(path, "rb") as f:
            obj = pickle.load(f)  # noqa: S301  (a local label file the user names)
        if isinstance(obj, tuple | list) and len(obj) == 2 and not np.isscalar(obj[0]):
            obj = obj[1]  # 2s-AGCN: (sample_names, labels)
        return _labels(obj)
    return _labels(np.load(path, allow_pickle=False))


def _npz_member(path: Path, key: str) -> np.ndarray:
    """Member ``key`` of the ``.npz`` at ``path``, memory-mapped when it is stored
    uncompressed (``np.savez``) in a version 1/2 ``.npy`` without Python objects, else
    loaded."""
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(key + ".npy")
        if info.compress_type == zipfile.ZIP_STORED:
            with open(path, "rb") as f:
                f.seek(info.header_offset)
                local = f.read(30)
                if local[:4] == b"PK\x03\x04":
                    name_len, extra_len = struct.unpack("<HH", local[26:30])
                    f.seek(info.header_offset + 30 + name_len + extra_len)
                    version = np.lib.format.read_magic(f)
                    read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                                   (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                    if read_header is not None:
                        shape, fortran, dtype = read_header(f)
                        if not dtype.hasobject:
                            return np.memmap(path, dtype=dtype, mode="r", offset=f.tell(),
                                             shape=shape, order="F" if fortran else "C")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, struct.error):
        pass
    with np.load(path, allow_pickle=False) as z:
        return z[key]


def _check(x: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.isfinite(x).all():
        raise CorruptSampleError(f"{what}: non-finite joint coordinates")
    if not (x != 0).any():
        raise CorruptSampleError(f"{what}: no valid frame (all joints zero)")
    return x


class SkeletonArrays(Dataset):
    """Samples of a fixed-size skeleton array file.

    ``path``: an ``.npz`` with ``x_<split>`` and ``y_<split>`` (``labels_key`` names another
    label key), or an ``.npy`` of samples with ``labels_path`` (an ``.npy`` of labels or a
    2s-AGCN ``.pkl``; ``labels_key`` may give that path too). Samples are memory-mapped from
    an ``.npy`` or an uncompressed ``.npz`` (``np.savez``, as written by this package and by
    MAMP), so loader workers share the pages; a compressed ``.npz`` is loaded whole.

    The joint count must match ``graph`` (ValueError naming both otherwise). When
    ``max_bad_fraction`` is not None the samples are scanned once at construction: the
    indices with no valid frame or a non-finite value are kept in :attr:`bad_indices`, and
    more than ``max_bad_fraction`` of them raise ValueError. Those samples raise
    CorruptSampleError on access; :attr:`num_bad` counts such accesses in this process.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        labels_key: str | None = None,
        graph: SkeletonGraph | str = NTU25,
        max_bad_fraction: float | None = 0.05,
        labels_path: str | os.PathLike | None = None,
    ):
        self.path, self.split, self.transform = Path(path), split, transform
        self.graph = get_graph(graph)
        if self.path.suffix == ".npz":
            with np.load(self.path, allow_pickle=False) as z:
                xk, yk = f"x_{split}", labels_key or f"y_{split}"
                for k in (xk, yk):
                    if k not in z.files:
                        raise KeyError(f"{self.path.name} has no {k!r}; keys: {z.files}")
                y = _labels(z[yk])
            x = _npz_member(self.path, xk)
        elif self.path.suffix == ".npy":
            x = np.load(self.path, mmap_mode="r", allow_pickle=False)
            lp = labels_path or labels_key
            if lp is None:
                raise ValueError(f"{self.path.name}: an .npy of samples needs labels_path")
            y = _load_labels(Path(lp))
        else:
            raise ValueError(f"expected an .npz or .npy file, got {self.path}")
        self.x = self._layout(x)
        if len(y) != len(self.x):
            raise ValueError(f"{self.path.name}: {len(self.x)} samples but {len(y)} labels")
        self.labels = y
        self.num_classes = int(y.max()) + 1 if len(y) else 0
        self.num_bad = 0
        self.bad_indices = np.zeros(0, np.int64)
        if max_bad_fraction is not None and len(self.x):
            self.bad_indices = self._scan()
            frac = len(self.bad_indices) / len(self.x)
            if frac > max_bad_fraction:
                raise ValueError(
                    f"{self.path.name} [{split}]: {len(self.bad_indices)} of {len(self.x)} "
                    f"samples ({frac:.1%}) have no valid frame or non-finite values, more than "
                    f"max_bad_fraction={max_bad_fraction}")

    def _layout(self, x: np.ndarray) -> np.ndarray:
        V = self.graph.num_joints
        if x.ndim == 5:  # (N, C, T, V, M)
            self.graph.validate(x, joint_dim=3)
            return x
        if x.ndim == 3:  # MAMP: (N, T, M * V * C), C = 3
            D = x.shape[2]
            if D % 3 or (D // 3) % V:
                raise ValueError(
                    f"{self.path.name}: {self.graph.name} expects {V} joints, but frames of "
                    f"{D} values are not M x {V} joints x 3 coordinates")
            N, T, M = x.shape[0], x.shape[1], D // (3 * V)
            return x.reshape(N, T, M, V, 3).transpose(0, 4, 1, 3, 2)
        raise ValueError(f"{self.path.name}: expected (N, C, T, V, M) or (N, T, M*V*C) "
                         f"samples, got shape {x.shape}")

    def _scan(self, chunk: int = 256) -> np.ndarray:
        bad = []
        for s in range(0, len(self.x), chunk):
            b = np.asarray(self.x[s:s + chunk], np.float32).reshape(min(chunk, len(self.x) - s),
                                                                     -1)
            nonfinite = ~np.isfinite(b).all(1)
            empty = ~(b != 0).any(1)
            bad.extend((s + np.flatnonzero(nonfinite | empty)).tolist())
        return np.asarray(bad, np.int64)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(np.array(self.x[index], np.float32))
        try:
            x = _check(x, f"{self.path.name} [{self.split}] sample {index}")
            if self.transform is not None:
                x = self.transform(x)
        except CorruptSampleError:
            self.num_bad += 1
            raise
        return x, int(self.labels[index])


class SkeletonFolder(Dataset):
    """Per-sequence ``.npy`` files ``root/<class>/<name>.npy``, classes sorted by name.

    Each file holds ``(T, V, C)`` or ``(T, M, V, C)`` with ``C`` 2 or 3 (2-D keypoints get a
    zero third coordinate). Items are ``(x (3, T, V, M), label)`` with ``M`` the file's (1 for
    ``(T, V, C)``), padded with zero bodies or cut to ``num_bodies`` when given. Sequence
    lengths vary: batch them after a ``transform`` that fixes the length (e.g.
    :class:`jepa_skeleton.preprocess.MAMPTransform`). A file whose joint count does not match
    ``graph`` raises ValueError at construction (file and both counts named); a file that
    cannot be read, has another shape, no valid frame or non-finite values raises
    CorruptSampleError when accessed.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        graph: SkeletonGraph | str = "coco17",
        transform: Callable | None = None,
        num_bodies: int | None = None,
    ):
        self.root, self.graph, self.transform = Path(root), get_graph(graph), transform
        self.num_bodies = num_bodies
        self.classes = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        if not self.classes:
            raise FileNotFoundError(f"no class folders in {self.root}")
        self.num_classes = len(self.classes)
        self.samples: list[tuple[Path, int]] = []
        for label, c in enumerate(self.classes):
            for f in sorted((self.root / c).glob("*.npy")):
                self._check_joints(f)
                self.samples.append((f, label))
        if not self.samples:
            raise FileNotFoundError(f"no .npy files under {self.root}/<class>/")
        self.labels = np.array([lab for _, lab in self.samples], np.int64)
        self.num_bad = 0

    def _check_joints(self, f: Path) -> None:
        try:
            shape = np.load(f, mmap_mode="r", allow_pickle=False).shape
        except Exception:  # unreadable: skipped (CorruptSampleError) when accessed
            return
        if len(shape) in (3, 4) and shape[-2] != self.graph.num_joints:
            raise ValueError(f"{f}: {self.graph.name} expects {self.graph.num_joints} joints, "
                             f"got {shape[-2]} (shape {shape})")

    def __len__(self) -> int:
        return len(self.samples)

    def _read(self, f: Path) -> torch.Tensor:
        try:
            a = np.load(f, allow_pickle=False)
        except Exception as err:
            raise CorruptSampleError(f"{f}: unreadable ({err})") from err
        if a.ndim == 3:
            a = a[:, None]
        if a.ndim != 4 or a.shape[-1] not in (2, 3) or a.shape[-2] != self.graph.num_joints:
            raise CorruptSampleError(f"{f}: expected (T, V, C) or (T, M, V, C) with V="
                                     f"{self.graph.num_joints} and C 2 or 3, got {a.shape}")
        x = torch.from_numpy(np.asarray(a, np.float32)).permute(3, 0, 2, 1)  # (C, T, V, M)
        if x.shape[0] == 2:
            x = torch.cat([x, torch.zeros_like(x[:1])])
        if self.num_bodies is not None:
            M = x.shape[-1]
            if M > self.num_bodies:
                x = x[..., : self.num_bodies]
            elif M < self.num_bodies:
                pad = torch.zeros(*x.shape[:-1], self.num_bodies - M)
                x = torch.cat([x, pad], -1)
        return _check(x.contiguous(), str(f))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        f, label = self.samples[index]
        try:
            x = self._read(f)
            if self.transform is not None:
                x = self.transform(x)
        except CorruptSampleError:
            self.num_bad += 1
            raise
        return x, label


def subset_fraction(labels: Sequence[int] | np.ndarray, fraction: float, seed: int = 0
                    ) -> np.ndarray:
    """Sorted indices of a class-balanced subset: ``max(1, round(fraction * n_c))`` random
    samples of each class ``c`` with ``n_c`` samples, drawn from ``seed`` alone (so the same
    labels give the same subset). MAMP's semi-supervised feeder draws ``int(N * ratio)``
    samples uniformly instead (``MAMP:feeder/feeder_ntu_semi.py``); a balanced draw keeps
    every class at 1 % of NTU-60 (about 7 samples a class)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(1, int(round(fraction * len(idx))))
        keep.append(rng.permutation(idx)[:k])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
