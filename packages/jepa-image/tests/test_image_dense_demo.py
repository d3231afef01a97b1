"""The dense demo scenes (jepa_image.dense_demo) and the I-JEPA spec's hook for the `dense`
protocol, up to `jepa eval <run> --protocol dense` on a tiny run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from jepa_core import registry
from jepa_image import data as D
from jepa_image import dense_demo
from jepa_image.dense_demo import (
    BACKGROUND,
    CLASSES,
    INK_THRESHOLD,
    build_dense_scenes,
    compose_scenes,
)
from jepa_image.ijepa import SPEC, build_dense_eval_data

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fmnist():
    return {s: D.load_fashion_mnist("fashion_mnist_demo", None, s) for s in ("train", "test")}


def _reference(scenes, images, item):
    """The scenes painted again, pixel by pixel, from their placements: the top-most item whose
    pixel is ink gives the pixel's value and class."""
    n, _, h, w = scenes.images.shape
    img = np.zeros((n, h, w), np.uint8)
    lab = np.full((n, h, w), BACKGROUND, np.int64)
    src = dense_demo._resize(torch.as_tensor(images), item).numpy()
    for s, placed in enumerate(scenes.placements):
        for y in range(h):
            for x in range(w):
                for p in reversed(placed):  # top first
                    dy, dx = y - p.top, x - p.left
                    if 0 <= dy < item and 0 <= dx < item and src[p.source, dy, dx] >= INK_THRESHOLD:
                        img[s, y, x] = src[p.source, dy, dx]
                        lab[s, y, x] = 1 + p.label
                        break
    return img, lab


def test_same_seed_same_scenes_other_seed_other_scenes(fmnist):
    images, labels = fmnist["train"]
    a = compose_scenes(images, labels, 20, canvas=56, item=28, seed=3)
    b = compose_scenes(images, labels, 20, canvas=56, item=28, seed=3)
    c = compose_scenes(images, labels, 20, canvas=56, item=28, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.label_maps, b.label_maps)
    assert a.placements == b.placements
    assert not torch.equal(a.images, c.images) and a.placements != c.placements


@pytest.mark.parametrize("canvas, item", [(56, 28), (28, 14)])
def test_label_maps_match_the_pasted_items(fmnist, canvas, item):
    images, labels = fmnist["train"]
    scenes = compose_scenes(images, labels, 12, canvas=canvas, item=item, seed=0)
    assert scenes.images.shape == (12, 1, canvas, canvas) and scenes.images.dtype == torch.uint8
    assert scenes.label_maps.shape == (12, canvas, canvas) and scenes.label_maps.dtype == torch.long
    img, lab = _reference(scenes, images, item)
    assert np.array_equal(scenes.images[:, 0].numpy(), img)
    assert np.array_equal(scenes.label_maps.numpy(), lab)
    # ink has a class, no ink is background; the top item's ink all carries its class
    assert torch.equal(scenes.images[:, 0] > 0, scenes.label_maps != BACKGROUND)
    for s, placed in enumerate(scenes.placements):
        assert 2 <= len(placed) <= 4
        top = placed[-1]
        assert labels[top.source] == top.label
        ink = dense_demo._resize(torch.as_tensor(images[top.source:top.source + 1]), item)[0] >= INK_THRESHOLD
        region = scenes.label_maps[s, top.top:top.top + item, top.left:top.left + item]
        assert ink.any() and (region[ink] == 1 + top.label).all()


def test_items_overlap_and_every_count_occurs(fmnist):
    images, labels = fmnist["train"]
    scenes = compose_scenes(images, labels, 200, canvas=28, item=14, seed=0)
    counts = {len(p) for p in scenes.placements}
    assert counts == {2, 3, 4}
    # some item is partly hidden: fewer of its ink pixels carry its class than it has
    hidden = 0
    for s, placed in enumerate(scenes.placements):
        for p in placed[:-1]:
            ink = dense_demo._resize(torch.as_tensor(images[p.source:p.source + 1]), 14)[0] >= INK_THRESHOLD
            region = scenes.label_maps[s, p.top:p.top + 14, p.left:p.left + 14]
            hidden += int((region[ink] != 1 + p.label).any())
    assert hidden > 0


def test_train_and_test_scenes_come_from_their_splits(fmnist):
    # image_size 56: items at their own 28 px, so a pasted item equals its source image on its ink
    tr, te = build_dense_scenes(image_size=56, train_scenes=10, test_scenes=10)
    for scenes, split in ((tr, "train"), (te, "test")):
        images, labels = fmnist[split]
        for s, placed in enumerate(scenes.placements):
            p = placed[-1]
            src = torch.as_tensor(images[p.source])
            ink = src >= INK_THRESHOLD
            assert torch.equal(scenes.images[s, 0, p.top:p.top + 28, p.left:p.left + 28][ink], src[ink])
            assert labels[p.source] == p.label
    # the bundled splits share no image, so no test scene item is a training image
    seen = {img.tobytes() for img in fmnist["train"][0]}
    assert not any(fmnist["test"][0][p.source].tobytes() in seen for placed in te.placements for p in placed)


def test_the_ijepa_spec_gives_scenes_at_the_models_image_size():
    cfg = SPEC.load_config("demo")
    assert SPEC.build_dense_eval_data is build_dense_eval_data
    tr, te = build_dense_eval_data(cfg)
    assert (len(tr), len(te)) == (dense_demo.TRAIN_SCENES, dense_demo.TEST_SCENES)
    x, m = te[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert m.shape == (28, 28) and m.dtype == torch.long
    # normalised like the classification eval data: background pixels at (0 - mean) / std
    assert x[0][m == BACKGROUND].allclose(torch.tensor((0 - 0.2860) / 0.3530))
    assert tr.classes == CLASSES and tr.num_classes == 11 and len(CLASSES) == 11
    # an image folder has no scenes
    cfg = SPEC.load_config("demo", overrides=["data.dataset=imagefolder", "data.root=/nonexistent"])
    assert build_dense_eval_data(cfg) is None


TINY = [
    "model.encoder=custom", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
    "model.pred_depth=1", "model.pred_emb_dim=16", "model.patch_size=4",
    "data.batch_size=16", "data.num_workers=0", "data.pin_memory=false",
    "train.device=cpu", "train.num_threads=1", "train.progress=false", "optim.max_steps=2",
    "eval.dense_epochs=2", "eval.batch_size=100", "eval.monitor_every=0",
]


def test_jepa_eval_protocol_dense_on_a_tiny_ijepa_run(tmp_path, monkeypatch, capsys):
    if registry.get_evaluator("probes") is None:
        pytest.skip("the probes evaluator (jepa-eval) is not installed")
    from jepa_core.cli import main
    from jepa_core.run import pretrain

    monkeypatch.setattr(dense_demo, "TRAIN_SCENES", 120)
    monkeypatch.setattr(dense_demo, "TEST_SCENES", 40)
    run = tmp_path / "run"
    # after pretraining: eval.protocols=[dense] puts the tables and the PNG into report.md
    summary = pretrain("ijepa", overrides=TINY + ["eval.protocols=[dense]"], run_dir=run)
    rows = summary["evaluation"]
    assert list(rows) == ["pretrained (EMA target)", "random init", "raw pixels"]
    report = (run / "report.md").read_text()
    assert "### Dense probes (segmentation)" in report and "| Ankle boot |" in report
    assert "![Predicted vs true masks on held-out scenes](eval/dense_masks.png)" in report
    assert (run / "eval" / "dense_masks.png").read_bytes()[:8] == PNG_MAGIC
    # `jepa eval <run> --protocol dense`
    (run / "eval" / "dense_masks.png").unlink()
    assert main(["eval", str(run), "--protocol", "dense"]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((run / "eval" / "results.json").read_text())
    assert list(saved) == ["pretrained (EMA target)", "random init", "raw pixels"]
    for name, row in saved.items():
        d = row["dense"]
        assert d["token_grid"] == [7, 7] and d["train_scenes"] == 120 and d["test_scenes"] == 40
        assert 0 < d["linear"]["pixel_accuracy"] <= 100 and 0 < d["knn"]["miou"] <= 100
        assert set(d["linear"]["per_class_iou"]) == set(CLASSES)
        timing = ("seconds", "extract_seconds")
        # the same numbers as after pretraining (same checkpoint, fixed seeds)
        assert {k: v for k, v in d.items() if k not in timing} == \
            {k: v for k, v in rows[name]["dense"].items() if k not in timing}
    assert saved["raw pixels"]["dense"]["feature_dim"] == 16 and saved["random init"]["dense"]["feature_dim"] == 32
    md = (run / "eval" / "results.md").read_text()
    assert "| background |" in md and "](dense_masks.png)" in md
    assert (run / "eval" / "dense_masks.png").read_bytes()[:8] == PNG_MAGIC
    assert "### Dense probes (segmentation)" in printed and "| raw pixels |" in printed
