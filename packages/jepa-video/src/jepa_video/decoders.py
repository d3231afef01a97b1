"""Video decoders behind one interface.

``open_video(path, backend="auto")`` returns a :class:`VideoDecoder` with ``num_frames``,
``fps``, ``height``, ``width`` and ``get_frames(indices) -> uint8 ndarray [T, H, W, C]`` (RGB).
Frame ``i`` is the ``i``-th frame a sequential decode gives (presentation order), with every
backend; that is tested on generated files that break naive seeking
(:mod:`jepa_video.testvideos`). Three backends:

``pyav``
    PyAV (``av``), a hard dependency: wheels for every OS and Python 3.11-3.13, with FFmpeg
    bundled. Opening demuxes the stream once (no decoding; cached per file) to learn every
    frame's timestamp and the key frames; ``get_frames`` then seeks to the key frame before
    each run of requested frames and decodes forward, checking that each frame that comes out
    carries the next timestamp in presentation order. At the first one that does not (AVI,
    whose timestamps are decode times; open GOPs; missing timestamps) it falls back, for the
    rest of the file, to a sequential decode of the span up to the last requested frame.
``torchcodec``
    ``torchcodec`` (extra ``jepa-video[torchcodec]``) in its exact seek mode; needs FFmpeg 4-9
    shared libraries on the system (Debian: ``apt-get install ffmpeg``, or only
    ``libavutil57 libavcodec59 libavformat59 libavdevice59 libavfilter8 libswscale6
    libswresample4``), so it counts as available only when it loads. It numbers frames by
    timestamps, so files whose timestamps cannot number them (AVI) are handed to the PyAV path.
``decord``
    ``decord==0.6.0`` (what the official V-JEPA code uses), installed only where it has wheels
    (x86_64 Linux and Windows). Its seeking returns wrong frames on MPEG-4 Part 2 and on AVI, so
    it is used only on H.264 with real timestamps (exact in every measurement); other files
    are read sequentially from the first frame (exact, slower for late frames).

Frame counts: ``num_frames`` is the number of whole packets, never what the container header
claims (a cut file's header lists frames it lacks). When a request still runs past the last
frame that decodes (a damaged final frame), the file is decoded once sequentially
(:func:`count_decodable_frames`, cached per file), ``num_frames`` is lowered and
:class:`FramesUnavailableError` (a ``CorruptSampleError`` with ``decodable``) is raised; the
datasets then draw the clip again inside. A frame that torchcodec or decord fail on but a
sequential decode gives is read through the PyAV path.

``backend="auto"`` takes the first available of ``AUTO_ORDER`` = torchcodec, pyav, decord:
measured accuracy first, then speed (README, "Which decoder"): on the generated failure
cases torchcodec and PyAV return exact frames on all 9, decord on 8 (it cannot open a cut MP4),
and on real files torchcodec is the fastest, then PyAV, then decord (whose exact sequential
reads, off H.264, cost 3-8x on long videos). The environment variable ``JEPA_VIDEO_BACKEND`` overrides
the automatic choice. Any failure to open or decode a file raises
:class:`jepa_core.data.CorruptSampleError` naming the path, which the trainer's loader skips
and counts.

The decoder libraries' own messages (FFmpeg's ``[h264 @ 0x...] ...``) never reach the
terminal: :func:`library_messages` collects them while a file is opened or decoded, logs
them at DEBUG on ``jepa_video.ffmpeg`` and counts them per file (:data:`MESSAGE_COUNTS`,
``VideoDecoder.messages``).
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import dataclasses
import importlib
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from jepa_core.data import CorruptSampleError

__all__ = [
    "BACKENDS",
    "AUTO_ORDER",
    "MESSAGE_COUNTS",
    "FramesUnavailableError",
    "StreamIndex",
    "VideoDecoder",
    "PyAVDecoder",
    "DecordDecoder",
    "TorchCodecDecoder",
    "available_backends",
    "clear_caches",
    "count_decodable_frames",
    "default_backend",
    "known_frame_count",
    "library_messages",
    "open_video",
    "remember_frame_count",
    "resolve_backend",
    "stream_index",
]

# measured accuracy first, speed second (see the module doc and the README)
AUTO_ORDER = ("torchcodec", "pyav", "decord")
ENV_VAR = "JEPA_VIDEO_BACKEND"
log = logging.getLogger(__name__)


class VideoDecoder:
    """One opened video. Subclasses set ``path``, ``num_frames``, ``fps``, ``height`` and
    ``width`` when opened and implement :meth:`_get`."""

    backend: str = ""
    path: str
    num_frames: int
    #: frames the container header claims (0: unknown); may exceed ``num_frames`` in a cut file
    header_frames: int = 0
    #: decoder library messages (FFmpeg warnings, errors) printed while opening and decoding
    messages: int = 0
    fps: float
    height: int
    width: int
    #: the PyAV decoder that reads frames this backend failed on (opened on first need)
    _pyav: PyAVDecoder | None

    def __len__(self) -> int:
        return self.num_frames

    @property
    def duration(self) -> float:
        """Length in seconds (num_frames / fps)."""
        return self.num_frames / self.fps if self.fps > 0 else 0.0

    def get_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """The frames at ``indices`` (any order, repeats allowed) as uint8 ``[T, H, W, 3]`` RGB."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_frames):
            raise IndexError(f"{self.path}: frame indices {idx.tolist()} outside [0, {self.num_frames})")
        if idx.size == 0:
            return np.zeros((0, self.height, self.width, 3), np.uint8)
        try:
            with library_messages(self.path, self):
                out = self._get(idx)
        except IndexError:
            raise
        except Exception as err:  # noqa: BLE001 - every decoder error means "cannot decode"
            failure = self._failure(idx, err)
            if isinstance(failure, FramesUnavailableError) or self.backend == "pyav":
                raise failure from err
            # frames that decode sequentially but not through this library (a damaged file):
            # the verified PyAV path reads them
            try:
                out = self._pyav_fallback(idx)
            except Exception:  # noqa: BLE001
                raise failure from err
        return np.ascontiguousarray(out, dtype=np.uint8)

    def _pyav_fallback(self, idx: np.ndarray) -> np.ndarray:
        if getattr(self, "_pyav", None) is None:
            with library_messages(self.path, self):
                self._pyav = PyAVDecoder(self.path, threads=1)
        self.fallbacks = getattr(self, "fallbacks", 0) + 1
        log.debug("%s: %s failed on frames %s; decoded by the PyAV path", self.path, self.backend, idx.tolist())
        with library_messages(self.path, self):
            return self._pyav._get(idx)

    def _failure(self, idx: np.ndarray, err: Exception) -> CorruptSampleError:
        """The error to raise for a failed request: :class:`FramesUnavailableError` when it
        asked past the last frame a sequential decode gives (counted now, once per file)."""
        if isinstance(err, FramesUnavailableError):
            return err
        n = count_decodable_frames(self.path)
        past = sorted({int(i) for i in idx.tolist() if i >= n})
        if past:
            listed = f"{self.num_frames} listed" + (f", {self.header_frames} in the header" if self.header_frames
                                                    and self.header_frames != self.num_frames else "")
            self.num_frames = min(self.num_frames, n)
            return FramesUnavailableError(f"{self.path}: frames {past} do not decode: only {n} of the video's "
                                          f"frames do ({listed}; {self.backend}: {err})", n)
        if isinstance(err, CorruptSampleError) and self.path in str(err):
            return err
        return CorruptSampleError(f"{self.path}: {self.backend} failed to decode frames: {err}")

    def _get(self, idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _close_fallback(self) -> None:
        if getattr(self, "_pyav", None) is not None:
            self._pyav.close()
            self._pyav = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        self._close_fallback()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.path!r}, num_frames={self.num_frames}, fps={self.fps:g}, "
                f"size={self.height}x{self.width})")


# ----------------------------------------------------------------------- library messages

#: FFmpeg's and decord's own messages (``[h264 @ 0x...] ...``) end up here, at DEBUG level, so
#: they stay out of progress bars unless asked for (``logging.getLogger("jepa_video.ffmpeg")``).
ffmpeg_log = logging.getLogger("jepa_video.ffmpeg")
#: path -> decoder library messages seen for it in this process (see :func:`library_messages`)
MESSAGE_COUNTS: collections.Counter[str] = collections.Counter()
CAPTURE_ENV = "JEPA_VIDEO_STDERR"  # "1": leave the libraries' stderr alone (nothing captured)
# an FFmpeg line ("[h264 @ 0x55d...] error ...") or a decord/dmlc one ("[13:01:18] src/...: ...")
_LIBRARY_LINE = re.compile(r"^\[(?:[^\]@]+ @ (?:0x)?[0-9a-fA-F]+|\d\d:\d\d:\d\d)\]")
_capture_lock = threading.RLock()
_capture_state: dict[str, Any] = {"depth": 0, "file": None}


@contextlib.contextmanager
def library_messages(path: str, owner: VideoDecoder | None = None):
    """Collect what the decoder libraries print to the process's stderr (file descriptor 2)
    while decoding ``path``: each FFmpeg or decord line is logged at DEBUG on
    ``jepa_video.ffmpeg`` and counted in :data:`MESSAGE_COUNTS` (and ``owner.messages``); any
    other text written meanwhile goes back to stderr. The C libraries write to the descriptor,
    not to ``sys.stderr``, so it is redirected to a temporary file for the duration (threads
    of one process decode one at a time meanwhile). ``JEPA_VIDEO_STDERR=1`` turns this off."""
    if os.environ.get(CAPTURE_ENV, "").strip() == "1":
        yield
        return
    with _capture_lock:
        st = _capture_state
        if st["depth"]:  # nested (open inside a capture): the outer one collects
            st["depth"] += 1
            try:
                yield
            finally:
                st["depth"] -= 1
            return
        try:
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - a closed or replaced sys.stderr
            pass
        if st["file"] is None:
            st["file"] = tempfile.TemporaryFile()
        f = st["file"]
        f.seek(0)
        f.truncate()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all (a daemon): nothing to collect
            yield
            return
        os.dup2(f.fileno(), 2)
        st["depth"] = 1
        pyav_quiet = _pyav_messages_on()
        try:
            yield
        finally:
            st["depth"] = 0
            if pyav_quiet:
                _pyav_messages_off()
            os.dup2(saved, 2)
            os.close(saved)
            f.seek(0)
            text = f.read().decode(errors="replace")
            if text:
                _route_messages(text, path, owner)


def _pyav_messages_on() -> bool:
    """PyAV keeps its FFmpeg silent by default (no log callback, so no warnings at all). While
    capturing, FFmpeg's own C callback prints warnings to the captured descriptor instead (never
    PyAV's Python callback, which can deadlock with decoder threads). True when PyAV was in its
    default state and must be put back; a level the user set is left alone."""
    av_logging = sys.modules.get("av.logging")
    if av_logging is None or av_logging.get_level() is not None:
        return False
    av_logging.restore_default_callback()
    av_logging.set_libav_level(av_logging.WARNING)
    return True


def _pyav_messages_off() -> None:
    sys.modules["av.logging"].set_level(None)


def _route_messages(text: str, path: str, owner: VideoDecoder | None) -> None:
    other = []
    for line in text.splitlines(keepends=True):
        if _LIBRARY_LINE.match(line):
            MESSAGE_COUNTS[path] += 1
            if owner is not None:
                owner.messages += 1
            ffmpeg_log.debug("%s: %s", path, line.rstrip())
        elif line.strip():
            other.append(line)
    if other:
        os.write(2, "".join(other).encode())


# -------------------------------------------------------------------- per-file stream facts


class FramesUnavailableError(CorruptSampleError):
    """Frames were asked for past the last frame that decodes (a cut file, a damaged final
    frame, a header that lists more frames than the file holds). ``decodable``: how many
    frames a sequential decode gives; the decoder's ``num_frames`` is lowered to it, and the
    count is remembered for the file (:func:`known_frame_count`), so the next clip drawn from
    it stays inside. A :class:`CorruptSampleError`, so the trainer skips and counts it when
    nobody redraws."""

    def __init__(self, message: str, decodable: int = -1):
        super().__init__(message)
        self.decodable = decodable

    def __reduce__(self):  # keep ``decodable`` across processes (DataLoader workers)
        return type(self), (str(self), self.decodable)


def _file_key(path: str | os.PathLike) -> tuple[str, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


# (path, size, mtime) -> count: a changed file is counted again
_DECODABLE: dict[tuple[str, int, int], int] = {}
_INDEXES: dict[tuple[str, int, int], StreamIndex] = {}
_CACHE_MAX = 65536


def _cache_put(cache: dict, key, value) -> None:
    if len(cache) >= _CACHE_MAX:
        cache.pop(next(iter(cache)))  # oldest first (dicts keep insertion order)
    cache[key] = value


def remember_frame_count(path: str | os.PathLike, num_frames: int) -> None:
    """Record the decodable frame count of ``path`` (e.g. from an index written by
    ``jepa video check``): :func:`open_video` then never reports more."""
    key = _file_key(path)
    if key is not None:
        _cache_put(_DECODABLE, key, int(num_frames))


def clear_caches() -> None:
    """Forget the frame counts and stream indexes learned in this process."""
    _DECODABLE.clear()
    _INDEXES.clear()


def known_frame_count(path: str | os.PathLike) -> int | None:
    """The decodable frame count recorded for ``path`` in this process, or None."""
    key = _file_key(path)
    return _DECODABLE.get(key) if key is not None else None


def _packets(container, stream, counter: list[int] | None = None):
    """The stream's packets that hold a whole frame: a packet the demuxer could read only in
    part (a cut file) is left out, since it would decode to a damaged frame."""
    for packet in container.demux(stream):
        if packet.size and packet.is_corrupt:
            if counter is not None:
                counter[0] += 1
            continue
        yield packet


def _decoded(container, stream):
    """Frames in output order from the current position; a packet that fails to decode is
    skipped (what players do), the flush at the end gives the delayed frames."""
    import av

    for packet in _packets(container, stream):
        try:
            yield from packet.decode()
        except av.error.FFmpegError:
            continue


def count_decodable_frames(path: str | os.PathLike) -> int:
    """How many frames a sequential PyAV decode of ``path`` gives (no seeking, no colour
    conversion): the frame count to trust when the header or the packet index lies. Computed
    once per file and process (cached by path, size and modification time)."""
    import av

    key = _file_key(path)
    if key is not None and key in _DECODABLE:
        return _DECODABLE[key]
    with library_messages(str(path)):
        try:
            with av.open(str(path)) as c:
                stream = c.streams.video[0]
                stream.thread_type = "AUTO"
                n = sum(1 for _ in _decoded(c, stream))
        except (av.error.FFmpegError, IndexError):
            n = 0
    if key is not None:
        _cache_put(_DECODABLE, key, n)
    return n


@dataclasses.dataclass(frozen=True)
class StreamIndex:
    """What demuxing a file (no decoding) tells: ``frames`` whole packets, ``header_frames``
    what the container header claims (0: unknown), ``pts`` the presentation timestamps sorted
    (None when missing or repeated), ``keys`` the key frames' positions in presentation order,
    ``avi`` whether the container is AVI, ``decode_order_pts`` whether the stream reorders
    frames (B-frames) while its timestamps rise in decode order, i.e. they are decode times
    (AVI again): for these two only a sequential decode numbers the frames reliably;
    ``cut_packets`` packets the demuxer could read only in part, ``codec`` FFmpeg's name of the
    codec (``h264``, ``mpeg4``, ...)."""

    frames: int
    header_frames: int
    pts: tuple[int, ...] | None
    keys: tuple[int, ...]
    avi: bool
    decode_order_pts: bool = False
    cut_packets: int = 0
    codec: str = ""

    @property
    def timestamps_number_frames(self) -> bool:
        """Whether frame ``i`` can be found by its timestamp (else decode sequentially)."""
        return self.pts is not None and not self.avi and not self.decode_order_pts


def stream_index(path: str | os.PathLike, container=None) -> StreamIndex:
    """The :class:`StreamIndex` of ``path`` (cached per file and process)."""
    import av

    key = _file_key(path)
    if key is not None and key in _INDEXES:
        return _INDEXES[key]
    own = container is None
    c = av.open(str(path)) if own else container
    try:
        if not c.streams.video:
            raise ValueError("no video stream")
        stream = c.streams.video[0]
        pts, keys, cut = [], [], [0]
        for packet in _packets(c, stream, cut):
            if packet.size == 0:
                continue  # the flush packet at the end
            pts.append(packet.pts if packet.pts is not None else packet.dts)
            keys.append(bool(packet.is_keyframe))
        header = int(stream.frames or 0)
        avi = "avi" in (c.format.name or "").split(",")
        reorders = bool(stream.codec_context.has_b_frames)
        codec = stream.codec_context.name or ""
    finally:
        if own:
            c.close()
    usable = all(p is not None for p in pts) and len(set(pts)) == len(pts)
    if usable:
        order = sorted(range(len(pts)), key=lambda i: pts[i])
        rank = {i: r for r, i in enumerate(order)}
        spts = tuple(pts[i] for i in order)
        key_pos = sorted(rank[i] for i in range(len(pts)) if keys[i])
    else:
        spts, key_pos = None, []
    if not key_pos or key_pos[0] != 0:
        key_pos = [0, *key_pos]
    in_decode_order = usable and all(a < b for a, b in zip(pts, pts[1:], strict=False))
    out = StreamIndex(len(pts), header, spts, tuple(key_pos), avi, reorders and in_decode_order and len(pts) > 2,
                      cut[0], codec)
    if key is not None:
        _cache_put(_INDEXES, key, out)
    return out


# --------------------------------------------------------------------------------------- PyAV


class PyAVDecoder(VideoDecoder):
    """PyAV backend with exact frame indexing (see the module doc)."""

    backend = "pyav"

    def __init__(self, path: str | os.PathLike, threads: int = 0):
        import av

        self.path = str(path)
        self._container: av.container.InputContainer | None
        try:
            self._container = av.open(self.path)
            if not self._container.streams.video:
                raise ValueError("no video stream")
            stream = self._container.streams.video[0]
            self._stream = stream
            info = stream_index(self.path, self._container)
            if info.frames:
                self._container.seek(0)
        except Exception as err:  # noqa: BLE001
            self.close()
            raise CorruptSampleError(f"{self.path}: PyAV could not open the video: {err}") from err
        if not info.frames:
            self.close()
            raise CorruptSampleError(f"{self.path}: no video frames")
        self.info = info
        # A header may list more frames than the file holds (a cut file): the whole packets
        # count, and frames that still do not decode are found when asked for.
        self.num_frames = info.frames
        self.header_frames = info.header_frames
        self._exact = info.pts is not None
        self._pts, self._key_idx = info.pts, list(info.keys)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.fps = float(rate) if rate else 0.0
        ctx = stream.codec_context
        self.height, self.width = int(ctx.height), int(ctx.width)
        if threads != 1:
            stream.thread_type = "AUTO"
            if threads > 1:
                stream.thread_count = threads

    def close(self) -> None:
        c = getattr(self, "_container", None)
        if c is not None:
            c.close()
            self._container = None

    def _rgb(self, frame) -> np.ndarray:
        return frame.to_ndarray(format="rgb24")

    def _get(self, idx: np.ndarray) -> np.ndarray:
        wanted = sorted(set(idx.tolist()))
        got = self._decode_seeking(wanted) if self._exact else None
        if got is None:
            self._exact = False  # the timestamps proved unreliable: count frames from now on
            got = self._decode_sequential(wanted)
        missing = [i for i in wanted if i not in got]
        if missing:
            raise CorruptSampleError(f"frames {missing} could not be decoded")
        return np.stack([got[i] for i in idx.tolist()])

    def _decode_sequential(self, wanted: list[int]) -> dict[int, np.ndarray]:
        """Decode from the start, counting frames in output order: the verified fallback for
        streams whose timestamps do not number the frames (AVI, missing or repeated pts)."""
        self._container.seek(0)
        need, last, got = set(wanted), max(wanted), {}
        for i, frame in enumerate(_decoded(self._container, self._stream)):
            if i in need:
                got[i] = self._rgb(frame)
            if i >= last:
                break
        return got

    def _decode_seeking(self, wanted: list[int]) -> dict[int, np.ndarray] | None:
        """Seek to the key frame before each run of wanted frames and decode forward, checking
        that every frame that comes out is the one whose timestamp is next in presentation
        order. None (fall back to a sequential decode) at the first frame that is not."""
        pts, need = self._pts, set(wanted)
        assert pts is not None  # called only while self._exact, i.e. the stream has exact timestamps
        got: dict[int, np.ndarray] = {}
        frames = None  # the running decode
        pos = -1  # index of the last frame it gave
        for target in wanted:
            if target in got:
                continue
            key = self._key_idx[bisect.bisect_right(self._key_idx, target) - 1]
            if frames is None or pos >= target or key > pos + 1:
                self._container.seek(pts[key], stream=self._stream, backward=True, any_frame=False)
                frames = _decoded(self._container, self._stream)
                pos = key - 1
                # frames before the key frame (an earlier key frame, leading B-frames) are skipped
                start: int | None = pts[key]
            else:
                start = None
            while pos < target:
                frame = next(frames, None)
                if frame is None:
                    return None
                if start is not None and frame.pts is not None and frame.pts < start:
                    continue
                start = None
                if frame.pts != pts[pos + 1]:
                    return None
                pos += 1
                if pos in need:
                    got[pos] = self._rgb(frame)
        return got


# ------------------------------------------------------------------------------------- decord


class DecordDecoder(VideoDecoder):
    """decord backend: ``VideoReader(path, num_threads=threads, ctx=cpu(0))``. decord's
    seeking returns wrong frames on MPEG-4 Part 2 (in MP4 and AVI) and on AVI (README, "Which
    decoder"); it was exact on every H.264 file with real timestamps (MP4) we measured. So
    H.264 with usable timestamps goes through decord's own ``get_batch`` (``native``), and any
    other file is read sequentially from the first frame, in chunks, keeping the requested
    ones: exact, at the cost of decoding the span up to the last requested frame."""

    backend = "decord"
    CHUNK = 32  # frames per get_batch call: bounds the memory of the sequential read
    NATIVE_CODECS = ("h264",)

    def __init__(self, path: str | os.PathLike, threads: int = 0):
        import decord

        self.path = str(path)
        try:
            self._vr = decord.VideoReader(self.path, num_threads=threads, ctx=decord.cpu(0))
            self.fps = float(self._vr.get_avg_fps())
            info = stream_index(self.path)
            self.native = info.timestamps_number_frames and info.codec in self.NATIVE_CODECS
            # decord counts a frame the demuxer could read only in part (a cut file)
            self.num_frames = min(len(self._vr), info.frames)
            self.header_frames = info.header_frames
            if self.num_frames < 1:
                raise ValueError("no video frames")
            self.height, self.width = (int(s) for s in self._vr[0].shape[:2])
            self._vr.seek(0)
        except Exception as err:  # noqa: BLE001 - decord raises DECORDError and plain RuntimeErrors
            raise CorruptSampleError(f"{self.path}: decord could not open the video: {err}") from err

    def _get(self, idx: np.ndarray) -> np.ndarray:
        if self.native:
            out = self._vr.get_batch(idx.tolist()).asnumpy()
            self._vr.seek(0)  # decord keeps decoder state between calls; start the next one clean
            return out
        need, last = set(idx.tolist()), int(idx.max())
        got: dict[int, np.ndarray] = {}
        self._vr.seek(0)
        for lo in range(0, last + 1, self.CHUNK):
            run = list(range(lo, min(lo + self.CHUNK, last + 1)))
            keep = [i for i in run if i in need]
            if not keep:
                # decoded all the same (a skip would seek), but not converted to arrays
                self._vr.get_batch(run)
                continue
            batch = self._vr.get_batch(run).asnumpy()
            for i in keep:
                got[i] = batch[i - lo]
        self._vr.seek(0)  # decord keeps decoder state between calls; start the next one clean
        return np.stack([got[i] for i in idx.tolist()])

    def close(self) -> None:
        self._vr = None


# --------------------------------------------------------------------------------- torchcodec


class TorchCodecDecoder(VideoDecoder):
    """torchcodec backend (exact seek mode, NHWC output). torchcodec numbers frames by their
    timestamps, which AVI (and any stream whose timestamps are decode times) cannot back:
    such files are decoded by the PyAV path (sequential, verified) instead, and ``delegate``
    says so."""

    backend = "torchcodec"

    def __init__(self, path: str | os.PathLike, threads: int = 0):
        from torchcodec.decoders import VideoDecoder as _TCDecoder

        self.path = str(path)
        self.delegate: VideoDecoder | None = None
        self._dec: _TCDecoder | None
        kw: dict[str, Any] = dict(dimension_order="NHWC", num_ffmpeg_threads=threads, device="cpu")
        try:
            info = stream_index(self.path)
            self.header_frames = info.header_frames
            if not info.timestamps_number_frames:
                self.delegate = PyAVDecoder(self.path, threads)
                d = self.delegate
                self.num_frames, self.fps, self.height, self.width = d.num_frames, d.fps, d.height, d.width
                return
            try:
                self._dec = _TCDecoder(self.path, seek_mode="exact", **kw)
            except TypeError:  # torchcodec < 0.2 has no seek_mode
                self._dec = _TCDecoder(self.path, **kw)
            md = self._dec.metadata
            n = int(md.num_frames if md.num_frames is not None else len(self._dec))
            content = getattr(md, "num_frames_from_content", None)
            # the frames the file holds, not what its header claims (a cut file)
            self.num_frames = min(n, content if content is not None else n, info.frames)
            self.fps = float(md.average_fps or 0.0)
            assert md.height is not None and md.width is not None  # known for an opened video stream
            self.height, self.width = int(md.height), int(md.width)
            if self.num_frames < 1:
                raise ValueError("no video frames")
        except CorruptSampleError:
            raise
        except Exception as err:  # noqa: BLE001
            raise CorruptSampleError(f"{self.path}: torchcodec could not open the video: {err}") from err

    def _get(self, idx: np.ndarray) -> np.ndarray:
        if self.delegate is not None:
            return self.delegate._get(idx)
        return self._dec.get_frames_at(indices=idx.tolist()).data.numpy()

    def close(self) -> None:
        if self.delegate is not None:
            self.delegate.close()
        self._dec = None


# ----------------------------------------------------------------------------------- registry


def _probe_pyav() -> bool:
    try:
        importlib.import_module("av")
    except Exception:  # noqa: BLE001
        return False
    return True


def _probe_decord() -> bool:
    try:
        importlib.import_module("decord")
    except Exception:  # noqa: BLE001
        return False
    return True


_TORCHCODEC_FAILED: list[str] = []


def _probe_torchcodec() -> bool:
    if sys.modules.get("torchcodec", False) is None:
        return False  # hidden on purpose
    if _TORCHCODEC_FAILED:
        return False  # loading is slow to fail (it tries FFmpeg 9 down to 4): remember it
    try:
        # The import succeeds without FFmpeg; loading the core library is what fails. Up to
        # 0.16 importing ``_core`` loaded it; from 0.17 a failed load is only recorded
        # (``ops._FFMPEG_AVAILABLE``) and every decode then raises.
        importlib.import_module("torchcodec.decoders")
        ops = importlib.import_module("torchcodec._core.ops")
        if getattr(ops, "_FFMPEG_AVAILABLE", True) is False:
            raise OSError("torchcodec could not load FFmpeg's libraries (it needs FFmpeg 4-9 installed)")
    except Exception as err:  # noqa: BLE001
        _TORCHCODEC_FAILED.append(f"{type(err).__name__}: {err}".splitlines()[0])
        return False
    return True


#: name -> (decoder class, availability probe)
BACKENDS: dict[str, tuple[Callable[..., VideoDecoder], Callable[[], bool]]] = {
    "pyav": (PyAVDecoder, _probe_pyav),
    "decord": (DecordDecoder, _probe_decord),
    "torchcodec": (TorchCodecDecoder, _probe_torchcodec),
}


def available_backends() -> list[str]:
    """Names of the backends that import and load here, in the automatic order."""
    return [name for name in AUTO_ORDER if name in BACKENDS and BACKENDS[name][1]()] + [
        name for name in BACKENDS if name not in AUTO_ORDER and BACKENDS[name][1]()
    ]


def default_backend() -> str:
    """The backend ``"auto"`` resolves to: ``$JEPA_VIDEO_BACKEND`` if set, else the first
    available of :data:`AUTO_ORDER` (torchcodec, pyav, decord)."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env and env != "auto":
        return _check(env)
    avail = available_backends()
    if not avail:
        raise RuntimeError("no video decoder available: install PyAV (pip install av)")
    return avail[0]


def _check(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown video backend {name!r}; known: {sorted(BACKENDS)}, "
                         f"installed here: {available_backends()}")
    if not BACKENDS[name][1]():
        why = f" ({_TORCHCODEC_FAILED[0]})" if name == "torchcodec" and _TORCHCODEC_FAILED else ""
        raise ValueError(f"video backend {name!r} is not available here{why}; "
                         f"installed here: {available_backends()}")
    return name


def resolve_backend(backend: str = "auto") -> str:
    """``"auto"`` -> :func:`default_backend`; a name -> itself if available (else ValueError)."""
    return default_backend() if backend in ("auto", None) else _check(backend)


def open_video(path: str | os.PathLike, backend: str = "auto", threads: int = 0,
               num_frames: int | None = None) -> VideoDecoder:
    """Open ``path`` with ``backend`` (``"auto"``, ``"pyav"``, ``"decord"``, ``"torchcodec"``).

    ``threads``: decoder threads (0 = the backend's automatic choice, 1 = single-threaded,
    best inside DataLoader workers). ``num_frames``: the file's decodable frame count when known
    (an index written by ``jepa video check``); it is remembered, and the decoder never reports
    more. Raises :class:`CorruptSampleError` when the file is missing, empty or cannot be
    decoded, and ``ValueError`` for an unknown or unavailable backend.
    """
    name = resolve_backend(backend)
    p = Path(path)
    if not p.is_file():
        raise CorruptSampleError(f"{p}: no such file")
    if num_frames is not None:
        remember_frame_count(p, num_frames)
    before = MESSAGE_COUNTS[str(p)]
    with library_messages(str(p)):
        dec = BACKENDS[name][0](p, threads=threads)
    dec.messages = MESSAGE_COUNTS[str(p)] - before
    known = known_frame_count(p)
    if known is not None and known < dec.num_frames:
        if known < 1:
            dec.close()
            raise CorruptSampleError(f"{p}: no frame of the video decodes")
        dec.num_frames = known
    return dec
