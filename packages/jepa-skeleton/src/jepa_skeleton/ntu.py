"""NTU RGB+D 60 / 120 ``.skeleton`` files: a strict parser, sample names, the standard
benchmarks' splits and a converter to one ``.npz`` of fixed-length arrays.

File format (Shahroudy et al., CVPR 2016; field order as read by
``2s-AGCN:data_gen/ntu_gendata.py``, ``read_skeleton_filter``)::

    numFrame
    then per frame:   numBody
      per body:       bodyID clipedEdges handLeftConfidence handLeftState handRightConfidence
                      handRightState isResticted leanX leanY trackingState      (10 fields)
                      numJoint                                                  (25)
      per joint:      x y z depthX depthY colorX colorY orientationW orientationX
                      orientationY orientationZ trackingState                   (12 fields)

Only the camera-space ``x y z`` (metres) of each joint are kept.

Body selection. Frames without a body are dropped (as ``MAMP:data/ntu/get_raw_skes_data.py``
does). Bodies are tracked by their ``bodyID`` across frames (MAMP) rather than by their rank
in each frame (2s-AGCN); each body's *motion* is MAMP's: the sum over x, y, z of the variance
of its joint coordinates pooled over its frames and joints. The ``max_bodies`` bodies with the
largest motion are kept, the most moving one in slot 0 (2s-AGCN likewise keeps the two bodies
of largest "energy", the summed standard deviation). Ties keep the order of first appearance.
MAMP's further denoising (dropping short or implausibly wide bodies and merging bodies with
disjoint frame intervals into the second actor slot, ``MAMP:data/ntu/get_raw_denoised_data.py``)
is not done here.

Splits (``2s-AGCN:data_gen/ntu_gendata.py`` for NTU-60, ``MAMP:data/ntu120/
seq_transformation.py`` for NTU-120): cross-subject trains on a fixed list of performers,
cross-view on cameras 2 and 3, cross-setup on the even setup numbers. The action label is the
``A`` number minus one.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = [
    "BENCHMARKS", "NTU60_TRAIN_SUBJECTS", "NTU120_TRAIN_SUBJECTS", "SkeletonFormatError",
    "convert_ntu", "main", "ntu_split", "parse_ntu_name", "read_skeleton",
]

log = logging.getLogger(__name__)

NUM_JOINTS = 25

NTU60_TRAIN_SUBJECTS = frozenset(
    (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38))
NTU120_TRAIN_SUBJECTS = NTU60_TRAIN_SUBJECTS | frozenset(
    (45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85,
     86, 89, 91, 92, 93, 94, 95, 97, 98, 100, 103))
NTU60_TRAIN_CAMERAS = frozenset((2, 3))

#: benchmark -> (number of classes, highest setup number of the dataset)
BENCHMARKS = {"xsub60": (60, 17), "xview60": (60, 17), "xsub120": (120, 32),
              "xset120": (120, 32)}

_NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")


class SkeletonFormatError(ValueError):
    """A malformed ``.skeleton`` file; the message names the file and the line."""


# ------------------------------------------------------------------------------- reading
class _Lines:
    """The lines of a file, handed out one at a time with their 1-based numbers."""

    def __init__(self, path: Path):
        self.path = path
        with open(path, encoding="utf-8", errors="replace") as f:
            self.lines = f.read().splitlines()
        self.i = 0

    def error(self, msg: str, lineno: int | None = None) -> SkeletonFormatError:
        return SkeletonFormatError(f"{self.path.name}, line {lineno or self.i}: {msg}")

    def next_fields(self, what: str) -> list[str]:
        if self.i >= len(self.lines):
            raise SkeletonFormatError(
                f"{self.path.name}, line {self.i + 1}: file ends early (truncated), "
                f"expected {what}")
        line = self.lines[self.i]
        self.i += 1
        return line.split()

    def count(self, what: str) -> int:
        fields = self.next_fields(what)
        if len(fields) != 1:
            raise self.error(f"expected {what} (one integer), got {len(fields)} fields")
        try:
            n = int(fields[0])
        except ValueError:
            raise self.error(f"expected {what} (an integer), got {fields[0]!r}") from None
        if n < 0:
            raise self.error(f"negative {what}: {n}")
        return n

    def numbers(self, what: str, n: int, keep: int) -> list[float]:
        fields = self.next_fields(what)
        if len(fields) != n:
            raise self.error(f"expected {what} with {n} fields, got {len(fields)}")
        try:
            values = [float(v) for v in fields[:keep]]
        except ValueError:
            raise self.error(f"non-numeric value in {what}: {' '.join(fields[:keep])!r}") \
                from None
        if not all(math.isfinite(v) for v in values):  # float() reads "nan" and "inf"
            raise self.error(f"non-finite value in {what}: {' '.join(fields[:keep])!r}")
        return values


def read_skeleton(path: str | os.PathLike, max_bodies: int = 2) -> np.ndarray:
    """Joint positions of a ``.skeleton`` file: float32 ``(T, max_bodies, 25, 3)``.

    ``T`` counts the frames with at least one body; a slot whose body is absent from a frame
    (or a slot with no body at all) is zero. Bodies are chosen as described in the module
    docstring. Raises :class:`SkeletonFormatError` (file name and line number) on a truncated
    file, a bad count, a non-numeric or non-finite (NaN, inf) joint coordinate, a wrong number
    of fields or a joint count other than 25. A file whose frames all have zero bodies gives ``T = 0``.
    """
    if max_bodies < 1:
        raise ValueError(f"max_bodies must be >= 1, got {max_bodies}")
    src = _Lines(Path(path))
    num_frames = src.count("the number of frames")
    frames: list[dict[str, np.ndarray]] = []  # per kept frame: bodyID -> (25, 3)
    for _ in range(num_frames):
        num_bodies = src.count("the number of bodies")
        if num_bodies == 0:
            continue
        bodies: dict[str, np.ndarray] = {}
        for _ in range(num_bodies):
            body_line = src.i + 1
            fields = src.next_fields("a body line")
            if len(fields) != 10:
                raise src.error(f"expected a body line with 10 fields, got {len(fields)}")
            body_id = fields[0]
            njoints = src.count("the number of joints")
            if njoints != NUM_JOINTS:
                raise src.error(f"expected {NUM_JOINTS} joints, got {njoints} (body of line "
                                f"{body_line})")
            bodies[body_id] = np.array(
                [src.numbers("a joint line", 12, 3) for _ in range(NUM_JOINTS)], np.float32)
        frames.append(bodies)
    rest = [k for k in range(src.i, len(src.lines)) if src.lines[k].strip()]
    if rest:
        raise src.error(f"unexpected data after the last of {num_frames} frames", rest[0] + 1)

    out = np.zeros((len(frames), max_bodies, NUM_JOINTS, 3), np.float32)
    tracks: dict[str, list[tuple[int, np.ndarray]]] = {}  # insertion order = first appearance
    for t, bodies in enumerate(frames):
        for body_id, joints in bodies.items():
            tracks.setdefault(body_id, []).append((t, joints))
    motion = {b: float(np.var(np.concatenate([j for _, j in tr]), axis=0).sum())
              for b, tr in tracks.items()}
    order = sorted(tracks, key=lambda b: -motion[b])  # stable: ties by first appearance
    for slot, body_id in enumerate(order[:max_bodies]):
        for t, joints in tracks[body_id]:
            out[t, slot] = joints
    return out


# ------------------------------------------------------------------------------- names
def parse_ntu_name(name: str | os.PathLike) -> dict[str, int]:
    """``SsssCcccPpppRrrrAaaa`` (any directory or extension) -> ``setup, camera, performer,
    replication, action`` (the numbers of the name, 1-based) and ``label`` (``action - 1``)."""
    m = _NAME.search(Path(name).name)
    if m is None:
        raise ValueError(f"not an NTU RGB+D sample name (SsssCcccPpppRrrrAaaa): {name!r}")
    s, c, p, r, a = (int(g) for g in m.groups())
    return {"setup": s, "camera": c, "performer": p, "replication": r, "action": a,
            "label": a - 1}


def ntu_split(name: str | os.PathLike, benchmark: str) -> str:
    """``"train"`` or ``"test"`` for the sample ``name`` under ``benchmark`` (``xsub60``,
    ``xview60``, ``xsub120`` or ``xset120``)."""
    info = parse_ntu_name(name)
    if benchmark == "xsub60":
        train = info["performer"] in NTU60_TRAIN_SUBJECTS
    elif benchmark == "xview60":
        train = info["camera"] in NTU60_TRAIN_CAMERAS
    elif benchmark == "xsub120":
        train = info["performer"] in NTU120_TRAIN_SUBJECTS
    elif benchmark == "xset120":
        train = info["setup"] % 2 == 0
    else:
        raise ValueError(f"unknown NTU benchmark {benchmark!r}; valid: {sorted(BENCHMARKS)}")
    return "train" if train else "test"


# ------------------------------------------------------------------------------- convert
def _names(ignore: str | os.PathLike | Iterable[str] | None) -> set[str]:
    if ignore is None:
        return set()
    if isinstance(ignore, str | os.PathLike) and Path(ignore).is_file():
        ignore = Path(ignore).read_text().split()
    return {Path(str(n)).name.split(".")[0] for n in ignore}  # type: ignore[union-attr]


def convert_ntu(
    skeleton_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    benchmark: str,
    num_frames: int = 300,
    max_bodies: int = 2,
    ignore: str | os.PathLike | Iterable[str] | None = None,
    center: bool = False,
) -> dict:
    """Read every ``*.skeleton`` file of ``skeleton_dir`` and write ``out_path`` (``.npz``).

    Keys: ``x_train``, ``x_test`` float32 ``(N, 3, num_frames, 25, max_bodies)`` (zero
    padded after the last valid frame; longer sequences are cut to ``num_frames`` and
    counted), ``y_train``, ``y_test`` int64 labels (``A`` number - 1), ``names_train``,
    ``names_test`` (sample names). For the NTU-60 benchmarks only the NTU-60 samples (actions
    1-60, setups 1-17) are taken, so the folder may hold NTU-120. ``ignore`` (names, or a text
    file of names such as NTU's list of samples with missing skeletons) is left out.
    ``center=True`` translates each sample as :func:`jepa_skeleton.preprocess.center` does
    (MAMP does this offline, ``MAMP:data/ntu/seq_transformation.py``); the default keeps
    camera coordinates and leaves centring to the transform.

    Unreadable files (:class:`SkeletonFormatError`, or no frame with a body) are skipped and
    counted. Returns a summary: ``train``, ``test`` (counts written), ``skipped`` (count),
    ``skipped_files`` (names), ``errors`` (name -> message), ``ignored``, ``excluded``
    (outside the benchmark's dataset), ``truncated`` (names of sequences cut).
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown NTU benchmark {benchmark!r}; valid: {sorted(BENCHMARKS)}")
    num_classes, max_setup = BENCHMARKS[benchmark]
    root = Path(skeleton_dir)
    files = sorted(root.glob("*.skeleton"))
    if not files:
        raise FileNotFoundError(f"no .skeleton files in {root}")
    skip_names = _names(ignore)
    summary: dict = {"train": 0, "test": 0, "skipped": 0, "skipped_files": [], "errors": {},
                     "ignored": 0, "excluded": 0, "truncated": []}
    chosen: list[tuple[Path, dict, str]] = []
    for f in files:
        stem = f.name[: -len(".skeleton")]
        if stem in skip_names:
            summary["ignored"] += 1
            continue
        try:
            info = parse_ntu_name(stem)
        except ValueError as err:
            summary["skipped"] += 1
            summary["skipped_files"].append(f.name)
            summary["errors"][f.name] = str(err)
            continue
        if info["action"] > num_classes or info["setup"] > max_setup:
            summary["excluded"] += 1
            continue
        chosen.append((f, info, ntu_split(stem, benchmark)))

    counts = {s: sum(1 for *_, sp in chosen if sp == s) for s in ("train", "test")}
    x = {s: np.zeros((n, 3, num_frames, NUM_JOINTS, max_bodies), np.float32)
         for s, n in counts.items()}
    y: dict[str, list[int]] = {"train": [], "test": []}
    names: dict[str, list[str]] = {"train": [], "test": []}
    for f, info, split in chosen:
        try:
            seq = read_skeleton(f, max_bodies)
            if len(seq) == 0:
                raise SkeletonFormatError(f"{f.name}: no frame has a body")
        except (SkeletonFormatError, OSError, UnicodeDecodeError) as err:
            log.warning("skipping %s: %s", f.name, err)
            summary["skipped"] += 1
            summary["skipped_files"].append(f.name)
            summary["errors"][f.name] = str(err)
            continue
        if len(seq) > num_frames:
            summary["truncated"].append(f.name)
            seq = seq[:num_frames]
        arr = np.ascontiguousarray(seq.transpose(3, 0, 2, 1))  # (C, T, V, M)
        if center:
            import torch

            from .preprocess import center as center_fn
            arr = center_fn(torch.from_numpy(arr)).numpy()
        i = len(y[split])
        x[split][i, :, : arr.shape[1]] = arr
        y[split].append(info["label"])
        names[split].append(f.name[: -len(".skeleton")])
    out = {}
    for s in ("train", "test"):
        n = len(y[s])
        out[f"x_{s}"] = x[s][:n]
        out[f"y_{s}"] = np.asarray(y[s], np.int64)
        out[f"names_{s}"] = np.asarray(names[s], dtype=str)
        summary[s] = n
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(out_path, **out)  # type: ignore[arg-type]  # numpy's stub types **kwds as one bool
    return summary


def main(argv: list[str] | None = None) -> dict:
    """``python -m jepa_skeleton.ntu SKELETON_DIR OUT.npz --benchmark xsub60``."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m jepa_skeleton.ntu", description=main.__doc__)
    p.add_argument("skeleton_dir", help="folder of NTU RGB+D *.skeleton files")
    p.add_argument("out", help="output .npz")
    p.add_argument("--benchmark", required=True, choices=sorted(BENCHMARKS))
    p.add_argument("--num-frames", type=int, default=300)
    p.add_argument("--max-bodies", type=int, default=2)
    p.add_argument("--ignore", default=None,
                   help="text file of sample names to leave out (e.g. NTU's list of samples "
                        "with missing skeletons)")
    p.add_argument("--center", action="store_true", help="centre each sample as MAMP does")
    a = p.parse_args(argv)
    summary = convert_ntu(a.skeleton_dir, a.out, a.benchmark, a.num_frames, a.max_bodies,
                          a.ignore, a.center)
    brief = {k: v for k, v in summary.items() if k not in ("errors", "truncated")}
    brief["truncated"] = len(summary["truncated"])
    print(json.dumps(brief, indent=1))
    return summary


if __name__ == "__main__":
    main()
