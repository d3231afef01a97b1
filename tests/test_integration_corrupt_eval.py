"""Issue #13, item 4: the evaluation after pretraining (jepa-eval) skips and counts corrupt
images as training does, and the report is written; too many fail clearly. Needs jepa-image and
jepa-eval together, hence a root test."""

from __future__ import annotations

import os

import numpy as np
import pytest
from jepa_core.run import pretrain

TINY = [
    "model.encoder=custom", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
    "model.pred_depth=1", "model.pred_emb_dim=16", "model.patch_size=4",
    "data.batch_size=16", "data.num_workers=0", "data.pin_memory=false",
    "train.device=cpu", "train.num_threads=1", "train.progress=false",
]


def _split(root, split: str, good_per_class: int, bad_per_class: int, classes=("cat", "dog")):
    """root/<split>/<class>/: small random RGB PNGs, plus .jpg files of random bytes sorted first."""
    from PIL import Image

    rng = np.random.default_rng(hash(split) % 2**32)
    for c in classes:
        d = root / split / c
        d.mkdir(parents=True)
        for i in range(good_per_class):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"img{i:03d}.png")
        for i in range(bad_per_class):
            (d / f"000_bad{i}.jpg").write_bytes(os.urandom(400))


@pytest.mark.fault
def test_pretrain_with_corrupt_eval_images_writes_the_report(tmp_path):
    root = tmp_path / "data"
    _split(root, "train", good_per_class=20, bad_per_class=1)
    _split(root, "val", good_per_class=10, bad_per_class=1)
    run = tmp_path / "r"
    summary = pretrain("ijepa", run_dir=run, overrides=TINY + [
        "data.dataset=imagefolder", f"data.root={root}", "data.image_size=28", "model.in_chans=3",
        "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]", "optim.max_steps=4",
        "train.max_bad_fraction=0.2", "eval.enabled=true", "eval.protocols=[linear,knn]", "eval.knn_k=[1,5]",
        # the collapse monitors read the evaluation split while training: they skip too
        "eval.random_baseline=false", "eval.plots=false", "eval.monitor_every=2", "eval.monitor_samples=64",
    ])
    assert summary["steps"] == 4
    assert (run / "monitors.csv").is_file()
    rows = summary["evaluation"]
    assert rows, "no evaluation"
    for name, r in rows.items():
        # one corrupt file per class in each split: 2 training + 2 held-out, for every row
        assert (r["skipped_corrupt_train"], r["skipped_corrupt_test"], r["skipped_corrupt"]) == (2, 2, 4), name
        assert (r["train_samples"], r["test_samples"]) == (40, 20), name
    report = (run / "report.md").read_text()
    assert "Skipped 4 corrupt samples (2 training, 2 held-out)" in report


@pytest.mark.fault
def test_too_many_corrupt_eval_images_fail_clearly(tmp_path):
    from jepa_eval.features import TooManyCorruptSamplesError

    root = tmp_path / "data"
    _split(root, "train", good_per_class=20, bad_per_class=1)
    _split(root, "val", good_per_class=2, bad_per_class=2)
    with pytest.raises(TooManyCorruptSamplesError, match="4 of 8 held-out .*max_bad_fraction=0.2"):
        pretrain("ijepa", run_dir=tmp_path / "r", overrides=TINY + [
            "data.dataset=imagefolder", f"data.root={root}", "data.image_size=28", "model.in_chans=3",
            "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]", "optim.max_steps=2",
            "train.max_bad_fraction=0.2", "eval.enabled=true", "eval.protocols=[linear]",
            "eval.random_baseline=false", "eval.raw_baseline=false", "eval.plots=false", "eval.monitor_every=0",
        ])
