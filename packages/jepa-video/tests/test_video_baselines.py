"""The frame-by-frame image baseline of the video probes (jepa_video.baselines)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from jepa_core import registry
from jepa_core.config import ConfigError
from jepa_video.baselines import _image_overrides, frame_baseline, write_frames
from jepa_video.datasets import VideoIndex
from jepa_video.nn import FrameByFrame
from jepa_video.sampling import ClipSampler
from jepa_video.vjepa import VJEPA_SPEC


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return tmp_path_factory.mktemp("vjepa_demo")


def _cfg(*extra: str):
    return VJEPA_SPEC.load_config("demo", overrides=list(extra))


def test_no_image_encoder_no_baseline():
    assert frame_baseline(_cfg("baseline.image_encoder=null"), "cpu", None) == {}


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        frame_baseline(_cfg(f"baseline.image_encoder={tmp_path / 'nope'}"), "cpu", tmp_path)


def test_ijepa_baseline_needs_a_run_folder():
    try:
        registry.get_method("ijepa")
    except ConfigError:
        pytest.skip("jepa-image is not installed (per-package session): the baseline is skipped")
    with pytest.raises(ConfigError, match="run folder"):
        frame_baseline(_cfg("baseline.image_encoder=ijepa"), "cpu", None)


def test_ijepa_baseline_is_skipped_without_jepa_image(monkeypatch, tmp_path, caplog):
    def missing(name):
        raise ConfigError(f"unknown method {name!r}")

    monkeypatch.setattr(registry, "get_method", missing)
    assert frame_baseline(_cfg("baseline.image_encoder=ijepa"), "cpu", tmp_path) == {}
    assert "pip install jepa-image" in caplog.text


def test_image_encoder_matches_the_video_model(tmp_path):
    cfg = _cfg("baseline.epochs=2", "baseline.overrides=[optim.warmup=0]")
    o = dict(x.split("=", 1) for x in _image_overrides(cfg, tmp_path))
    assert (o["model.embed_dim"], o["model.depth"], o["model.num_heads"]) == ("96", "4", "4")
    assert (o["model.patch_size"], o["data.image_size"], o["model.in_chans"]) == ("4", "32", "3")
    assert o["data.root"] == str(tmp_path) and o["optim.epochs"] == "2" and o["eval.enabled"] == "false"
    assert o["optim.warmup"] == "0"  # the user's overrides come last and win


def test_write_frames_writes_every_sampled_frame(demo_root, tmp_path):
    from jepa_video.vjepa import ensure_demo_videos

    cfg = _cfg(f"data.root={demo_root}", "data.demo_clips=16", "data.demo_eval_clips=8")
    ds = VideoIndex(ensure_demo_videos(cfg, "train"), sampler=ClipSampler(frames_per_clip=4, frame_step=2, random_clip_sampling=False))
    n = write_frames(ds, tmp_path / "frames", max_clips=3)
    files = sorted((tmp_path / "frames" / "train").rglob("*.png"))
    assert n == len(files) == 12
    from PIL import Image

    frame = tmp_path / "frames" / "train" / str(ds.samples[1][1]) / "000001_0_002.png"  # clip 1, frame 2
    assert np.array_equal(np.asarray(Image.open(frame)), ds.load_clips(1)[0][2])  # lossless: PNG of the decoded frame
    assert write_frames(ds, tmp_path / "frames") == 12  # already there: not written again


def test_frame_baseline_from_a_run_folder(tmp_path, monkeypatch):
    """A path: the target encoder of an earlier image run, wrapped frame by frame."""
    from jepa_core.nn import VisionTransformer

    image = VisionTransformer(img_size=32, patch_size=4, embed_dim=96, depth=1, num_heads=4)

    class Model:
        def eval_encoder(self):
            return image

    class Spec:
        name = "fake-image"

    import jepa_core.run as run

    monkeypatch.setattr(run, "load_run", lambda path: {"spec": Spec(), "model": Model()})
    (tmp_path / "img").mkdir()
    rows = frame_baseline(_cfg(f"baseline.image_encoder={tmp_path / 'img'}"), "cpu", tmp_path)
    [(name, enc)] = rows.items()
    assert "fake-image" in name and "frame by frame" in name
    assert isinstance(enc, FrameByFrame) and enc.stride == 2 and not enc.temporal_embedding
    assert enc(torch.randn(1, 3, 8, 32, 32)).shape == (1, 4 * 64, 96)  # as many tokens as the video encoder


def test_ijepa_baseline_is_not_trained_inside_a_multi_process_run(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert frame_baseline(_cfg("baseline.image_encoder=ijepa"), "cpu", tmp_path) == {}
    assert "jepa eval" in caplog.text and not (tmp_path / "image_baseline").exists()


def test_ijepa_baseline_takes_baseline_frames_per_clip(monkeypatch, demo_root, tmp_path):
    """baseline.frames_per_clip replaces the (frozen) sampler's frames per clip; it used to
    raise FrozenInstanceError before any frame was written."""
    try:
        registry.get_method("ijepa")
    except ConfigError:
        pytest.skip("jepa-image is not installed (per-package session): the baseline is skipped")
    import jepa_core.run as run
    import jepa_video.baselines as baselines
    from jepa_core.nn import VisionTransformer

    image = VisionTransformer(img_size=32, patch_size=4, embed_dim=96, depth=1, num_heads=4)
    seen: dict = {}

    def fake_write_frames(dataset, out, max_clips=None):
        seen["frames_per_clip"] = dataset.sampler.frames_per_clip
        return 0

    class Model:
        def eval_encoder(self):
            return image

    def fake_pretrain(method, preset, config, overrides, run_dir, resume):
        seen["pretrain"] = (method, preset, run_dir)

    monkeypatch.setattr(baselines, "write_frames", fake_write_frames)
    monkeypatch.setattr(run, "pretrain", fake_pretrain)
    monkeypatch.setattr(run, "load_run", lambda path: {"model": Model()})
    cfg = _cfg(f"data.root={demo_root}", "data.demo_clips=16", "data.demo_eval_clips=8",
               "baseline.image_encoder=ijepa", "baseline.frames_per_clip=2")
    [(name, enc)] = frame_baseline(cfg, "cpu", tmp_path).items()
    assert seen["frames_per_clip"] == 2 and cfg.data.frames_per_clip == 8  # the video run's sampler is untouched
    assert seen["pretrain"][0] == "ijepa" and seen["pretrain"][2] == tmp_path / "image_baseline" / "run"
    assert "ijepa on frames" in name and isinstance(enc, FrameByFrame)
