"""Synthetic flow clips: the flow and occlusion ground truth are exact, and the sets are
deterministic, split-disjoint and shaped as documented."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from jepa_video.demo_data import TRAIN_SPRITES_PER_CLASS
from jepa_video.flow_data import (
    SyntheticFlowClips,
    SyntheticFramePairs,
    compass_direction,
    render_clip,
    sprite_pool,
)

SEEDS = [0, 1, 2, 3, 7, 11]


@pytest.fixture(scope="module")
def clips():
    return {s: render_clip(s) for s in SEEDS}


def _targets(flow_t: np.ndarray):
    """Integer target (qx, qy) of every pixel and whether it is inside the frame."""
    H, W = flow_t.shape[1:]
    assert np.array_equal(flow_t, np.round(flow_t)), "the flow is meant to be integer"
    yy, xx = np.mgrid[:H, :W]
    qx, qy = xx + flow_t[0].astype(np.int64), yy + flow_t[1].astype(np.int64)
    return qx, qy, (qx >= 0) & (qx < W) & (qy >= 0) & (qy < H)


@pytest.mark.parametrize("seed", SEEDS)
def test_flow_carries_every_visible_pixel_onto_its_next_position(clips, seed):
    c = clips[seed]
    frames, flow, occ = c["frames"], c["flow"], c["occluded"]
    for t in range(len(flow)):
        qx, qy, inside = _targets(flow[t])
        assert inside[~occ[t]].all()
        ok = ~occ[t]
        assert ok.mean() > 0.5
        moved = frames[t + 1][:, qy[ok], qx[ok]]
        np.testing.assert_array_equal(moved, frames[t][:, ok])
        # and not by accident: the identity (zero) flow does not explain the frames
        assert not np.array_equal(frames[t + 1][:, ok], frames[t][:, ok])


@pytest.mark.parametrize("seed", SEEDS)
def test_background_moves_against_the_camera_and_objects_with_themselves(clips, seed):
    c = clips[seed]
    seg, flow = c["segmentation"][:-1], c["flow"]
    vcam = c["camera_velocity"]
    assert 0 < np.hypot(*vcam) <= 2 and c["camera_direction"] == compass_direction(vcam)
    bg = seg == 0
    assert bg.any()
    assert (flow[:, 0][bg] == -vcam[0]).all() and (flow[:, 1][bg] == -vcam[1]).all()
    for i, v in enumerate(c["velocities"]):
        assert 0 < np.hypot(*v) <= 3
        mine = seg == i + 1
        assert (flow[:, 0][mine] == v[0]).all() and (flow[:, 1][mine] == v[1]).all()
        # positions advance by the velocity
        np.testing.assert_array_equal(np.diff(c["positions"][:, i], axis=0), np.tile(v, (len(seg), 1)))


def _coverage(alpha: np.ndarray, x: int, y: int, size: int) -> np.ndarray:
    """Where an object's alpha lands in a size x size frame with its corner at (x, y)."""
    out = np.zeros((size + 2 * 200, size + 2 * 200), bool)
    s = alpha.shape[0]
    out[200 + y : 200 + y + s, 200 + x : 200 + x + s] = alpha
    return out[200:-200, 200:-200]


@pytest.mark.parametrize("seed", SEEDS)
def test_occluded_is_exactly_covered_by_a_nearer_object_or_out_of_frame(clips, seed):
    c = clips[seed]
    seg, flow, occ = c["segmentation"], c["flow"], c["occluded"]
    size, n = seg.shape[-1], len(c["alphas"])
    assert occ.any()
    for t in range(len(flow)):
        cover = [_coverage(a, *c["positions"][t + 1, i].tolist(), size) for i, a in enumerate(c["alphas"])]
        qx, qy, inside = _targets(flow[t])
        qxc, qyc = qx.clip(0, size - 1), qy.clip(0, size - 1)
        expected = ~inside
        owner = seg[t].astype(np.int64)  # 0 background, i + 1 object i; object j > i is nearer
        for j in range(n):
            nearer = owner < j + 1  # background and objects behind object j
            expected |= inside & nearer & cover[j][qyc, qxc]
        np.testing.assert_array_equal(occ[t], expected)


def test_objects_leave_the_frame_and_occlude_each_other_somewhere():
    leaving = covered = 0
    for s in range(20):
        c = render_clip(s)
        for t in range(len(c["flow"])):
            _, _, inside = _targets(c["flow"][t])
            on_object = c["segmentation"][t] > 0
            leaving += (on_object & ~inside).sum()
            covered += (on_object & inside & c["occluded"][t]).sum()  # hidden by a nearer object
    assert leaving > 0 and covered > 0


def test_deterministic_and_seed_dependent():
    a, b, d = render_clip(5), render_clip(5), render_clip(6)
    for k in ("frames", "flow", "occluded", "segmentation", "positions", "classes"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["frames"], d["frames"])
    state = np.random.get_state()
    np.random.seed(123)
    c = render_clip(5)
    np.testing.assert_array_equal(a["frames"], c["frames"])  # the global RNG plays no part
    np.random.set_state(state)
    x, y = SyntheticFlowClips("train", 3, seed=1), SyntheticFlowClips("train", 3, seed=1)
    assert torch.equal(x[2]["frames"], y[2]["frames"]) and torch.equal(x[2]["flow"], y[2]["flow"])
    assert not torch.equal(x[0]["frames"], SyntheticFlowClips("train", 3, seed=2)[0]["frames"])


def test_train_and_test_use_disjoint_sprites_and_seeds():
    _, _, tr = sprite_pool("train")
    _, te_labels, te = sprite_pool("test")
    assert len(tr) == 400 and len(te) == 100 and not set(tr) & set(te)
    assert np.bincount(te_labels).tolist() == [10] * 10
    train, test = SyntheticFlowClips("train", 30, num_frames=2), SyntheticFlowClips("test", 30, num_frames=2)
    used_tr = {int(k) for i in range(30) for k in train.clip(i)["sprite_indices"]}
    used_te = {int(k) for i in range(30) for k in test.clip(i)["sprite_indices"]}
    assert used_tr <= set(tr) and used_te <= set(te) and not used_tr & used_te
    assert not {train.clip_seed(i) for i in range(30)} & {test.clip_seed(i) for i in range(30)}
    # rank within the class: train items are the first 40, test ones the rest
    _, labels, _ = sprite_pool("all")
    rank = {int(k): int((labels[:k] == labels[k]).sum()) for k in used_tr | used_te}
    assert all(rank[k] < TRAIN_SPRITES_PER_CLASS for k in used_tr)
    assert all(rank[k] >= TRAIN_SPRITES_PER_CLASS for k in used_te)


def test_shapes_and_dtypes():
    c = render_clip(0, num_frames=5, size=48, num_objects=2)
    assert c["frames"].shape == (5, 3, 48, 48) and c["frames"].dtype == np.uint8
    assert c["flow"].shape == (4, 2, 48, 48) and c["flow"].dtype == np.float32
    assert c["occluded"].shape == (4, 48, 48) and c["occluded"].dtype == bool
    assert c["segmentation"].shape == (5, 48, 48) and set(np.unique(c["segmentation"])) <= {0, 1, 2}
    assert c["classes"].shape == c["directions"].shape == (2,)
    assert all(0 <= d < 8 for d in c["directions"]) and 0 <= c["camera_direction"] < 8

    ds = SyntheticFlowClips("test", num_clips=4, num_frames=3, size=32, seed=0)
    item = ds[1]
    assert len(ds) == 4 and item["frames"].shape == (3, 3, 32, 32) and item["frames"].dtype == torch.float32
    assert 0 <= item["frames"].min() and item["frames"].max() <= 1
    assert item["flow"].shape == (2, 2, 32, 32) and item["flow"].dtype == torch.float32
    assert item["occluded"].shape == (2, 32, 32) and item["occluded"].dtype == torch.bool
    assert item["segmentation"].shape == (3, 32, 32)
    assert item["label"] in item["classes"].tolist() and 0 <= item["camera_direction"] < 8
    raw = render_clip(ds.clip_seed(1), 3, 32, sprites="test")
    assert torch.equal(item["frames"], torch.from_numpy(raw["frames"]).float() / 255)
    assert torch.equal(item["flow"], torch.from_numpy(raw["flow"]))
    assert item["label"] == raw["classes"][raw["largest"]]
    assert SyntheticFlowClips("test", 4, 3, 32, uint8=True)[1]["frames"].dtype == torch.uint8
    with pytest.raises(IndexError):
        ds[4]

    pairs = SyntheticFramePairs("test", num_clips=4, num_frames=3, size=32, seed=0)
    assert len(pairs) == 8
    f0, f1, flow, occ = pairs[3]  # clip 1, pair 1
    assert f0.shape == f1.shape == (3, 32, 32) and flow.shape == (2, 32, 32) and occ.shape == (32, 32)
    assert torch.equal(f0, item["frames"][1]) and torch.equal(f1, item["frames"][2])
    assert torch.equal(flow, item["flow"][1]) and torch.equal(occ, item["occluded"][1])


def test_compass_classes():
    assert [compass_direction(v) for v in [(1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1),
                                           (1, 1), (2, 1), (3, 1), (1, 3), (-3, 0)]] == [0, 1, 2, 3, 4, 5, 6, 7, 7, 0, 6, 4]
    assert compass_direction((0, 0)) == -1


@pytest.mark.parametrize("make", [lambda: render_clip(0, num_frames=1),
                                  lambda: SyntheticFlowClips("train", 2, num_frames=1),
                                  lambda: SyntheticFramePairs("train", 2, num_frames=0)])
def test_too_few_frames_is_a_clear_error(make):
    with pytest.raises(ValueError, match=r"num_frames >= 2"):
        make()


def test_texture_scales_only_the_background_contrast():
    """``texture`` changes the background's fine pattern and nothing else: the scene (items,
    motion, flow, labels) is the same draw, and with texture 0 the background is far smoother."""
    a, b, flat = render_clip(4, texture=0.45), render_clip(4), render_clip(4, texture=0.0)
    np.testing.assert_array_equal(a["frames"], b["frames"])  # 0.45 is the default
    for k in ("flow", "occluded", "segmentation", "positions", "classes", "directions", "camera_velocity"):
        np.testing.assert_array_equal(a[k], flat[k])
    bg = a["segmentation"][0] == 0
    obj = ~bg
    np.testing.assert_array_equal(a["frames"][0][:, obj], flat["frames"][0][:, obj])  # items untouched

    def roughness(frames):  # mean absolute difference of horizontal neighbours on the background
        f = frames[0].astype(np.float64)
        both = bg[:, 1:] & bg[:, :-1]
        return np.abs(np.diff(f, axis=2))[:, both].mean()

    assert roughness(flat["frames"]) < 0.5 * roughness(a["frames"])  # what is left is the faint noise
