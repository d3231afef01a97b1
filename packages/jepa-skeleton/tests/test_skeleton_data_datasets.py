"""Skeleton datasets: array files (ours, MAMP's and 2s-AGCN's layouts), folders, subsets."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from jepa_core.data import CorruptSampleError, Stamped, collate_stamped
from jepa_skeleton.datasets import SkeletonArrays, SkeletonFolder, subset_fraction
from jepa_skeleton.graph import COCO17
from jepa_skeleton.preprocess import MAMPTransform

torch.set_num_threads(1)


def _arrays(n=6, T=20, V=25, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3, T, V, 2)).astype(np.float32)
    x[:, :, 15:] = 0  # 15 valid frames
    x[:, :, :, :, 1] = 0
    return x, np.arange(n, dtype=np.int64) % 3


def test_npz_ours_and_corrupt_samples(tmp_path):
    x, y = _arrays()
    x[2] = 0  # no valid frame
    x[4, 0, 3, 5, 0] = np.nan
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    ds = SkeletonArrays(tmp_path / "d.npz", "train", max_bad_fraction=0.5)
    assert len(ds) == 6 and ds.num_classes == 3 and ds.bad_indices.tolist() == [2, 4]
    xi, yi = ds[1]
    assert xi.dtype == torch.float32 and xi.shape == (3, 20, 25, 2) and yi == 1
    assert torch.equal(xi, torch.from_numpy(x[1]))
    for i in (2, 4):
        with pytest.raises(CorruptSampleError):
            ds[i]
    assert ds.num_bad == 2
    with pytest.raises(ValueError, match="max_bad_fraction"):
        SkeletonArrays(tmp_path / "d.npz", "train", max_bad_fraction=0.1)
    assert len(SkeletonArrays(tmp_path / "d.npz", "test")) == 2
    assert isinstance(ds.x, np.memmap)  # uncompressed: memory-mapped
    np.savez_compressed(tmp_path / "c.npz", x_train=x, y_train=y)
    dc = SkeletonArrays(tmp_path / "c.npz", max_bad_fraction=0.5)
    assert not isinstance(dc.x, np.memmap) and torch.equal(dc[1][0], xi)
    # the Trainer's path: corrupt samples are dropped from the batch and counted
    batch, step, bad = collate_stamped([Stamped(ds[i], 7) if i not in (2, 4) else
                                        Stamped(None, 7) for i in range(6)])
    assert bad == 2 and batch[0].shape == (4, 3, 20, 25, 2) and step == 7


def test_wrong_joint_count(tmp_path):
    x, y = _arrays(V=17)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    with pytest.raises(ValueError, match="expects 25 joints, got 17"):
        SkeletonArrays(tmp_path / "d.npz")
    assert SkeletonArrays(tmp_path / "d.npz", graph=COCO17)[0][0].shape == (3, 20, 17, 2)


def test_mamp_layout_and_transform(tmp_path):
    x, y = _arrays(n=4, T=64)
    x[:, :, 40:] = 0
    # MAMP: (N, T, 150), each frame body 0's 25 joints (x y z) then body 1's; one-hot labels
    mamp = x.transpose(0, 2, 4, 3, 1).reshape(4, 64, 150)
    np.savez(tmp_path / "NTU60_XSub.npz", x_train=mamp, y_train=np.eye(60)[y],
             x_test=mamp, y_test=np.eye(60)[y])
    ds = SkeletonArrays(tmp_path / "NTU60_XSub.npz", "train")
    assert ds.labels.tolist() == y.tolist()
    assert torch.equal(ds[3][0], torch.from_numpy(x[3]))
    tds = SkeletonArrays(tmp_path / "NTU60_XSub.npz", "test", transform=MAMPTransform(False))
    xt, _ = tds[0]
    assert xt.shape == (3, 120, 25, 2) and torch.isfinite(xt).all()
    torch.manual_seed(1)
    a = SkeletonArrays(tmp_path / "NTU60_XSub.npz", transform=MAMPTransform(True))[0][0]
    torch.manual_seed(1)
    b = SkeletonArrays(tmp_path / "NTU60_XSub.npz", transform=MAMPTransform(True))[0][0]
    assert torch.equal(a, b)  # the global generator, seeded per sample by the Trainer


def test_npy_with_label_files(tmp_path):
    x, y = _arrays(n=5)
    np.save(tmp_path / "train_data_joint.npy", x)
    with open(tmp_path / "train_label.pkl", "wb") as f:  # 2s-AGCN: (names, labels)
        pickle.dump(([f"S001C001P001R001A00{i}.skeleton" for i in range(5)], list(y)), f)
    np.save(tmp_path / "labels.npy", y)
    for lp in ("train_label.pkl", "labels.npy"):
        ds = SkeletonArrays(tmp_path / "train_data_joint.npy", labels_path=tmp_path / lp)
        assert ds.labels.tolist() == y.tolist() and torch.equal(ds[2][0], torch.from_numpy(x[2]))
    with pytest.raises(ValueError, match="labels_path"):
        SkeletonArrays(tmp_path / "train_data_joint.npy")


def test_skeleton_folder(tmp_path):
    rng = np.random.default_rng(0)
    for c, n in (("jump", 2), ("sit", 3)):
        (tmp_path / c).mkdir()
        for i in range(n):
            np.save(tmp_path / c / f"seq{i}.npy", rng.normal(size=(10 + i, 17, 2)))
    np.save(tmp_path / "sit" / "two.npy", rng.normal(size=(8, 2, 17, 3)))
    np.save(tmp_path / "sit" / "empty.npy", np.zeros((8, 17, 2)))
    (tmp_path / "sit" / "broken.npy").write_bytes(b"not an npy file")
    ds = SkeletonFolder(tmp_path)
    assert ds.classes == ["jump", "sit"] and len(ds) == 8
    assert ds.labels.tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    x, label = ds[0]
    assert x.shape == (3, 10, 17, 1) and label == 0 and not x[2].any()  # 2-D: z = 0
    src = np.load(tmp_path / "jump" / "seq0.npy")
    assert torch.allclose(x[:2, :, :, 0], torch.from_numpy(src).float().permute(2, 0, 1))
    names = [f.name for f, _ in ds.samples]
    two = ds[names.index("two.npy")][0]
    assert two.shape == (3, 8, 17, 2)
    for bad in ("empty.npy", "broken.npy"):
        with pytest.raises(CorruptSampleError):
            ds[names.index(bad)]
    assert SkeletonFolder(tmp_path, num_bodies=2)[0][0].shape == (3, 10, 17, 2)
    # with a fixed-length transform the items batch
    t = SkeletonFolder(tmp_path, transform=MAMPTransform(False, window=16, graph="coco17"),
                       num_bodies=2)
    assert t[1][0].shape == (3, 16, 17, 2)
    np.save(tmp_path / "jump" / "wrong.npy", np.zeros((5, 25, 3)))
    with pytest.raises(ValueError, match="wrong.npy.*17 joints, got 25"):
        SkeletonFolder(tmp_path)


def test_skeleton_folder_skips_and_counts_nan_and_empty_sequences(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "wave").mkdir()
    good = rng.normal(size=(6, 17, 3))
    nan = good.copy()
    nan[2, 4, 1] = np.nan
    for name, a in (("a.npy", good), ("b_nan.npy", nan), ("c_empty.npy", np.zeros((6, 17, 3))),
                    ("d_no_frames.npy", np.zeros((0, 17, 3)))):
        np.save(tmp_path / "wave" / name, a)
    ds = SkeletonFolder(tmp_path)
    assert len(ds) == 4 and ds[0][0].shape == (3, 6, 17, 1)
    for i, why in ((1, "non-finite"), (2, "no valid frame"), (3, "no valid frame")):
        with pytest.raises(CorruptSampleError, match=why):
            ds[i]
    assert ds.num_bad == 3


def test_subset_fraction():
    labels = np.repeat(np.arange(10), [100, 50, 30, 7, 200, 10, 3, 60, 40, 500])
    sub = subset_fraction(labels, 0.01, seed=0)
    counts = np.bincount(labels[sub], minlength=10)
    assert (counts >= 1).all()
    assert counts.tolist() == [1, 1, 1, 1, 2, 1, 1, 1, 1, 5]
    assert np.array_equal(sub, subset_fraction(labels, 0.01, seed=0))  # deterministic
    assert not np.array_equal(sub, subset_fraction(labels, 0.01, seed=1))
    sub10 = subset_fraction(labels, 0.1, seed=0)
    assert np.bincount(labels[sub10]).tolist() == [10, 5, 3, 1, 20, 1, 1, 6, 4, 50]
    assert len(np.unique(sub10)) == len(sub10) and (np.diff(sub10) > 0).all()
    with pytest.raises(ValueError):
        subset_fraction(labels, 0.0, seed=0)
