"""Procedural skeleton actions: determinism, balance, a rigid body, distinguishable motion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from jepa_skeleton.graph import NTU25
from jepa_skeleton.synthetic import (
    ACTIONS,
    SyntheticSkeletonActions,
    generate_arrays,
    write_npz,
)

torch.set_num_threads(1)


def test_deterministic_and_shapes():
    ds = SyntheticSkeletonActions(30, seed=5, num_frames=48)
    assert len(ds) == 30 and ds.num_classes == len(ACTIONS) >= 6 and ds.classes == ACTIONS
    x, label = ds[7]
    assert x.dtype == torch.float32 and x.shape == (3, 48, 25, 2) and isinstance(label, int)
    assert not x[..., 1].any()  # one actor: the second body is zero
    x2, label2 = SyntheticSkeletonActions(30, seed=5, num_frames=48)[7]
    assert torch.equal(x, x2) and label == label2  # a pure function of (seed, index)
    assert not torch.allclose(ds[8][0], x)  # another index, other data
    assert not torch.allclose(SyntheticSkeletonActions(30, seed=6, num_frames=48)[7][0], x)
    arr, y = generate_arrays(30, seed=5, num_frames=48)
    assert arr.shape == (30, 3, 48, 25, 2) and y.dtype == np.int64
    np.testing.assert_allclose(arr[7], x.numpy(), atol=1e-6)  # the arrays and the dataset agree
    np.testing.assert_array_equal(y, ds.labels)
    with pytest.raises(IndexError):
        ds[30]


def test_balanced_classes_and_subsets_of_classes():
    _, y = generate_arrays(100, seed=0, num_frames=16)
    assert np.bincount(y).tolist() == [10] * 10
    ds = SyntheticSkeletonActions(12, classes=["squat", "clap", "bow"], num_frames=16)
    assert ds.classes == ("squat", "clap", "bow") and ds.num_classes == 3
    assert sorted(ds[i][1] for i in range(12)) == [0] * 4 + [1] * 4 + [2] * 4
    with pytest.raises(ValueError, match="unknown synthetic action"):
        SyntheticSkeletonActions(4, classes=["juggle"])


def test_valid_frames_vary_and_padding_is_zero():
    x, _ = generate_arrays(60, seed=1, num_frames=40, num_bodies=1)
    valid = (x != 0).any(axis=(1, 3, 4))  # (N, T)
    counts = valid.sum(1)
    assert (counts == 40).any() and (counts < 40).any() and counts.min() >= 24
    for i, n in enumerate(counts):  # the valid frames come first
        assert valid[i, :n].all() and not valid[i, n:].any()


def test_bone_lengths_constant_within_a_sample():
    x, _ = generate_arrays(40, seed=2, num_frames=32, noise=0.0)
    lengths_all = []
    for i in range(len(x)):
        n = int((x[i] != 0).any(axis=(0, 2, 3)).sum())
        s = x[i, :, :n, :, 0].astype(np.float64)
        lengths = np.stack([np.linalg.norm(s[:, :, a] - s[:, :, b], axis=0)
                            for a, b in NTU25.edges])  # (bones, T)
        assert (lengths.std(1) < 1e-5).all()
        lengths_all.append(lengths.mean(1))
    assert np.std(lengths_all, axis=0).max() > 0.005  # proportions differ between samples


def _speed_features(x):
    v = np.linalg.norm(np.diff(x[..., 0], axis=2), axis=1)  # (N, T-1, V)
    valid = (x[..., 0] != 0).any(axis=(1, 3))[:, 1:]  # pairs of valid frames
    return (v * valid[:, :, None]).sum(1) / valid.sum(1)[:, None]  # mean speed per joint


def test_classes_differ_in_motion():
    x_tr, y_tr = generate_arrays(400, seed=0, num_frames=48)
    x_te, y_te = generate_arrays(200, seed=0, num_frames=48, start=400)
    f_tr, f_te = _speed_features(x_tr), _speed_features(x_te)
    means = np.stack([f_tr[y_tr == k].mean(0) for k in range(len(ACTIONS))])
    pred = ((f_te[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == y_te).mean() > 0.5  # chance is 0.1


def test_write_npz(tmp_path):
    info = write_npz(tmp_path / "syn.npz", train=20, test=10, seed=3, num_frames=16)
    assert info["train"] == 20 and info["classes"] == list(ACTIONS)
    z = np.load(tmp_path / "syn.npz")
    assert z["x_train"].shape == (20, 3, 16, 25, 2) and z["x_test"].shape == (10, 3, 16, 25, 2)
    np.testing.assert_array_equal(z["x_test"], generate_arrays(10, 3, 16, start=20)[0])
    assert not np.isin(z["x_test"][:, 0, 0, 0, 0], z["x_train"][:, 0, 0, 0, 0]).any()


def test_viewpoint_covers_the_whole_circle():
    x, _ = generate_arrays(200, seed=4, num_frames=8, noise=0.0)
    hips = x[:, :, 0, 12, 0] - x[:, :, 0, 16, 0]  # left hip - right hip, first frame, (N, 3)
    azimuth = np.arctan2(hips[:, 2], hips[:, 0])  # about the vertical axis
    quadrant = np.floor((azimuth + np.pi) / (np.pi / 2)).astype(int) % 4
    assert np.bincount(quadrant, minlength=4).min() >= 25  # every direction, not a +-60 deg arc
