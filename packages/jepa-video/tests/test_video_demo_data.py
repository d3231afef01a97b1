"""Demo videos: real mp4 files, labels in range, and the sprite moves the labelled way."""

from __future__ import annotations

from collections import Counter

import av
import numpy as np
import pytest
from jepa_video.datasets import read_index
from jepa_video.demo_data import (
    DIRECTIONS,
    clutter_background,
    load_sprites,
    make_demo_videos,
    read_demo_meta,
    render_clip,
    split_label,
)


def _decode(path) -> tuple[np.ndarray, str, str]:
    with av.open(str(path)) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
        return frames, c.format.name, c.streams.video[0].codec_context.name


def _centroids(frames: np.ndarray) -> np.ndarray:
    """(x, y) centre of mass of the bright pixels of each frame."""
    grey = frames.astype(np.float64).mean(-1)
    w = np.where(grey > 40, grey, 0.0)
    ys, xs = np.mgrid[: grey.shape[1], : grey.shape[2]]
    m = w.sum((1, 2))
    assert (m > 0).all()
    return np.stack([(w * xs).sum((1, 2)) / m, (w * ys).sum((1, 2)) / m], 1)


def test_bundled_sprites_are_a_stratified_sample():
    images, labels = load_sprites()
    assert images.shape == (500, 28, 28) and images.dtype == np.uint8
    assert Counter(labels.tolist()) == {c: 50 for c in range(10)}
    tr, te = load_sprites("train"), load_sprites("test")
    assert len(tr[1]) == 400 and len(te[1]) == 100 and Counter(te[1].tolist()) == {c: 10 for c in range(10)}
    assert not {im.tobytes() for im in tr[0]} & {im.tobytes() for im in te[0]}


def test_demo_clips_are_valid_mp4_with_labels_in_range(demo_videos):
    rows = read_index(demo_videos)
    meta = read_demo_meta(demo_videos.parent)
    assert len(rows) == len(meta) == 24
    for (path, label), m in zip(rows, meta):
        frames, fmt, codec = _decode(path)
        assert "mp4" in fmt and codec == "h264"
        assert frames.shape == (16, 32, 32, 3)
        cls, direction = split_label(label)
        assert 0 <= cls < 10 and 0 <= direction < 8
        assert (cls, direction) == (m["object_class"], m["direction"])


def test_the_object_moves_in_the_labelled_direction(demo_videos):
    for path, label in read_index(demo_videos):
        _, direction = split_label(label)
        c = _centroids(_decode(path)[0])
        move = c[-1] - c[0]
        dx, dy = DIRECTIONS[direction]
        for axis, d in ((0, dx), (1, dy)):
            if d == 0:
                assert abs(move[axis]) < 1.0, (path, direction, move)
            else:  # 15 frames at 1 px per frame along each moving axis
                assert d * move[axis] == pytest.approx(15, abs=1.0), (path, direction, move)
        steps = np.diff(c, axis=0) @ np.array(DIRECTIONS[direction], float)
        assert (steps > 0.5).all()  # every frame, not just overall


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    a = make_demo_videos(tmp_path / "a", 6, seed=11)
    b = make_demo_videos(tmp_path / "b", 6, seed=11)
    c = make_demo_videos(tmp_path / "c", 6, seed=12)
    assert a.read_text() == b.read_text()
    for name in [p.split("/")[-1] for p, _ in read_index(a)]:
        assert (a.parent / name).read_bytes() == (b.parent / name).read_bytes()
    assert read_demo_meta(a.parent) != read_demo_meta(c.parent)


def test_balanced_labels_speeds_and_codec(tmp_path):
    idx = make_demo_videos(tmp_path, 80, frames=8, size=48, sprite_size=28, speeds=(1.0, 2.5), codec="mpeg4",
                           sprites="test", seed=0)
    labels = [y for _, y in read_index(idx)]
    assert sorted(labels) == list(range(80))  # every (class, direction) once
    meta = read_demo_meta(tmp_path)
    assert {m["speed"] for m in meta} == {1.0, 2.5}
    path = tmp_path / meta[0]["path"]
    frames, _, codec = _decode(path)
    assert codec == "mpeg4" and frames.shape == (8, 48, 48, 3)
    fast = next(m for m in meta if m["speed"] == 2.5 and m["direction"] == 0)
    c = _centroids(_decode(tmp_path / fast["path"])[0])
    assert c[-1, 0] - c[0, 0] == pytest.approx(2.5 * 7, abs=1.0)
    with pytest.raises(ValueError, match="room"):
        make_demo_videos(tmp_path / "x", 2, frames=16, size=32, sprite_size=14, speeds=(2.0,))


def test_render_clip_over_a_background_covers_it_only_with_the_sprite():
    rng = np.random.default_rng(0)
    background = rng.integers(1, 256, (32, 32)).astype(np.uint8)
    sprite = np.zeros((14, 14), np.uint8)
    sprite[3:11, 5:9] = 200  # opaque inside, a transparent black surround
    clip = render_clip(sprite, 7, 1.0, 5, 32, 2, 3, background=background)  # down-right
    for t in range(5):
        expected = background.copy()
        expected[3 + t + 3 : 3 + t + 11, 2 + t + 5 : 2 + t + 9] = 200
        np.testing.assert_array_equal(clip[t], expected)
    assert int(render_clip(sprite, 7, 1.0, 5, 32, 2, 3)[0].sum()) == int(sprite.sum())  # black canvas
    with pytest.raises(ValueError, match="32x32"):
        render_clip(sprite, 0, 1.0, 5, 32, 2, 3, background=background[:16])


def test_clutter_keeps_the_clips_draws_and_only_the_object_moves(tmp_path):
    plain = make_demo_videos(tmp_path / "plain", 8, sprites="test", seed=3)
    busy = make_demo_videos(tmp_path / "busy", 8, sprites="test", clutter=3, seed=3)
    assert plain.read_text() == busy.read_text()
    meta = read_demo_meta(busy.parent)
    assert meta == read_demo_meta(plain.parent)  # same object, path and labels
    images, _ = load_sprites("test")
    for m in meta:
        plain_frames = _decode(plain.parent / m["path"])[0].astype(np.int16).mean(-1)
        busy_frames = _decode(busy.parent / m["path"])[0].astype(np.int16).mean(-1)
        # the scene outside the object's path is static, and it is not black
        path_area = np.zeros((32, 32), bool)
        dx, dy = DIRECTIONS[m["direction"]]
        for t in range(16):
            x, y = int(m["x0"] + t * m["speed"] * dx), int(m["y0"] + t * m["speed"] * dy)
            path_area[max(y - 2, 0) : y + 16, max(x - 2, 0) : x + 16] = True
        scene = busy_frames[:, ~path_area]
        assert np.abs(scene - scene[0]).max() < 24  # codec noise only
        assert (busy_frames[0] > 40).mean() > (plain_frames[0] > 40).mean()
    scene = clutter_background(images, 2, 32, 14, np.random.default_rng(0))
    assert scene.shape == (32, 32) and scene.dtype == np.uint8 and (scene > 0).mean() > 0.1
    np.testing.assert_array_equal(clutter_background(images, 0, 32, 14, np.random.default_rng(0)), 0)
    with pytest.raises(ValueError, match="clutter must be >= 0"):
        make_demo_videos(tmp_path / "x", 2, clutter=-1)


def test_data_demo_clutter_reaches_the_generated_set(tmp_path):
    from jepa_video.vjepa import VJEPA_SPEC as SPEC
    from jepa_video.vjepa import ensure_demo_videos

    def index(*extra):
        cfg = SPEC.load_config("demo", overrides=[f"data.root={tmp_path}", "data.demo_eval_clips=4", *extra])
        return ensure_demo_videos(cfg, "test")

    plain, busy = index(), index("data.demo_clutter=2")
    assert plain.parent.name == "test-n4-f16-s32-v1-seed0"  # folders made before the key keep their names
    assert busy.parent.name == "test-n4-f16-s32-v1-c2-seed0"
    assert read_demo_meta(plain.parent) == read_demo_meta(busy.parent)
    name = read_demo_meta(busy.parent)[0]["path"]
    assert (_decode(busy.parent / name)[0] > 40).mean() > (_decode(plain.parent / name)[0] > 40).mean()
