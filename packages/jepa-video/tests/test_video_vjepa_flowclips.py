"""V-JEPA / V-JEPA 2 on the flow clips (``data.dataset=flowclips``, jepa_video.flow_data):
the option builds through the presets, clip shapes, labels in range and equal to the main
item's class and direction, determinism, disjoint train / test items, a short training step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from jepa_video.demo_data import split_label
from jepa_video.flow_data import SPLITS, render_clip, sprite_pool
from jepa_video.vjepa import (
    VJEPA2_SPEC,
    VJEPA_SPEC,
    FlowClipVideos,
    build_eval_data,
    build_train_data,
    eval_tasks,
)

torch.set_num_threads(1)

SMALL = ["data.demo_clips=12", "data.demo_eval_clips=8"]


@pytest.fixture(scope="module", params=["vjepa", "vjepa2"])
def cfg(request):
    spec = {"vjepa": VJEPA_SPEC, "vjepa2": VJEPA2_SPEC}[request.param]
    return spec.load_config("demo", overrides=["data.dataset=flowclips", *SMALL])


def test_flowclips_preset_loads():
    cfg = VJEPA_SPEC.load_config("demo_flowclips")
    assert cfg.data.dataset == "flowclips" and cfg.data.label == "both"
    assert (cfg.data.frames_per_clip, cfg.data.crop_size) == (8, 32)


def test_flowclips_builds_with_shapes_and_labels(cfg):
    d = cfg.data
    ds, collate = build_train_data(cfg)
    assert len(ds) == 12
    clip, y = ds[0]
    assert clip.shape == (3, d.frames_per_clip, d.crop_size, d.crop_size) and clip.dtype == torch.float32
    batch = collate([ds[i] for i in range(4)])
    assert batch["videos"].shape == (4, 3, d.frames_per_clip, d.crop_size, d.crop_size)
    train, test = build_eval_data(cfg)
    assert (len(train), len(test)) == (12, 8)
    tasks = eval_tasks(cfg)
    assert set(tasks) == {"motion direction", "object class"}
    for s in (train, test):
        for x, y in (s[i] for i in range(len(s))):
            assert x.shape == (3, d.frames_per_clip, d.crop_size, d.crop_size)
            assert 0 <= tasks["motion direction"](y) < 8 and 0 <= tasks["object class"](y) < 10


def test_flowclips_label_is_the_main_item():
    ds = FlowClipVideos("test", 6, 16, 32, seed=3, num_objects=2)
    for i, (_, y) in enumerate(ds.samples):
        c = render_clip((3, SPLITS["test"], i), 16, 32, 2, sprites="test", max_object_speed=1.5,
                        max_camera_speed=1.5)
        k = c["largest"]
        assert split_label(y) == (int(c["classes"][k]), int(c["directions"][k]))
        np.testing.assert_array_equal(ds.clips[i], c["frames"].transpose(0, 2, 3, 1))
        assert ds.clips[i].shape == (16, 32, 32, 3) and ds.clips[i].dtype == np.uint8


def test_flowclips_deterministic_and_splits_disjoint():
    a, b = FlowClipVideos("train", 5, 8, 32), FlowClipVideos("train", 5, 8, 32)
    assert a.samples == b.samples
    for x, y in zip(a.clips, b.clips):
        np.testing.assert_array_equal(x, y)
    te = FlowClipVideos("test", 5, 8, 32)
    assert not any(np.array_equal(x, y) for x in a.clips for y in te.clips)
    # the two splits draw from disjoint Fashion-MNIST items
    assert not set(sprite_pool("train")[2].tolist()) & set(sprite_pool("test")[2].tolist())
    # the eval transform is deterministic: the same tensors twice
    cfg = VJEPA_SPEC.load_config("demo_flowclips", overrides=SMALL)
    (tr1, te1), (tr2, te2) = build_eval_data(cfg), build_eval_data(cfg)
    for s1, s2 in ((tr1, tr2), (te1, te2)):
        for i in range(len(s1)):
            assert torch.equal(s1[i][0], s2[i][0]) and s1[i][1] == s2[i][1]


def test_flowclips_training_step():
    cfg = VJEPA_SPEC.load_config("demo_flowclips", overrides=SMALL + [
        "model.embed_dim=24", "model.depth=1", "model.num_heads=2", "model.pred_depth=1",
        "model.pred_emb_dim=12", "model.pred_num_heads=2"])
    torch.manual_seed(0)
    model = VJEPA_SPEC.build_model(cfg)
    ds, collate = build_train_data(cfg)
    out = model(collate([ds[i] for i in range(2)]))
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    out["loss"].backward()
