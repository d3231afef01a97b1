"""Video decoders behind one interface.

``open_video(path, backend="auto")`` returns a :class:`VideoDecoder` with ``num_frames``,
``fps``, ``height``, ``width`` and ``get_frames(indices) -> uint8 ndarray [T, H, W, C]`` (RGB).
Three backends:

``pyav``
    PyAV (``av``), a hard dependency: wheels for every OS and Python 3.11-3.13, with FFmpeg
    bundled. Opening demuxes the stream once (no decoding) to learn every frame's timestamp
    and the key frames; ``get_frames`` then seeks to the key frame before each run of
    requested frames and decodes forward, so a 16-frame clip out of a long video does not
    decode the whole file, and frame ``i`` is the ``i``-th frame in presentation order, as
    with decord and torchcodec.
``decord``
    ``decord==0.6.0`` (what the official V-JEPA code uses), installed only where it has
    wheels (x86_64 Linux and Windows).
``torchcodec``
    ``torchcodec`` (extra ``jepa-video[torchcodec]``); needs FFmpeg 4-9 shared libraries on
    the system (``apt-get install ffmpeg``), so it counts as available only when it loads.

``backend="auto"`` picks the fastest one that works here, in the order torchcodec, decord,
pyav (measured on our 2-core machines, 224² H.264: torchcodec 2.9-3.6k frames/s, decord
2.5-2.8k, PyAV 1.9k; for 16 frames spread over a 10 s clip torchcodec and decord need
64-83 ms). The environment variable ``JEPA_VIDEO_BACKEND`` overrides the automatic choice.
Any failure to open or decode a file raises :class:`jepa_core.data.CorruptSampleError`
naming the path, which the trainer's loader skips and counts.
"""

from __future__ import annotations

import bisect
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from jepa_core.data import CorruptSampleError

__all__ = [
    "BACKENDS",
    "AUTO_ORDER",
    "VideoDecoder",
    "PyAVDecoder",
    "DecordDecoder",
    "TorchCodecDecoder",
    "available_backends",
    "default_backend",
    "open_video",
]

AUTO_ORDER = ("torchcodec", "decord", "pyav")
ENV_VAR = "JEPA_VIDEO_BACKEND"


class VideoDecoder:
    """One opened video. Subclasses set ``path``, ``num_frames``, ``fps``, ``height`` and
    ``width`` when opened and implement :meth:`_get`."""

    backend: str = ""
    path: str
    num_frames: int
    fps: float
    height: int
    width: int

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
            out = self._get(idx)
        except (CorruptSampleError, IndexError):
            raise
        except Exception as err:  # noqa: BLE001 - every decoder error means "cannot decode"
            raise CorruptSampleError(f"{self.path}: {self.backend} failed to decode frames: {err}") from err
        return np.ascontiguousarray(out, dtype=np.uint8)

    def _get(self, idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.path!r}, num_frames={self.num_frames}, fps={self.fps:g}, "
                f"size={self.height}x{self.width})")


# --------------------------------------------------------------------------------------- PyAV


class PyAVDecoder(VideoDecoder):
    """PyAV backend with exact frame indexing (see the module doc)."""

    backend = "pyav"

    def __init__(self, path: str | os.PathLike, threads: int = 0):
        import av

        self.path = str(path)
        try:
            self._container = av.open(self.path)
            if not self._container.streams.video:
                raise ValueError("no video stream")
            stream = self._container.streams.video[0]
            self._stream = stream
            # Index every frame by its presentation timestamp, from the packets alone.
            pts, keys = [], []
            for packet in self._container.demux(stream):
                if packet.size == 0:
                    continue  # the flush packet at the end
                p = packet.pts if packet.pts is not None else packet.dts
                pts.append(p)
                keys.append(bool(packet.is_keyframe))
        except Exception as err:  # noqa: BLE001
            self.close()
            raise CorruptSampleError(f"{self.path}: PyAV could not open the video: {err}") from err
        if not pts:
            self.close()
            raise CorruptSampleError(f"{self.path}: no video frames")
        if stream.frames and len(pts) < stream.frames:
            # A cut file whose header (e.g. an mp4 'moov' at the front) lists more frames than
            # the file holds: the demuxer stops early without an error.
            n = stream.frames
            self.close()
            raise CorruptSampleError(f"{self.path}: truncated, the header lists {n} frames but only "
                                     f"{len(pts)} could be read")
        self._exact = all(p is not None for p in pts) and len(set(pts)) == len(pts)
        if self._exact:
            order = sorted(range(len(pts)), key=lambda i: pts[i])
            self._pts = [pts[i] for i in order]
            self._index_of = {p: i for i, p in enumerate(self._pts)}
            # Seeking goes to a key frame at or before the requested timestamp; decoding from
            # key frame k can only give frames whose pts is >= the key frame's pts.
            self._key_idx = sorted(self._index_of[pts[i]] for i in range(len(pts)) if keys[i])
            if not self._key_idx or self._key_idx[0] != 0:
                self._key_idx = [0, *self._key_idx]
        self.num_frames = len(pts)
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
        if got is None or len(got) < len(wanted):
            got = self._decode_sequential(wanted)
        missing = [i for i in wanted if i not in got]
        if missing:
            raise CorruptSampleError(f"{self.path}: frames {missing} could not be decoded")
        return np.stack([got[i] for i in idx.tolist()])

    def _decode_sequential(self, wanted: list[int]) -> dict[int, np.ndarray]:
        """Decode from the start, counting frames: the fallback for streams without usable
        timestamps."""
        self._container.seek(0)
        need, last, got = set(wanted), max(wanted), {}
        for i, frame in enumerate(self._container.decode(self._stream)):
            if i in need:
                got[i] = self._rgb(frame)
            if i >= last:
                break
        return got

    def _decode_seeking(self, wanted: list[int]) -> dict[int, np.ndarray] | None:
        need = set(wanted)
        got: dict[int, np.ndarray] = {}
        frames = None  # the running decode generator
        pos = -1  # index of the last frame it gave
        for target in wanted:
            if target in got:
                continue
            key = self._key_idx[bisect.bisect_right(self._key_idx, target) - 1]
            if frames is None or pos >= target or key > pos + 1:
                # A key frame lies between where we are and the target: seek to it.
                self._container.seek(self._pts[key], stream=self._stream, backward=True, any_frame=False)
                frames = self._container.decode(self._stream)
                pos = -1
            found = False
            for frame in frames:
                i = self._index_of.get(frame.pts)
                if i is None:
                    return None  # timestamps do not match the demuxed ones: fall back
                pos = i
                if i in need and i not in got:
                    got[i] = self._rgb(frame)
                if i >= target:
                    found = i == target or target in got
                    break
            if not found:
                return None
        return got


# ------------------------------------------------------------------------------------- decord


class DecordDecoder(VideoDecoder):
    """decord backend: ``VideoReader(path, num_threads=threads, ctx=cpu(0))``."""

    backend = "decord"

    def __init__(self, path: str | os.PathLike, threads: int = 0):
        import decord

        self.path = str(path)
        try:
            self._vr = decord.VideoReader(self.path, num_threads=threads, ctx=decord.cpu(0))
            self.num_frames = len(self._vr)
            self.fps = float(self._vr.get_avg_fps())
            if self.num_frames < 1:
                raise ValueError("no video frames")
            self.height, self.width = (int(s) for s in self._vr[0].shape[:2])
        except Exception as err:  # noqa: BLE001 - decord raises DECORDError and plain RuntimeErrors
            raise CorruptSampleError(f"{self.path}: decord could not open the video: {err}") from err

    def _get(self, idx: np.ndarray) -> np.ndarray:
        out = self._vr.get_batch(idx.tolist()).asnumpy()
        self._vr.seek(0)  # decord keeps decoder state between calls; start the next one clean
        return out

    def close(self) -> None:
        self._vr = None


# --------------------------------------------------------------------------------- torchcodec


class TorchCodecDecoder(VideoDecoder):
    """torchcodec backend (exact seek mode, NHWC output)."""

    backend = "torchcodec"

    def __init__(self, path: str | os.PathLike, threads: int = 0):
        from torchcodec.decoders import VideoDecoder as _TCDecoder

        self.path = str(path)
        kw: dict[str, Any] = dict(dimension_order="NHWC", num_ffmpeg_threads=threads, device="cpu")
        try:
            try:
                self._dec = _TCDecoder(self.path, seek_mode="exact", **kw)
            except TypeError:  # torchcodec < 0.2 has no seek_mode
                self._dec = _TCDecoder(self.path, **kw)
            md = self._dec.metadata
            self.num_frames = int(md.num_frames if md.num_frames is not None else len(self._dec))
            self.fps = float(md.average_fps or 0.0)
            self.height, self.width = int(md.height), int(md.width)
            if self.num_frames < 1:
                raise ValueError("no video frames")
            header = getattr(md, "num_frames_from_header", None)
            content = getattr(md, "num_frames_from_content", None)
            if header and content is not None and content < header:
                # as in PyAVDecoder: a cut file whose header lists more frames than it holds
                raise ValueError(f"truncated, the header lists {header} frames but only {content} could be read")
        except Exception as err:  # noqa: BLE001
            raise CorruptSampleError(f"{self.path}: torchcodec could not open the video: {err}") from err

    def _get(self, idx: np.ndarray) -> np.ndarray:
        return self._dec.get_frames_at(indices=idx.tolist()).data.numpy()

    def close(self) -> None:
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
        # The import succeeds without FFmpeg; loading the core library is what fails.
        importlib.import_module("torchcodec.decoders")
        from torchcodec import _core  # noqa: F401
    except Exception as err:  # noqa: BLE001
        _TORCHCODEC_FAILED.append(f"{type(err).__name__}: {err}".splitlines()[0])
        return False
    return True


#: name -> (decoder class, availability probe)
BACKENDS: dict[str, tuple[type[VideoDecoder], Callable[[], bool]]] = {
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
    available of torchcodec, decord, pyav."""
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


def open_video(path: str | os.PathLike, backend: str = "auto", threads: int = 0) -> VideoDecoder:
    """Open ``path`` with ``backend`` (``"auto"``, ``"pyav"``, ``"decord"``, ``"torchcodec"``).

    ``threads``: decoder threads (0 = the backend's automatic choice, 1 = single-threaded,
    best inside DataLoader workers). Raises :class:`CorruptSampleError` when the file is
    missing, empty or cannot be decoded, and ``ValueError`` for an unknown or unavailable
    backend.
    """
    name = resolve_backend(backend)
    p = Path(path)
    if not p.is_file():
        raise CorruptSampleError(f"{p}: no such file")
    return BACKENDS[name][0](p, threads=threads)
