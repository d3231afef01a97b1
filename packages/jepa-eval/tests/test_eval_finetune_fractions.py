"""Semi-supervised fine-tuning (``eval.finetune_fractions``): the `finetune` protocol repeated on a
seeded class-balanced fraction of the training labels (MAMP's and S-JEPA's 1 % / 10 % protocol)."""

from __future__ import annotations

import json

import pytest
import torch
from jepa_core.config import ConfigError, EvalConfig, from_dict, validate
from jepa_core.nn import VisionTransformer
from jepa_eval import pretrain
from jepa_eval.pretrain import finetune_fraction, finetune_key, markdown_table, probe_encoders
from torch.utils.data import TensorDataset

COUNTS = (100, 50, 20)  # unbalanced classes: the subsets must follow each class's own count


def _images(counts, seed: int) -> TensorDataset:
    """Class c: a fixed 8x8 prototype (pixel std 3) plus unit noise, ``counts[c]`` samples, shuffled."""
    protos = 3.0 * torch.randn(len(counts), 1, 8, 8, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)]).long()
    y = y[torch.randperm(len(y), generator=g)]
    return TensorDataset(protos[y] + torch.randn(len(y), 1, 8, 8, generator=g), y)


def _vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(img_size=8, patch_size=4, in_chans=1, embed_dim=16, depth=2, num_heads=2)


def test_fraction_keys():
    assert [finetune_key(f) for f in (0.01, 0.1, 0.5, 1.0)] == ["finetune_1%", "finetune_10%", "finetune_50%",
                                                                 "finetune_100%"]


def test_subset_is_class_balanced_exact_and_seeded(monkeypatch):
    train, test = _images(COUNTS, 0), _images((5, 5, 5), 1)
    labels = train.tensors[1]
    seen = []

    def fake_finetune(enc, subset, test_set, num_classes, **kw):
        seen.append((subset.indices, num_classes, kw["seed"], test_set))
        return type("R", (), {"accuracy": 0.0})()

    monkeypatch.setattr("jepa_eval.finetune.finetune", fake_finetune)
    cfg = EvalConfig(batch_size=16)
    # max(1, round(f * n_c)) per class, halves rounding up: 1 % of (100, 50, 20) = (1, 1, 1)
    for frac, want in ((0.01, {0: 1, 1: 1, 2: 1}), (0.1, {0: 10, 1: 5, 2: 2}), (0.25, {0: 25, 1: 13, 2: 5})):
        _, n = finetune_fraction(None, train, test, labels, frac, 3, cfg, "cpu", seed=7)
        idx, num_classes, seed, test_set = seen[-1]
        assert n == len(idx) == len(set(idx)) == sum(want.values())
        assert {c: int((labels[idx] == c).sum()) for c in range(3)} == want
        assert (num_classes, seed, test_set) == (3, 7, test)  # scored on the whole test split
    a = seen[1][0]
    finetune_fraction(None, train, test, labels, 0.1, 3, cfg, "cpu", seed=7)
    assert seen[-1][0] == a  # same seed, same subset
    finetune_fraction(None, train, test, labels, 0.1, 3, cfg, "cpu", seed=8)
    assert seen[-1][0] != a  # another seed, another subset
    finetune_fraction(None, train, test, labels, 1.0, 3, cfg, "cpu", seed=7)
    assert seen[-1][0] == list(range(len(train)))  # all labels: the whole split, in order


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    cfg = EvalConfig(protocols=("linear", "finetune"), batch_size=16, finetune_epochs=3, finetune_lr=1e-2,
                     finetune_fractions=(0.01, 0.1, 1.0), random_baseline=False, raw_baseline=True)
    res = probe_encoders({"vit": _vit()}, _images((40, 20, 10), 0), _images((10, 10, 10), 1), cfg, seed=0,
                         out_dir=out)
    return res, out


@pytest.mark.slow  # about 20 s of CPU: five fine-tunings, the linear probes and the plots
def test_results_report_each_fraction(run):
    res, out = run
    r = res["results"]["vit"]
    assert (r["finetune_1%_samples"], r["finetune_10%_samples"], r["finetune_100%_samples"]) == (3, 7, 70)
    for k in ("finetune", "finetune_1%", "finetune_10%", "finetune_100%"):
        assert 0.0 <= r[k] <= 100.0
    # 100 % of the labels is the whole split in order: the same run as the plain fine-tuning
    assert r["finetune_100%"] == r["finetune"]
    assert r["finetune"] > 100 / 3  # well-separated prototypes: above chance
    assert not any(k.startswith("finetune") for k in res["results"]["raw pixels"])  # needs an encoder
    saved = json.loads((out / "results.json").read_text())
    assert saved["vit"]["finetune_1%"] == r["finetune_1%"]
    md = (out / "results.md").read_text()
    for col in ("fine-tune (%)", "fine-tune 1 % labels (%)", "fine-tune 10 % labels (%)"):
        assert col in md
    assert "1%: 3, 10%: 7, 100%: 70 samples" in md
    assert (out / "confusion.png").stat().st_size > 0 and (out / "accuracy.png").stat().st_size > 0


def test_markdown_shows_a_dash_where_a_fraction_did_not_run():
    md = markdown_table({"a": {"train_samples": 4, "test_samples": 2, "feature_dim": 3, "finetune_1%": 50.0,
                               "finetune_1%_samples": 2}, "b": {"feature_dim": 3}})
    assert "| a | 50.00 | 3 |" in md and "| b | - | 3 |" in md


def test_fractions_are_validated():
    for bad in ((0.0,), (1.5,), (-0.1, 0.1)):
        with pytest.raises(ConfigError, match="finetune_fractions"):
            validate(from_dict(EvalConfig, {"finetune_fractions": list(bad)}), "eval")
    assert from_dict(EvalConfig, {"finetune_fractions": [0.01, 0.1]}).finetune_fractions == (0.01, 0.1)
    assert EvalConfig().finetune_fractions == ()  # off unless asked: `finetune` runs once, on all labels
    assert pretrain.PROTOCOLS.count("finetune") == 1  # a setting of `finetune`, not a protocol of its own


def test_finetune_keeps_its_test_predictions_for_the_confusion_matrix(tmp_path):
    from jepa_eval.finetune import finetune
    from jepa_eval.report import write_report

    test = _images((3, 4, 5), 1)
    r = finetune(_vit(), _images((4, 4, 4), 0), test, 3, epochs=1, batch_size=8)
    assert torch.equal(r.test_labels, test.tensors[1])  # in the test split's order
    assert r.predictions.shape == (12,) and r.accuracy == 100.0 * (r.predictions == r.test_labels).sum().item() / 12
    # `--protocol finetune` alone (no linear probe): the report's confusion matrix is the fine-tuning's
    extras = {"vit": {"finetune_predictions": r.predictions, "finetune_labels": r.test_labels},
              "raw pixels": {}}
    written = write_report({"vit": {"finetune": r.accuracy}, "raw pixels": {}}, extras, "md", tmp_path)
    assert tmp_path / "confusion.png" in written and tmp_path / "accuracy.png" in written
