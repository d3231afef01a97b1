"""MC-JEPA on real video (`data.dataset=video`): frame pairs (t, t + frame_gap) of any video
folder or index file, decoded with the existing decoders, resized / cropped to data.image_size;
a video too short for a pair and a corrupt file are skipped and counted in the run's skipped
samples; frame pairs of different sizes passed directly are a ValueError naming both shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from jepa_core.config import ConfigError
from jepa_core.data import CorruptSampleError
from jepa_video import mcjepa
from jepa_video.datasets import write_index
from jepa_video.flow_data import VideoFramePairs
from jepa_video.testvideos import draw_code, read_code

av = pytest.importorskip("av")


def _write_video(path, num_frames: int, size: int = 64, seed: int = 0):
    """Frame i shows the code of i (jepa_video.testvideos) on top and noise below (so that even
    one frame is over the 1 KB minimum for a video), MPEG-4 at high quality."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as out:
        s = out.add_stream("mpeg4", rate=24)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.codec_context.thread_count = 1
        s.codec_context.options = {"qscale": "2", "bf": "0"}
        for i in range(num_frames):
            f = draw_code(i, size)
            f[size // 2:] = rng.integers(0, 256, f[size // 2:].shape, dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    good = [_write_video(root / f"good{i}.mp4", 12, seed=i) for i in range(4)]
    one = _write_video(root / "one_frame.mp4", 1, seed=9)
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert one.stat().st_size > 1024  # skipped for being short, not for the size rule
    return root, good, one, corrupt


def test_pairs_are_frames_t_and_t_plus_gap_at_image_size(videos):
    root, good, _, _ = videos
    ds = VideoFramePairs(root, 64, frame_gap=3)
    assert len(ds) == 6
    i = ds.samples.index((str(good[0]), -1))
    torch.manual_seed(0)
    (item, label) = ds[i]
    pair = item["pair"]
    assert pair.shape == (2, 3, 64, 64) and pair.dtype == torch.float32 and label == -1
    assert 0 <= float(pair.min()) and float(pair.max()) <= 1
    assert torch.equal(item["still"], pair[0])  # the content stream's still: frame t
    t0, t1 = (read_code((f.permute(1, 2, 0) * 255).round().byte().numpy()) for f in pair)
    assert 0 <= t0 <= 12 - 4 and t1 == t0 + 3
    # another size: the short side resized, one square crop for both frames
    small = VideoFramePairs(root, 32)[i][0]["pair"]
    assert small.shape == (2, 3, 32, 32)


def test_short_and_corrupt_videos_raise_corrupt_sample_errors_naming_the_file(videos):
    root, good, one, corrupt = videos
    ds = VideoFramePairs(root, 32)
    with pytest.raises(CorruptSampleError, match=r"one_frame\.mp4: 1 decodable frame\(s\), too short for a frame pair"):
        ds[ds.samples.index((str(one), -1))]
    with pytest.raises(CorruptSampleError, match=r"corrupt\.mp4"):
        ds[ds.samples.index((str(corrupt), -1))]
    # a gap longer than a video: every video is too short
    long_gap = VideoFramePairs(root, 32, frame_gap=12)
    with pytest.raises(CorruptSampleError, match="frame_gap=12"):
        long_gap[long_gap.samples.index((str(good[0]), -1))]


def test_an_index_file_as_root(videos, tmp_path):
    root, good, _, _ = videos
    index = write_index(tmp_path / "index.csv", [(str(p), 1) for p in good[:2]])
    ds = VideoFramePairs(index, 32)
    assert len(ds) == 2 and ds[1][1] == 1 and ds[1][0]["pair"].shape == (2, 3, 32, 32)
    with pytest.raises(ConfigError, match="no such folder or index file"):
        VideoFramePairs(tmp_path / "missing", 32)


TINY = ["data.image_size=32", "data.batch_size=3", "model.channels=[8,12]", "model.radius=1", "model.hidden=[8]",
        "model.expander=[16,16]", "train.device=cpu", "train.num_threads=1", "train.progress=false",
        "eval.enabled=false", "optim.warmup=0"]


def test_build_train_data_on_video_and_the_missing_root_error(videos):
    from jepa_core import registry

    root, *_ = videos
    spec = registry.get_method("mcjepa")
    cfg = spec.load_config("demo", overrides=TINY + ["data.dataset=video", f"data.root={root}"])
    dataset, collate = mcjepa.build_train_data(cfg)
    assert isinstance(dataset, VideoFramePairs) and len(dataset) == 6
    with pytest.raises(ConfigError, match="data.dataset=video needs data.root"):
        mcjepa.build_train_data(spec.load_config("demo", overrides=TINY + ["data.dataset=video"]))


@pytest.mark.slow
def test_pretrain_on_a_video_folder_counts_the_skipped_files(videos, tmp_path):
    from jepa_core.run import pretrain

    root, *_ = videos
    # 6 files, 3 a step: two steps see every file once, the 1-frame video and the corrupt one
    # among them, both skipped and counted
    summary = pretrain("mcjepa", "demo", overrides=TINY + ["data.dataset=video", f"data.root={root}",
                                                           "optim.max_steps=2"], run_dir=tmp_path / "run")
    assert summary["steps"] == 2 and summary["bad_samples"] == 2
    assert "corrupt samples skipped: 2" in (tmp_path / "run" / "report.md").read_text()


def test_frame_pairs_of_different_sizes_are_a_clear_error():
    from jepa_core import registry

    cfg = registry.get_method("mcjepa").load_config("demo", overrides=TINY)
    model = mcjepa.build_model(cfg)
    a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 48)
    with pytest.raises(ValueError, match=r"frame_t \(2, 3, 32, 32\) and frame_t1 \(2, 3, 32, 48\)"):
        model.predict_flow(a, b)
    with pytest.raises(ValueError, match=r"\(2, 3, 32, 32\) and frame_t1 \(2, 3, 32, 48\)"):
        model.flow_losses(a, b)
