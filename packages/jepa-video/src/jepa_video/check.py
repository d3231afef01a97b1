"""``jepa video check <folder|index> ...``: decode every file once, report frame counts,
damaged files and backend disagreement, and write a clean index.

Per file, the same checks the training loader applies (:mod:`jepa_video.datasets`):

1. size: missing, or under the 1 KB minimum -> ``corrupt``;
2. a sequential PyAV decode counts the frames that decode
   (:func:`jepa_video.decoders.count_decodable_frames`): none -> ``corrupt``; fewer than the
   container header or the packet index lists (a cut file, a damaged final frame) ->
   ``damaged`` (still usable: clips are drawn inside the decodable frames);
3. each installed backend (or ``--backends``) opens the file and reads 8 spread frames
   including the last decodable one; a refusal, a different count or frames that differ from
   PyAV's (beyond colour-conversion rounding) is a ``disagreement``;
4. the decoder libraries' messages (FFmpeg warnings) are counted per file.

The clean index (``--out``, default ``<folder>/checked.npz`` or ``<index>.checked.npz``) is
the safe ``.npz`` format of :func:`jepa_video.datasets.write_array_index`: ``paths``,
``labels`` and each file's decodable ``num_frames``, which :class:`~jepa_video.datasets.VideoIndex`
reads so the clip sampler never asks for a frame past it. Corrupt files are left out, damaged
ones kept (``--drop-damaged`` leaves them out too). Exit status: 0 when every file is fine, 1
when any is corrupt, damaged or disputed (the index is written all the same), 2 on a usage
error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .datasets import (
    MIN_VIDEO_BYTES,
    VideoFolder,
    is_image,
    read_index,
    size_problem,
    write_array_index,
)
from .decoders import (
    MESSAGE_COUNTS,
    available_backends,
    count_decodable_frames,
    open_video,
    stream_index,
)

__all__ = ["FileReport", "check_file", "check_files", "main"]

# colour conversion differs slightly between FFmpeg builds: above this mean |difference|
# (of 255) two backends returned different frames
AGREEMENT_TOLERANCE = 1.5


@dataclasses.dataclass
class FileReport:
    path: str
    label: int
    status: str = "ok"  # ok | damaged | corrupt | image
    num_frames: int | None = None  # frames that decode (sequential decode)
    listed_frames: int | None = None  # whole packets in the file
    header_frames: int | None = None  # what the container header claims (0: unknown)
    fps: float | None = None
    messages: int = 0  # decoder library messages while checking
    problems: list[str] = dataclasses.field(default_factory=list)
    disagreement: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def fine(self) -> bool:
        return self.status in ("ok", "image") and not self.disagreement


def check_file(path: str, label: int = -1, backends: Sequence[str] | None = None,
               min_bytes: int = MIN_VIDEO_BYTES) -> FileReport:
    """Check one file (see the module doc); never raises for a bad file."""
    before = MESSAGE_COUNTS[str(path)]
    rep = _check(str(path), int(label), backends, min_bytes)
    rep.messages = MESSAGE_COUNTS[str(path)] - before
    return rep


def _check(path: str, label: int, backends: Sequence[str] | None, min_bytes: int) -> FileReport:
    rep = FileReport(path, label)
    if is_image(path):
        rep.status = "image"
        return rep
    problem = size_problem(path, min_bytes)
    if problem:
        rep.status, rep.problems = "corrupt", [problem]
        return rep
    try:
        info = stream_index(path)
        rep.listed_frames, rep.header_frames = info.frames, info.header_frames
    except Exception as err:  # noqa: BLE001 - the demuxer cannot read it
        rep.status, rep.problems = "corrupt", [f"cannot be opened: {err}"]
        return rep
    n = count_decodable_frames(path)
    rep.num_frames = n
    if n < 1:
        rep.status, rep.problems = "corrupt", ["no frame decodes"]
        return rep
    if info.header_frames > n:
        rep.problems.append(f"the header lists {info.header_frames} frames, {n} decode")
    if info.frames > n:
        rep.problems.append(f"{info.frames} whole packets, {n} frames decode")
    if info.cut_packets:
        rep.problems.append(f"{info.cut_packets} packet(s) cut short (the file ends early)")
    if rep.problems:
        rep.status = "damaged"
    idx = sorted({int(i) for i in np.linspace(0, n - 1, 8).round()})
    try:
        with open_video(path, "pyav", threads=1, num_frames=n) as v:
            rep.fps = v.fps
            ref = v.get_frames(idx).astype(np.int16)
    except Exception as err:  # noqa: BLE001
        rep.status = "corrupt"
        rep.problems.append(f"frames that decoded in sequence cannot be read back: {err}")
        return rep
    for b in backends if backends is not None else available_backends():
        if b == "pyav":
            continue
        try:
            with open_video(path, b, threads=1) as v:
                if v.num_frames != n:
                    rep.disagreement[b] = f"{v.num_frames} frames, not {n}"
                got = v.get_frames([i for i in idx if i < v.num_frames]).astype(np.int16)
        except Exception as err:  # noqa: BLE001
            rep.disagreement[b] = f"refuses it: {str(err).splitlines()[0][:200]}"
            continue
        diff = np.abs(got - ref[: len(got)]).mean(axis=(1, 2, 3))
        bad = [i for i, d in zip(idx, diff, strict=False) if d > AGREEMENT_TOLERANCE]
        if bad:
            rep.disagreement[b] = f"frames {bad} differ from PyAV's (mean |diff| up to {diff.max():.1f})"
    return rep


def _check_one(args) -> FileReport:
    return check_file(*args)


def check_files(rows: Sequence[tuple[str, int]], backends: Sequence[str] | None = None, jobs: int = 1,
                min_bytes: int = MIN_VIDEO_BYTES, progress=None) -> list[FileReport]:
    """:func:`check_file` over ``(path, label)`` rows, in ``jobs`` processes; order kept."""
    work = [(p, y, backends, min_bytes) for p, y in rows]
    if jobs <= 1:
        out = []
        for w in work:
            out.append(_check_one(w))
            if progress:
                progress(out[-1])
        return out
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs) as pool:
        out = []
        for r in pool.map(_check_one, work, chunksize=4):
            out.append(r)
            if progress:
                progress(r)
        return out


def _rows_of(sources: Sequence[str], root: str | None) -> tuple[list[tuple[str, int]], Path]:
    rows: list[tuple[str, int]] = []
    default_out = None
    for s in sources:
        p = Path(s)
        if p.is_dir():
            rows += VideoFolder(p, backend="pyav").samples
            default_out = default_out or p / "checked.npz"
        elif p.is_file():
            rows += read_index(p, root)
            default_out = default_out or p.with_name(p.name.rsplit(".", 1)[0] + ".checked.npz")
        else:
            raise FileNotFoundError(f"no such folder or index file: {p}")
    assert default_out is not None  # sources is non-empty (argparse nargs="+")
    return rows, default_out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jepa video", description="Video data tools (jepa-video).")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="decode every file once: frame counts, damaged files, backend "
                       "disagreement; writes a clean .npz index with the frame counts")
    c.add_argument("sources", nargs="+", help="folders of videos (classes from sub-folders) or index files "
                   "(.csv `path label`, .npy, .npz)")
    c.add_argument("--out", help="clean index to write (default <folder>/checked.npz or <index>.checked.npz)")
    c.add_argument("--root", help="folder that relative index paths are relative to (default: the index's)")
    c.add_argument("--backends", help="comma-separated backends to compare with PyAV (default: all installed; "
                   "'none': no comparison)")
    c.add_argument("--drop-damaged", action="store_true", help="leave damaged (cut, short of their header) files "
                   "out of the clean index too")
    c.add_argument("--jobs", type=int, default=1, help="processes (default 1)")
    c.add_argument("--min-bytes", type=int, default=MIN_VIDEO_BYTES)
    c.add_argument("--json", help="also write every file's report to this JSON file")
    c.add_argument("-v", "--verbose", action="store_true", help="one line per file, fine ones included")
    return p


def _line(r: FileReport) -> str:
    bits = [f"{r.status:8s}", r.path]
    if r.num_frames is not None:
        bits.append(f"{r.num_frames} frames")
    if r.problems:
        bits.append("; ".join(r.problems))
    if r.disagreement:
        bits.append("disagree: " + "; ".join(f"{b} {why}" for b, why in r.disagreement.items()))
    if r.messages:
        bits.append(f"{r.messages} decoder messages")
    return "  ".join(bits)


def main(argv: list[str] | None = None) -> int:
    """``jepa video check ...`` (entry point ``jepa.commands``: ``video``)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        rows, default_out = _rows_of(args.sources, args.root)
    except (FileNotFoundError, ValueError) as err:
        print(f"jepa video: error: {err}", file=sys.stderr)
        return 2
    if args.backends is None:
        backends = None
    elif args.backends.strip() == "none":
        backends = []
    else:
        backends = [b.strip() for b in args.backends.split(",") if b.strip()]
        unknown = [b for b in backends if b not in available_backends()]
        if unknown:
            parser.error(f"backends {unknown} are not available here; installed: {available_backends()}")
    print(f"checking {len(rows)} files (compared backends: "
          f"{', '.join(b for b in (backends if backends is not None else available_backends()) if b != 'pyav') or 'none'})",
          file=sys.stderr)

    def progress(r: FileReport) -> None:
        if args.verbose or not r.fine or r.messages:
            print(_line(r))

    reports = check_files(rows, backends, args.jobs, args.min_bytes, progress)
    counts = {s: sum(r.status == s for r in reports) for s in ("ok", "damaged", "corrupt", "image")}
    disputed = sum(bool(r.disagreement) for r in reports)
    keep = [r for r in reports if r.status != "corrupt" and not (args.drop_damaged and r.status == "damaged")]
    out = Path(args.out) if args.out else default_out
    write_array_index(out, [(os.path.abspath(r.path), r.label) for r in keep], [r.num_frames for r in keep])
    frames = [r.num_frames for r in reports if r.num_frames]
    print(f"{len(reports)} files: {counts['ok']} ok, {counts['damaged']} damaged, {counts['corrupt']} corrupt"
          + (f", {counts['image']} images" if counts["image"] else "")
          + f"; {disputed} with backend disagreement; "
          f"{sum(r.messages for r in reports)} decoder messages in {sum(bool(r.messages) for r in reports)} files")
    if frames:
        print(f"frames per video: min {min(frames)}, median {int(np.median(frames))}, max {max(frames)}")
    print(f"clean index: {out} ({len(keep)} files, with their decodable frame counts)")
    if args.json:
        Path(args.json).write_text(json.dumps([dataclasses.asdict(r) for r in reports], indent=1))
    return 0 if all(r.fine for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
