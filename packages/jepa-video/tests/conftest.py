"""Shared fixtures: small videos written with PyAV on the spot (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from jepa_video.demo_data import make_demo_videos

torch.set_num_threads(1)

T, H, W, FPS = 60, 48, 64, 30


def pattern_frames(t: int = T, h: int = H, w: int = W) -> np.ndarray:
    """Moving colour ramps, so every frame differs from its neighbours."""
    yy, xx = np.mgrid[:h, :w]
    out = np.zeros((t, h, w, 3), np.uint8)
    for i in range(t):
        out[i, ..., 0] = (xx * 4 + i * 5) % 256
        out[i, ..., 1] = (yy * 5 + i * 3) % 256
        out[i, ..., 2] = (i * 4) % 256
    return out


def encode(path: Path, frames: np.ndarray, codec: str = "h264", gop: int = 10, bframes: int = 3,
           faststart: bool = False) -> Path:
    """Like demo_data.write_video, with a short GOP and B-frames so seeking is exercised."""
    import av

    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as out:
        s = out.add_stream("libx264" if codec == "h264" else codec, rate=FPS)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.gop_size = gop
        s.codec_context.thread_count = 1
        s.codec_context.options = {"crf": "10", "bf": str(bframes)} if codec == "h264" else {"bf": str(bframes)}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def h264_video(video_dir) -> Path:
    """60 frames, 48x64, 30 fps, H.264 with a key frame every 10 frames and 3 B-frames."""
    return encode(video_dir / "pattern_h264.mp4", pattern_frames(), "h264", gop=10, bframes=3)


@pytest.fixture(scope="session")
def mpeg4_avi(video_dir) -> Path:
    """The same frames as MPEG-4 Part 2 in AVI, key frame every 12."""
    return encode(video_dir / "pattern_mpeg4.avi", pattern_frames(), "mpeg4", gop=12, bframes=0)


@pytest.fixture(scope="session")
def demo_videos(tmp_path_factory) -> Path:
    """24 moving-sprite clips (the demo set), index file returned."""
    return make_demo_videos(tmp_path_factory.mktemp("demo"), 24, seed=3)


@pytest.fixture
def pattern():
    """The frames the pattern videos were made from (uint8 [60, 48, 64, 3])."""
    return pattern_frames()


@pytest.fixture(params=["moov-at-end", "moov-at-front"])
def truncated_mp4(request, tmp_path) -> Path:
    """An H.264 mp4 of the pattern cut in half: without its index ('moov' written last, the
    muxer's default), or with the index but half the frame data ('faststart')."""
    full = encode(tmp_path / "full.mp4", pattern_frames(), faststart=request.param == "moov-at-front")
    data = full.read_bytes()
    p = tmp_path / "truncated.mp4"
    p.write_bytes(data[: len(data) // 2])
    full.unlink()
    return p
