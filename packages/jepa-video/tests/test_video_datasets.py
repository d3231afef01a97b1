"""Datasets: index files, folders, images, broken files through the trainer's loader, and
the PyAV fallback when decord is hidden."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch
from jepa_core.data import CorruptSampleError, StampedDataset, StepBatchSampler, collate_stamped
from jepa_video.datasets import VideoFolder, VideoIndex, read_index, write_index
from jepa_video.decoders import open_video
from jepa_video.demo_data import write_video
from jepa_video.sampling import ClipSampler
from jepa_video.transforms import VideoEvalTransform, VideoTrainTransform
from torch.utils.data import DataLoader

SMALL = dict(sampler=ClipSampler(8, frame_step=2), transform=VideoTrainTransform(16))


def test_video_index_reads_several_space_separated_files_with_weights(tmp_path):
    (tmp_path / "k").mkdir()
    a = tmp_path / "k" / "a.csv"
    a.write_text("/data/k400/x 1.mp4 3\n/data/k400/y.mp4 7\n\nrel/z.mp4 0\n")
    b = tmp_path / "b.csv"
    b.write_text("/data/ssv2/1.webm::12\n/data/ssv2/2.webm::4\n/data/ssv2/3.webm::5\n/data/ssv2/4.webm::6\n")
    ds = VideoIndex([a, b], weights=[0.6, 0.4], root=None, backend="pyav")
    assert len(ds) == 7
    assert ds.samples[0] == ("/data/k400/x 1.mp4", 3)  # a path with a space: the label is the last field
    assert ds.samples[2] == (str(tmp_path / "k" / "rel/z.mp4"), 0)  # relative to its index file
    assert ds.samples[3:] == [(f"/data/ssv2/{i}.webm", y) for i, y in zip(range(1, 5), (12, 4, 5, 6))]
    assert ds.labels == [3, 7, 0, 12, 4, 5, 6]
    assert ds.dataset_ids == [0, 0, 0, 1, 1, 1, 1] and ds.dataset_sizes == [3, 4]
    # per-sample weight = dataset weight / dataset size (V-JEPA 2), so each file's total is its weight
    np.testing.assert_allclose(ds.sample_weights, [0.2] * 3 + [0.1] * 4)
    w = np.array(ds.sample_weights)
    assert w[:3].sum() == pytest.approx(0.6) and w[3:].sum() == pytest.approx(0.4)
    draws = np.array(list(ds.weighted_sampler(6000, torch.Generator().manual_seed(0))))
    assert abs((draws < 3).mean() - 0.6) < 0.03
    unweighted = VideoIndex([a, b], backend="pyav")
    assert unweighted.sample_weights == [1.0] * 7 and unweighted.dataset_weights is None
    with pytest.raises(ValueError, match="2 weights for 1 index"):
        VideoIndex([a], weights=[1.0, 2.0])
    assert read_index(a, root="/r")[2] == ("/r/rel/z.mp4", 0)


def test_index_header_npy_and_bad_label(tmp_path):
    c = tmp_path / "h.csv"
    c.write_text("path label\n/v/a.mp4 1\n")
    assert read_index(c) == [("/v/a.mp4", 1)]
    c.write_text("/v/a.mp4 1\n/v/b.mp4 cat\n")
    with pytest.raises(ValueError, match="h.csv:2"):
        read_index(c)
    n = tmp_path / "p.npy"
    np.save(n, np.array(["/v/a.mp4", "/v/b.mp4"]))
    assert read_index(n) == [("/v/a.mp4", 0), ("/v/b.mp4", 0)]
    rows = [("/v/with space.mp4", 2), ("rel.mp4", -1)]
    write_index(tmp_path / "w.csv", rows)
    assert read_index(tmp_path / "w.csv") == [("/v/with space.mp4", 2), (str(tmp_path / "rel.mp4"), -1)]


def test_index_dataset_returns_normalised_clips_and_labels(demo_videos):
    ds = VideoIndex(demo_videos, **SMALL)
    clip, label = ds[0]
    assert clip.shape == (3, 8, 16, 16) and clip.dtype == torch.float32
    assert label == read_index(demo_videos)[0][1]
    assert -2.2 < clip.min() and clip.max() < 2.7  # ImageNet-normalised 0-255 input
    multi = VideoIndex(demo_videos, sampler=ClipSampler(4, frame_step=1, num_clips=2),
                       transform=VideoEvalTransform(16, short_side=16))
    two, _ = multi[1]
    assert two.shape == (2, 3, 4, 16, 16)
    assert not torch.equal(two[0], two[1])  # different partitions of a moving sprite


def test_video_folder_classes_from_sub_folders_and_tiny_files_counted(tmp_path, h264_video, mpeg4_avi):
    for cls, src in (("walk", h264_video), ("run", mpeg4_avi)):
        (tmp_path / cls / "sub").mkdir(parents=True)
        shutil.copy(src, tmp_path / cls / f"a{src.suffix}")
        shutil.copy(src, tmp_path / cls / "sub" / f"b{src.suffix}")
    (tmp_path / "walk" / "tiny.mp4").write_bytes(b"\0" * 500)  # under 1 KB: a corrupt sample
    (tmp_path / "walk" / "notes.txt").write_text("not a video")
    (tmp_path / "empty").mkdir()  # no videos: not a class
    ds = VideoFolder(tmp_path, backend="pyav", **SMALL)
    assert ds.classes == ["run", "walk"]
    assert sorted((p.split("/")[-1], y) for p, y in ds.samples) == [("a.avi", 0), ("a.mp4", 1), ("b.avi", 0),
                                                                   ("b.mp4", 1), ("tiny.mp4", 1)]
    # kept so that drawing it raises, and the trainer skips and counts it (issue #13 item 8)
    assert [p.split("/")[-1] for p in ds.too_small] == ["tiny.mp4"]
    with pytest.raises(CorruptSampleError, match="tiny.mp4: 500 bytes"):
        ds[[p for p, _ in ds.samples].index(ds.too_small[0])]
    clip, y = ds[0]
    assert clip.shape == (3, 8, 16, 16) and y in (0, 1)
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(h264_video, flat / "x.mp4")
    f = VideoFolder(flat, backend="pyav", **SMALL)
    assert f.classes == [] and f.labels == [-1]
    with pytest.raises(FileNotFoundError):
        VideoFolder(tmp_path / "empty")


def test_images_are_repeated_to_a_clip(tmp_path):
    img = np.zeros((24, 32, 3), np.uint8)
    img[4:10, 20:30] = (250, 20, 20)
    # write a PNG with PyAV's encoder (no Pillow needed)
    import av

    with av.open(str(tmp_path / "x.png"), "w", format="image2") as out:
        s = out.add_stream("png")
        s.width, s.height, s.pix_fmt = 32, 24, "rgb24"
        for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            out.mux(p)
        for p in s.encode():
            out.mux(p)
    assert (tmp_path / "x.png").stat().st_size < 1024  # small images are fine (the 1 KB rule is for videos)
    write_index(tmp_path / "i.csv", [("x.png", 4)])
    ds = VideoIndex(tmp_path / "i.csv", sampler=ClipSampler(6, frame_step=4), transform=VideoEvalTransform(24, 24))
    (frames,) = ds.load_clips(0)
    assert frames.shape == (6, 24, 32, 3)
    assert all(np.array_equal(f, img) for f in frames)
    clip, label = ds[0]
    assert clip.shape == (3, 6, 24, 24) and label == 4
    assert all(torch.equal(clip[:, t], clip[:, 0]) for t in range(6))


def test_truncated_and_tiny_videos_raise_corrupt_sample_error(request, tmp_path, truncated_mp4, h264_video):
    (tmp_path / "tiny.mp4").write_bytes(b"\0" * 1000)
    write_index(tmp_path / "i.csv", [(str(truncated_mp4), 0), ("tiny.mp4", 1), ("missing.mp4", 2), (str(h264_video), 3)])
    ds = VideoIndex(tmp_path / "i.csv", **SMALL)
    if "front" in request.node.callspec.id:
        # the index survived the cut: the frames that decode are used (issue #14), never more
        (frames,) = ds.load_clips(0)
        assert frames.shape[0] == 8
        with open_video(truncated_mp4, "pyav") as v:
            assert v.header_frames == 60 and v.num_frames < 60
    else:
        with pytest.raises(CorruptSampleError, match="truncated.mp4"):
            ds[0]
    with pytest.raises(CorruptSampleError, match="tiny.mp4: 1000 bytes"):
        ds[1]
    with pytest.raises(CorruptSampleError, match="missing.mp4"):
        ds[2]
    assert ds[3][1] == 3


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_skips_and_counts_corrupt_samples(tmp_path, demo_videos, workers):
    good = [(str(demo_videos.parent / p), y) for p, y in read_index(demo_videos)[:5]]
    bad = tmp_path / "noise.mp4"  # opens with no backend
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    write_index(tmp_path / "i.csv", [good[0], (str(bad), 99), *good[1:]])
    ds = VideoIndex(tmp_path / "i.csv", **SMALL)
    sampler = StepBatchSampler(len(ds), batch_size=3, total_steps=4, seed=0, shuffle=False)
    loader = DataLoader(StampedDataset(ds, seed=0), batch_sampler=sampler, collate_fn=collate_stamped,
                        num_workers=workers)
    dropped, seen = 0, []
    for step, (batch, stamp, n_bad) in enumerate(loader):
        assert stamp == step
        dropped += n_bad
        clips, labels = batch
        assert clips.shape[1:] == (3, 8, 16, 16) and len(clips) == 3 - n_bad
        seen += labels.tolist()
    # 6 samples, batches of 3, two epochs: the broken one comes up twice and is dropped twice
    assert dropped == 2
    assert 99 not in seen and len(seen) == 10


def test_stamped_loading_is_reproducible(demo_videos):
    ds = StampedDataset(VideoIndex(demo_videos, **SMALL), seed=1)
    a, b, c = ds[(2, 5)].sample[0], ds[(2, 5)].sample[0], ds[(2, 6)].sample[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_whole_pipeline_falls_back_to_pyav_without_decord(monkeypatch, demo_videos, tmp_path):
    monkeypatch.setitem(sys.modules, "decord", None)
    monkeypatch.setitem(sys.modules, "torchcodec", None)
    ds = VideoIndex(demo_videos, **SMALL)  # backend="auto"
    assert ds.backend == "pyav"
    loader = DataLoader(StampedDataset(ds), batch_sampler=StepBatchSampler(len(ds), 4, 2, shuffle=False),
                        collate_fn=collate_stamped)
    batches = list(loader)
    assert len(batches) == 2 and all(b[0][0].shape == (4, 3, 8, 16, 16) and b[2] == 0 for b in batches)
    with pytest.raises(ValueError, match="'decord' is not available"):
        VideoIndex(demo_videos, backend="decord")
    # a video the decord-less pipeline wrote and read back frame-exactly
    frames = np.random.default_rng(0).integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
    write_video(tmp_path / "v.mp4", frames, codec="h264", quality=0)
    with open_video(tmp_path / "v.mp4") as v:
        assert v.backend == "pyav" and v.num_frames == 5
