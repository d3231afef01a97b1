"""Fashion-MNIST: the bundled stratified sample and the Debian idx folder."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from jepa_image import data as D
from jepa_image.ijepa import SPEC, build_eval_data, build_train_data


@pytest.mark.parametrize("split, n", [("train", 12000), ("test", 2000)])
def test_bundled_sample_is_stratified_uint8_28x28(split, n):
    images, labels = D.load_fashion_mnist("fashion_mnist_demo", None, split)
    assert images.shape == (n, 28, 28)
    assert images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert np.bincount(labels, minlength=10).tolist() == [n // 10] * 10
    assert images.min() == 0 and images.max() == 255  # real images, not zeros
    assert images.reshape(n, -1).std(1).min() > 0


def test_bundled_train_and_test_do_not_overlap():
    tr, _ = D.load_fashion_mnist("fashion_mnist_demo", None, "train")
    te, _ = D.load_fashion_mnist("fashion_mnist_demo", None, "test")
    seen = {img.tobytes() for img in tr}
    assert sum(img.tobytes() in seen for img in te) == 0


def test_demo_preset_data_pipeline():
    cfg = SPEC.load_config("demo")
    dataset, collate = build_train_data(cfg)
    assert len(dataset) == 12000
    x, y = dataset[0]
    # In-memory samples stay uint8; the collator crops and normalises the whole batch.
    assert x.shape == (1, 28, 28) and x.dtype == torch.uint8
    batch = collate([dataset[i] for i in range(4)])
    assert batch["images"].shape == (4, 1, 28, 28) and batch["images"].dtype == torch.float32
    # normalised with the Fashion-MNIST statistics: values span roughly [-0.81, 2.02]
    assert batch["images"].min() >= -0.2860 / 0.3530 - 1e-5 and batch["images"].max() <= (1 - 0.2860) / 0.3530 + 1e-5
    assert len(batch["masks_pred"]) == 4 and len(batch["masks_enc"]) == 1
    train, test = build_eval_data(cfg)
    assert (len(train), len(test)) == (12000, 2000)
    xt, yt = test[0]
    # Eval images are only normalised: (uint8 / 255 - mean) / std, exactly.
    raw, labels = D.load_fashion_mnist("fashion_mnist_demo", None, "test")
    expected = (torch.from_numpy(raw[0]).float() / 255 - 0.2860) / 0.3530
    assert torch.allclose(xt[0], expected, atol=1e-6)
    assert int(yt) == int(labels[0])


@pytest.mark.skipif(not D.DEBIAN_FASHION_MNIST.is_dir(), reason="Debian dataset-fashion-mnist is not installed")
def test_reads_the_debian_folder():
    tr_x, tr_y = D.read_fashion_mnist(D.DEBIAN_FASHION_MNIST, "train")
    te_x, te_y = D.read_fashion_mnist(D.DEBIAN_FASHION_MNIST, "test")
    assert tr_x.shape == (60000, 28, 28) and te_x.shape == (10000, 28, 28)
    assert tr_x.dtype == te_x.dtype == np.uint8
    assert np.bincount(tr_y).tolist() == [6000] * 10
    assert np.bincount(te_y).tolist() == [1000] * 10
    # data.dataset=fashion_mnist defaults to the Debian folder.
    x, y = D.load_fashion_mnist("fashion_mnist", None, "test")
    assert np.array_equal(x, te_x) and np.array_equal(y, te_y)


def test_missing_folder_names_the_folder(tmp_path):
    missing = tmp_path / "fmnist"
    with pytest.raises(FileNotFoundError) as err:
        D.read_fashion_mnist(missing, "train")
    msg = str(err.value)
    assert str(missing) in msg
    assert "train-images-idx3-ubyte" in msg


def _write_idx(path, arr: np.ndarray, gz: bool):
    header = (0x0800 | arr.ndim).to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("gz", [True, False])
def test_reads_idx_files_gzipped_or_not(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7).astype(np.uint8)
    suffix = ".gz" if gz else ""
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images, gz)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels, gz)
    x, y = D.read_fashion_mnist(tmp_path, "test")
    assert np.array_equal(x, images)
    assert x.flags.writeable  # torch.as_tensor shares it without the non-writable warning
    assert np.array_equal(y, labels) and y.dtype == np.int64
    with pytest.raises(FileNotFoundError, match="train"):
        D.read_fashion_mnist(tmp_path, "train")


def test_rejects_a_file_that_is_not_idx(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03" + bytes(20))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + (0).to_bytes(4, "big"))
    with pytest.raises(ValueError, match="not an idx file"):
        D.read_fashion_mnist(tmp_path, "test")


def test_full_fashion_mnist_with_missing_root_fails_at_build(tmp_path):
    cfg = SPEC.load_config("demo", overrides=["data.dataset=fashion_mnist", f"data.root={tmp_path / 'none'}"])
    with pytest.raises(FileNotFoundError, match="none"):
        build_train_data(cfg)
