"""The dense protocol (jepa_eval.dense): scores with known answers, patch labels, k-NN label
transfer, the linear segmentation probe, and the rows of the `probes` evaluator."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from jepa_core.config import ConfigError, EvalConfig
from jepa_core.nn import VisionTransformer
from jepa_core.registry import MethodSpec
from jepa_eval.dense import (
    IGNORE_INDEX,
    confusion_matrix,
    knn_segmentation,
    knn_transfer,
    linear_segmentation_probe,
    patch_labels,
    patchify,
    segmentation_scores,
    spatial_tokens,
    token_grid,
)
from jepa_eval.pretrain import check_config, evaluate_encoders, probe_encoders
from torch.utils.data import Dataset

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------
# scores


def test_miou_and_pixel_accuracy_of_hand_built_predictions():
    target = torch.tensor([[0, 0, 1, 1],
                           [0, 2, 2, IGNORE_INDEX]])
    pred = torch.tensor([[0, 1, 1, 1],
                         [0, 2, 0, 2]])  # the last pixel is unlabeled: whatever is predicted, ignored
    conf = confusion_matrix(pred, target, 3)
    assert conf.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 1]]
    s = segmentation_scores(conf, ["bg", "a", "b"])
    # IoU: class 0 = 2 / (3 + 3 - 2) = 1/2, class 1 = 2 / (2 + 3 - 2) = 2/3, class 2 = 1 / (2 + 1 - 1) = 1/2
    assert s["per_class_iou"] == {"bg": 50.0, "a": 66.67, "b": 50.0}
    assert s["miou"] == pytest.approx(100 * (1 / 2 + 2 / 3 + 1 / 2) / 3)
    assert s["pixel_accuracy"] == pytest.approx(100 * 5 / 7)


def test_a_class_with_an_empty_union_is_left_out_of_the_mean():
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 0, 1, 0])
    s = segmentation_scores(confusion_matrix(pred, target, 4))
    assert s["per_class_iou"]["2"] is None and s["per_class_iou"]["3"] is None
    assert s["miou"] == pytest.approx(100 * (2 / 3 + 1 / 2) / 2)
    # a class predicted but absent from the labels counts (IoU 0)
    s = segmentation_scores(confusion_matrix(torch.tensor([0, 0, 1, 3]), target, 4))
    assert s["per_class_iou"]["3"] == 0.0
    assert s["miou"] == pytest.approx(100 * (1 + 1 / 2 + 0) / 3)


# ------------------------------------------------------------------------------------------------
# patch labels, grids, raw tokens


def test_patch_labels_are_the_majority_of_each_patch():
    X = IGNORE_INDEX
    m = torch.tensor([[[1, 1, 2, 3],
                       [1, 2, 3, 2],
                       [X, X, 0, 1],
                       [X, X, 1, 0]]])
    # patch (0,0): 1,1,1,2 -> 1; (0,1): 2,3,3,2 -> tie, the lower class 2; (1,0): unlabeled; (1,1): 0,1,1,0 -> 0
    assert patch_labels(m, (2, 2), 4).tolist() == [[1, 2, X, 0]]
    # a 1x1 grid: the majority of the whole map (labeled pixels only)
    assert patch_labels(m, (1, 1), 4).tolist() == [[1]]


def test_patchify_follows_the_row_major_token_grid():
    x = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
    t = patchify(x, (2, 3))
    assert t.shape == (2, 6, 3 * 4 * 4)
    assert torch.equal(t[1, 4], x[1, :, 4:8, 4:8].reshape(-1))  # token 4 = row 1, column 1
    with pytest.raises(ValueError, match="does not split"):
        patchify(x, (3, 3))


def test_token_grid_from_the_encoder_or_the_token_count():
    vit = VisionTransformer(img_size=16, patch_size=4, in_chans=1, embed_dim=16, depth=1, num_heads=2)
    x = torch.zeros(1, 1, 16, 32)
    assert token_grid(vit, x) == (4, 8)
    assert token_grid(torch.nn.Identity(), x, num_tokens=8, spatial=(16, 32)) == (2, 4)
    with pytest.raises(ValueError, match="aspect ratio"):
        token_grid(None, x, num_tokens=7, spatial=(16, 32))


def test_a_temporal_grid_is_averaged_over_time():
    tok = torch.arange(2 * 3 * 4 * 1, dtype=torch.float32).reshape(1, 2 * 3 * 4, 1)  # grid (2, 3, 4)
    out, g = spatial_tokens(tok, (2, 3, 4), 2)
    assert g == (3, 4)
    assert torch.equal(out, (tok[:, :12] + tok[:, 12:]) / 2)


# ------------------------------------------------------------------------------------------------
# k-NN label transfer


def test_knn_transfer_known_votes():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1, 2])
    test = torch.tensor([[1.0, 0.05], [0.05, 1.0], [-1.0, 0.1]])
    votes = knn_transfer(train, labels, test, 3, k=1)
    assert votes.argmax(1).tolist() == [0, 1, 2] and torch.allclose(votes.max(1).values, torch.ones(3))
    # k=3 weighted: two near neighbours of class 0 and a far one of class 1
    v = knn_transfer(train, labels, test[:1], 3, k=3, temperature=0.5)
    sims = torch.nn.functional.normalize(train, dim=1) @ torch.nn.functional.normalize(test[:1], dim=1).T
    w = (sims.squeeze(1) / 0.5).exp()
    top = sims.squeeze(1).topk(3).indices
    expect = torch.zeros(3).index_add_(0, labels[top], w[top])
    assert torch.allclose(v[0], expect / expect.sum(), atol=1e-6)


def test_knn_segmentation_recovers_patch_constant_maps():
    """Tokens that say their patch's class: the transfer gives every pixel its class."""
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(4, 8, generator=g)

    def make(n):
        lab = torch.randint(0, 4, (n, 4, 4), generator=g)
        tok = protos[lab.reshape(n, 16)] + 0.05 * torch.randn(n, 16, 8, generator=g)
        maps = lab.repeat_interleave(3, 1).repeat_interleave(3, 2)  # 12x12 maps, 3x3 patches
        return tok, maps

    (tr_t, tr_m), (te_t, te_m) = make(20), make(10)
    scores, pred = knn_segmentation(tr_t, tr_m, te_t, te_m, (4, 4), 4, k=5)
    assert scores["pixel_accuracy"] == 100.0 and scores["miou"] == 100.0 and scores["patch_accuracy"] == 100.0
    assert torch.equal(pred, te_m)
    # shuffled training labels: no better than chance
    perm = torch.randperm(20, generator=g)
    scores, _ = knn_segmentation(tr_t, tr_m[perm], te_t, te_m, (4, 4), 4, k=5)
    assert scores["pixel_accuracy"] < 50


# ------------------------------------------------------------------------------------------------
# linear segmentation probe


def _separable(n, g, protos, noise=0.3):
    """Maps of 2x2 blocks of one class each, on a 4x4 grid of 4x4 px patches (16x16 maps), and
    tokens near their class's prototype. (Blocks rather than a class per patch: bilinearly
    upsampled logits cannot follow a class that changes at every patch, see the corner pixels.)"""
    lab = torch.randint(0, protos.shape[0], (n, 2, 2), generator=g).repeat_interleave(2, 1).repeat_interleave(2, 2)
    tok = protos[lab.reshape(n, 16)] + noise * torch.randn(n, 16, protos.shape[1], generator=g)
    return tok, lab.repeat_interleave(4, 1).repeat_interleave(4, 2)


def test_linear_probe_separates_a_separable_token_set():
    g = torch.Generator().manual_seed(1)
    protos = 2 * torch.randn(5, 16, generator=g)
    (tr_t, tr_m), (te_t, te_m) = _separable(64, g, protos), _separable(32, g, protos)
    r = linear_segmentation_probe(tr_t, tr_m, te_t, te_m, (4, 4), 5, epochs=15, lr=1e-2, batch_size=16)
    assert r.scores["pixel_accuracy"] > 98 and r.scores["miou"] > 96
    assert r.predictions.shape == te_m.shape


def test_linear_probe_is_at_chance_on_random_labels():
    g = torch.Generator().manual_seed(2)
    tr_t, te_t = torch.randn(64, 16, 16, generator=g), torch.randn(64, 16, 16, generator=g)
    tr_m = torch.randint(0, 4, (64, 16, 16), generator=g)
    te_m = torch.randint(0, 4, (64, 16, 16), generator=g)
    r = linear_segmentation_probe(tr_t, tr_m, te_t, te_m, (4, 4), 4, epochs=10, lr=1e-2, batch_size=16)
    assert 20 < r.scores["pixel_accuracy"] < 30  # chance: 25 %
    assert r.scores["miou"] < 20


def test_linear_probe_never_reads_the_held_out_labels():
    g = torch.Generator().manual_seed(3)
    protos = torch.randn(3, 8, generator=g)
    (tr_t, tr_m), (te_t, te_m) = _separable(16, g, protos, 1.0), _separable(8, g, protos, 1.0)
    a = linear_segmentation_probe(tr_t, tr_m, te_t, te_m, (4, 4), 3, epochs=2, batch_size=8)
    b = linear_segmentation_probe(tr_t, tr_m, te_t, torch.zeros_like(te_m), (4, 4), 3, epochs=2, batch_size=8)
    assert torch.equal(a.predictions, b.predictions)


def test_unlabeled_pixels_do_not_train_or_score():
    g = torch.Generator().manual_seed(4)
    protos = 2 * torch.randn(3, 8, generator=g)
    (tr_t, tr_m), (te_t, te_m) = _separable(32, g, protos), _separable(16, g, protos)
    noisy = tr_m.clone()
    noisy[:, :, :8] = IGNORE_INDEX  # half of every training map unlabeled
    a = linear_segmentation_probe(tr_t, noisy, te_t, te_m, (4, 4), 3, epochs=10, batch_size=8)
    assert a.scores["pixel_accuracy"] > 95
    te_half = te_m.clone()
    te_half[:, :, 8:] = IGNORE_INDEX
    b = linear_segmentation_probe(tr_t, noisy, te_t, te_half, (4, 4), 3, epochs=10, batch_size=8)
    expect = 100 * (b.predictions[:, :, :8] == te_m[:, :, :8]).float().mean()
    assert b.scores["pixel_accuracy"] == pytest.approx(float(expect))


# ------------------------------------------------------------------------------------------------
# in the probes evaluator


class _Squares(Dataset):
    """16x16 images of 8x8 squares, each square's class (0 = background .. 3) a 4x4 texture tiled
    over it (zeros for the background), plus noise."""

    classes = ("background", "dim", "mid", "bright")
    num_classes = 4
    ignore_index = IGNORE_INDEX

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        textures = torch.rand(4, 4, 4, generator=torch.Generator().manual_seed(0))
        textures[0] = 0
        lab = torch.randint(0, 4, (n, 2, 2), generator=g)
        self.maps = lab.repeat_interleave(8, 1).repeat_interleave(8, 2)
        self.x = textures[lab].repeat(1, 1, 1, 2, 2).permute(0, 1, 3, 2, 4).reshape(n, 1, 16, 16)
        self.x = self.x + 0.1 * torch.randn(n, 1, 16, 16, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.maps[i]


def _classification(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(2).repeat(n)
    return torch.utils.data.TensorDataset(y[:, None, None, None].float() + 0.1 * torch.randn(len(y), 1, 16, 16,
                                                                                              generator=g), y)


def _vit():
    torch.manual_seed(0)
    return VisionTransformer(img_size=16, patch_size=4, in_chans=1, embed_dim=16, depth=1, num_heads=2)


DENSE_CFG = EvalConfig(protocols=("dense",), batch_size=32, dense_epochs=8, dense_batch_size=8, dense_knn_k=3,
                       random_baseline=False, raw_baseline=True)


def test_dense_rows_tables_and_png(tmp_path):
    data = (_Squares(48, 0), _Squares(16, 1))
    out = probe_encoders({"vit": _vit()}, None, None, DENSE_CFG, out_dir=tmp_path / "eval", run_dir=tmp_path,
                         dense_data=data)
    res = out["results"]
    assert list(res) == ["vit", "raw pixels"]
    for row in res.values():
        d = row["dense"]
        assert d["token_grid"] == [4, 4] and d["num_classes"] == 4
        assert d["train_scenes"] == 48 and d["test_scenes"] == 16
        assert 0 <= d["linear"]["miou"] <= 100 and 0 <= d["knn"]["pixel_accuracy"] <= 100
        assert set(d["linear"]["per_class_iou"]) == set(_Squares.classes)
    assert res["raw pixels"]["dense"]["feature_dim"] == 16  # 4x4 pixels of one channel
    # raw pixels: intensity says the class, so both probes get it nearly right
    assert res["raw pixels"]["dense"]["linear"]["pixel_accuracy"] > 90
    assert res["raw pixels"]["dense"]["knn"]["pixel_accuracy"] > 90
    md = out["markdown"]
    assert "### Dense probes (segmentation)" in md and "| vit |" in md and "| raw pixels |" in md
    assert "| bright |" in md  # the per-class table
    assert "![Predicted vs true masks on held-out scenes](eval/dense_masks.png)" in md  # relative to report.md
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["vit"]["dense"]["linear"]["miou"] == res["vit"]["dense"]["linear"]["miou"]
    assert "](dense_masks.png)" in (tmp_path / "eval" / "results.md").read_text()  # relative to results.md
    png = (tmp_path / "eval" / "dense_masks.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 5000
    assert not (tmp_path / "eval" / "accuracy.png").exists()  # no classification protocol ran


def test_dense_beside_the_classification_protocols():
    cfg = EvalConfig(protocols=("linear", "dense"), batch_size=32, dense_epochs=1, dense_batch_size=8, dense_knn_k=3,
                     random_baseline=False, raw_baseline=True, plots=False)
    out = probe_encoders({"vit": _vit()}, _classification(8, 0), _classification(4, 1), cfg,
                         dense_data=(_Squares(16, 0), _Squares(8, 1)))
    for row in out["results"].values():
        assert "linear_probe" in row and "dense" in row
    assert "linear probe (%)" in out["markdown"] and "### Dense probes" in out["markdown"]
    assert "![" not in out["markdown"]  # no plots, no image link


def _spec(dense, classification=True):
    def build_model(cfg):
        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.encoder = _vit()

            def eval_encoder(self):
                return self.encoder

        return M()

    return MethodSpec(name="evaltest_dense", config_cls=object, build_model=build_model,
                      build_train_data=lambda cfg, r, w: (None, None),
                      build_eval_data=(lambda cfg: (_classification(8, 0), _classification(4, 1)))
                      if classification else None,
                      build_dense_eval_data=dense)


class _Cfg:
    def __init__(self, protocols):
        self.eval = EvalConfig(protocols=protocols, batch_size=32, dense_epochs=1, dense_batch_size=8, dense_knn_k=3,
                               raw_baseline=False, plots=False)

        class T:
            seed = 0
            max_bad_fraction = 0.01

        self.train = T()


def test_evaluate_encoders_reads_the_specs_dense_data():
    spec = _spec(lambda cfg: (_Squares(16, 0), _Squares(8, 1)))
    out = evaluate_encoders(spec, _Cfg(("dense",)), spec.build_model(None))
    assert set(out["results"]) == {"pretrained", "random init"}
    assert all(set(r) == {"dense"} for r in out["results"].values())


def test_dense_data_without_classification_data(caplog):
    spec = _spec(lambda cfg: (_Squares(16, 0), _Squares(8, 1)), classification=False)
    with caplog.at_level(logging.WARNING):
        out = evaluate_encoders(spec, _Cfg(("linear", "dense")), spec.build_model(None))
    assert "no labeled evaluation data" in caplog.text and "skipping linear" in caplog.text
    assert all(set(r) == {"dense"} for r in out["results"].values())
    assert evaluate_encoders(_spec(None, classification=False), _Cfg(("linear",)), spec.build_model(None)) is None


def test_dense_without_dense_data(caplog):
    spec = _spec(None)
    with pytest.raises(ConfigError, match=r"eval protocol 'dense' cannot run: method 'evaltest_dense' has no dense "
                                          r"evaluation data \(MethodSpec.build_dense_eval_data is not set\)"):
        evaluate_encoders(spec, _Cfg(("dense",)), spec.build_model(None))
    with caplog.at_level(logging.WARNING):
        out = evaluate_encoders(spec, _Cfg(("linear", "dense")), spec.build_model(None))
    assert "skipping the dense protocol" in caplog.text
    assert all("linear_probe" in r and "dense" not in r for r in out["results"].values())
    spec = _spec(lambda cfg: None)  # the hook has nothing for this config
    with pytest.raises(ConfigError, match="returned None for this config"):
        evaluate_encoders(spec, _Cfg(("dense",)), spec.build_model(None))


@pytest.mark.parametrize("key, value", [("dense_epochs", 0), ("dense_lr", 0.0), ("dense_knn_k", 0),
                                        ("dense_batch_size", 0), ("dense_lr", float("nan"))])
def test_bad_dense_settings_fail_the_config_check(key, value):
    cfg = _Cfg(("dense",))
    setattr(cfg.eval, key, value)
    with pytest.raises(ConfigError, match=f"eval.{key} must be"):
        check_config(cfg)


def test_dense_with_several_tasks_is_run_once_and_shown_once(tmp_path):
    cfg = EvalConfig(protocols=("linear", "dense"), batch_size=32, dense_epochs=1, dense_batch_size=8, dense_knn_k=3,
                     random_baseline=False, raw_baseline=False, plots=True)
    tasks = {"same": lambda y: y, "flipped": lambda y: 1 - y}
    out = probe_encoders({"vit": _vit()}, _classification(8, 0), _classification(4, 1), cfg, tasks=tasks,
                         out_dir=tmp_path / "eval", run_dir=tmp_path, dense_data=(_Squares(16, 0), _Squares(8, 1)))
    a, b = out["results"]["same"]["vit"], out["results"]["flipped"]["vit"]
    assert a["dense"] is b["dense"]  # one dense pass, in each task's row
    assert out["markdown"].count("### Dense probes (segmentation)") == 1
    assert (tmp_path / "eval" / "dense_masks.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "eval" / "same" / "results.json").is_file()
    assert "](dense_masks.png)" in (tmp_path / "eval" / "results.md").read_text()


class _BrokenSquares(_Squares):
    def __getitem__(self, i):
        if i == 3:
            from jepa_core.data import CorruptSampleError

            raise CorruptSampleError("scene 3: unreadable")
        return super().__getitem__(i)


def test_corrupt_scenes_are_left_out_of_every_row():
    cfg = EvalConfig(protocols=("dense",), batch_size=32, dense_epochs=1, dense_batch_size=8, dense_knn_k=3,
                     random_baseline=False, raw_baseline=True, plots=False)
    out = probe_encoders({"vit": _vit()}, None, None, cfg, dense_data=(_BrokenSquares(20, 0), _Squares(8, 1)),
                         max_bad_fraction=0.1)
    for row in out["results"].values():
        assert row["dense"]["train_scenes"] == 19 and row["dense"]["skipped_corrupt_train"] == 1
    assert "Skipped 1 corrupt scenes (1 training, 0 held-out)" in out["markdown"]
