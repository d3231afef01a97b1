"""Small videos that expose the ways decoders return the wrong frame, each frame carrying its
own index as a visible code.

Every frame holds its index as 8 binary blocks (16 x 16 px, bright = 1) in the top half and a
moving ramp below (so the codec has motion to predict and B-frames are really used).
:func:`read_code` reads the index back from a decoded frame, so a test can tell which frame a
backend returned, not only whether two backends agree. :func:`make_case` writes one of
:data:`CASES` with PyAV (a few dozen 64 x 64 frames, milliseconds each):

* H.264 and MPEG-4 Part 2, with B-frames and long GOPs, in MP4 and AVI;
* variable frame rate (irregular timestamps);
* a file whose header overstates its frame count (an AVI and an MP4 cut short);
* a file whose final frame does not decode (its packet overwritten).

:func:`reference_decode` is the ground truth: one sequential PyAV decode, no seeking.
Used by the tests, by ``jepa bench --cases data`` and ``jepa video check --selftest``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["CASES", "BITS", "Case", "accuracy_table", "draw_code", "make_case", "make_cases", "read_code",
           "reference_decode"]

BITS = 8  # indices 0..255
_BLOCK = 16
_LOW, _HIGH = 40, 215


def draw_code(index: int, size: int = 64) -> np.ndarray:
    """Frame ``index`` as uint8 ``[size, size, 3]``: its bits as blocks, a moving ramp below."""
    if not 0 <= index < 2**BITS:
        raise ValueError(f"index {index} outside [0, {2**BITS})")
    if size < 4 * _BLOCK:
        raise ValueError(f"size must be >= {4 * _BLOCK}")
    frame = np.zeros((size, size, 3), np.uint8)
    per_row = size // _BLOCK
    for b in range(BITS):
        r, c = divmod(b, per_row)
        frame[r * _BLOCK:(r + 1) * _BLOCK, c * _BLOCK:(c + 1) * _BLOCK] = _HIGH if index >> b & 1 else _LOW
    top = (BITS + per_row - 1) // per_row * _BLOCK
    yy, xx = np.mgrid[top:size, :size]
    frame[top:, :, 0] = (xx * 4 + index * 6) % 256
    frame[top:, :, 1] = (yy * 3 + index * 2) % 256
    frame[top:, :, 2] = 128
    return frame


def read_code(frame: np.ndarray) -> int:
    """The index drawn by :func:`draw_code` (read from the centre of each block), or -1 when a
    block is neither clearly dark nor clearly bright (not a code frame, or badly damaged)."""
    per_row = frame.shape[1] // _BLOCK
    value = 0
    for b in range(BITS):
        r, c = divmod(b, per_row)
        q = _BLOCK // 4
        mean = float(frame[r * _BLOCK + q:(r + 1) * _BLOCK - q, c * _BLOCK + q:(c + 1) * _BLOCK - q].mean())
        if abs(mean - (_LOW + _HIGH) / 2) < (_HIGH - _LOW) / 4:
            return -1
        value |= int(mean > (_LOW + _HIGH) / 2) << b
    return value


@dataclass(frozen=True)
class Case:
    """One generated file. ``frames`` are encoded; ``decodable`` is how many a sequential decode
    gives back (fewer when the file is damaged); ``header_frames`` is what the container's
    header claims when it lies (None: it does not)."""

    name: str
    codec: str  # "h264" | "mpeg4"
    container: str  # "mp4" | "avi"
    frames: int = 48
    gop: int = 24
    bframes: int = 2
    vfr: bool = False
    damage: str | None = None  # None | "truncate" | "last_frame"
    description: str = ""


CASES: dict[str, Case] = {c.name: c for c in (
    Case("h264_mp4", "h264", "mp4", description="H.264, 3 B-frames, GOP 24, MP4"),
    Case("h264_mp4_longgop", "h264", "mp4", frames=64, gop=250, bframes=3,
         description="H.264, 3 B-frames, one key frame (GOP longer than the clip), MP4"),
    Case("h264_avi", "h264", "avi", bframes=3, description="H.264, 3 B-frames, GOP 24, AVI (timestamps in decode order)"),
    Case("mpeg4_avi", "mpeg4", "avi", gop=250, bframes=2,
         description="MPEG-4 Part 2, 2 B-frames, one key frame, AVI"),
    Case("mpeg4_mp4", "mpeg4", "mp4", bframes=2, description="MPEG-4 Part 2, 2 B-frames, GOP 24, MP4"),
    Case("vfr_mp4", "h264", "mp4", vfr=True, description="H.264, variable frame rate (irregular timestamps), MP4"),
    Case("truncated_avi", "mpeg4", "avi", frames=64, gop=16, bframes=0, damage="truncate",
         description="MPEG-4 Part 2 AVI cut at 55 %: the header lists 64 frames"),
    Case("truncated_mp4", "h264", "mp4", frames=64, gop=16, bframes=2, damage="truncate",
         description="H.264 MP4, index at the front, cut at 55 %: the index lists 64 frames"),
    Case("bad_last_frame_mp4", "h264", "mp4", frames=48, gop=24, bframes=0, damage="last_frame",
         description="H.264 MP4 whose final frame's packet is overwritten with zeros"),
)}


def _encode(path: Path, case: Case, size: int) -> None:
    import av

    opts = {"movflags": "faststart"} if case.container == "mp4" and case.damage == "truncate" else {}
    with av.open(str(path), "w", format=case.container, options=opts) as out:
        s = out.add_stream("libx264" if case.codec == "h264" else "mpeg4", rate=24)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.gop_size = case.gop
        s.codec_context.thread_count = 1  # byte-for-byte reproducible files
        o = {"bf": str(case.bframes)}
        if case.codec == "h264":
            # constant quality, no scene-cut key frames (they would shorten the long GOP)
            o.update({"crf": "12", "sc_threshold": "0", "keyint_min": str(case.gop)})
        else:
            o.update({"qscale": "3", "sc_threshold": "1000000000"})
            s.codec_context.qmin = s.codec_context.qmax = 3
        s.codec_context.options = o
        if case.vfr:
            from fractions import Fraction

            s.codec_context.time_base = Fraction(1, 240)
        pts = 0
        for i in range(case.frames):
            f = av.VideoFrame.from_ndarray(draw_code(i, size), format="rgb24")
            if case.vfr:
                f.pts, f.time_base = pts, s.codec_context.time_base
                pts += (5, 10, 20, 7)[i % 4]  # 12-48 fps, irregular
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def _zero_last_frame(path: Path) -> None:
    """Overwrite the packet of the last frame in presentation order with zeros."""
    import av

    with av.open(str(path)) as c:
        packets = [(p.pts, p.pos, p.size) for p in c.demux(video=0) if p.size]
    _, pos, size = max(packets)
    assert pos is not None  # the mp4 demuxer knows each packet's byte position
    with open(path, "r+b") as f:
        f.seek(pos)
        f.write(b"\0" * size)


def make_case(name: str, out_dir: str | os.PathLike, size: int = 64) -> Path:
    """Write case ``name`` of :data:`CASES` under ``out_dir`` (``<name>.<container>``)."""
    case = CASES[name]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.{case.container}"
    _encode(path, case, size)
    if case.damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * 0.55)])
    elif case.damage == "last_frame":
        _zero_last_frame(path)
    return path


def make_cases(out_dir: str | os.PathLike, names=None, size: int = 64) -> dict[str, Path]:
    """Every case (or ``names``) written under ``out_dir``: ``{name: path}``."""
    return {n: make_case(n, out_dir, size) for n in (names or CASES)}


def reference_decode(path: str | os.PathLike) -> np.ndarray:
    """Every frame a straight PyAV decode gives, in output order, uint8 ``[T, H, W, 3]``: the
    ground truth the backends are held to. A packet the demuxer read only in part (a cut file)
    is not a frame; decoder errors on single packets are skipped, as a player would, and the
    frames before and after still count. Written independently of the backends on purpose."""
    import av

    from .decoders import library_messages

    frames = []
    with library_messages(str(path)), av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "NONE"
        packets = c.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError:
                break  # the demuxer cannot go on (cut file)
            if packet.size and packet.is_corrupt:
                continue  # read only in part (a cut file): not a frame
            try:
                frames += [f.to_ndarray(format="rgb24") for f in packet.decode()]
            except av.error.FFmpegError:
                continue
    if not frames:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack(frames)


def accuracy_table(paths: dict[str, Path], backends) -> dict[str, dict[str, str]]:
    """``{backend: {case: result}}`` for the files of :func:`make_cases`: each backend opens
    each file and reads every frame, then spread and single frames (the requests a clip
    sampler makes); ``result`` is ``"exact"`` (every frame equals the sequential decode's, by
    its code and within colour-conversion rounding), ``"wrong k of n"``, or ``"error: ..."``
    for a refusal (an error is what a backend should give for frames it cannot return)."""
    from . import decoders

    refs = {name: reference_decode(p) for name, p in paths.items()}
    table: dict[str, dict[str, str]] = {}
    for backend in backends:
        table[backend] = {}
        for name, path in paths.items():
            # each backend learns the frame counts on its own
            getattr(decoders, "clear_caches", lambda: None)()
            ref = refs[name]
            n_ref = len(ref)
            wrong = total = 0
            errors: list[str] = []
            try:
                with decoders.open_video(path, backend) as v:
                    for request in range(5):
                        n = v.num_frames  # lowered when a request finds frames that do not decode
                        idx = (list(range(n)), np.linspace(0, n - 1, 7).astype(int).tolist(), [n - 1], [0],
                               [n // 2, 3, n - 1])[request]
                        try:
                            got = v.get_frames(idx)
                        except Exception as err:  # noqa: BLE001 - any refusal is recorded
                            errors.append(type(err).__name__)
                            continue
                        for i, frame in zip(idx, got, strict=True):
                            total += 1
                            ok = i < n_ref and read_code(frame) == read_code(ref[i]) and \
                                np.abs(frame.astype(np.int16) - ref[i].astype(np.int16)).mean() < 1.5
                            wrong += not ok
            except Exception as err:  # noqa: BLE001
                table[backend][name] = f"error on open: {type(err).__name__}"
                continue
            if wrong:
                result = f"wrong {wrong} of {total}"
            elif errors:
                result = f"exact, {total} frames; refused {len(errors)} requests ({', '.join(sorted(set(errors)))})"
            else:
                result = f"exact, {total} frames"
            table[backend][name] = result
    return table
