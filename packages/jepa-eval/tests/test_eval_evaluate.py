"""probe_encoders (the protocols of the `probes` evaluator, evaluate_encoders) on a tiny dataset, and
after `jepa pretrain`."""

from __future__ import annotations

import pytest
import torch
from jepa_core import registry
from jepa_core.config import EvalConfig
from jepa_core.nn import VisionTransformer
from jepa_eval.pretrain import evaluate_encoders, markdown_table, probe_encoders
from torch.utils.data import TensorDataset

C = 4


def _tiny_images(n_per_class: int, seed: int):
    """C noisy copies of C fixed 8x8 prototypes: an easy, labeled image set."""
    protos = torch.rand(C, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(C).repeat(n_per_class)
    x = protos[y] + 0.1 * torch.randn(len(y), 1, 8, 8, generator=g)
    return TensorDataset(x, y)


class RowTokens(torch.nn.Module):
    """8x8 image -> 8 tokens of 8 (its rows), through a fixed linear map."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x):
        return self.lin(x[:, 0])


def _encoders():
    torch.manual_seed(0)
    return {
        "tiny vit": VisionTransformer(img_size=8, patch_size=4, in_chans=1, embed_dim=16, depth=1, num_heads=2),
        "row tokens": RowTokens(),
    }


CFG = EvalConfig(batch_size=32, knn_k=(1, 5), random_baseline=False, raw_baseline=True)


@pytest.fixture(scope="module")
def two_runs():
    train, test = _tiny_images(20, seed=1), _tiny_images(10, seed=2)
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        a = probe_encoders(_encoders(), train, test, CFG, seed=0)
        b = probe_encoders(_encoders(), train, test, CFG, seed=0)
    return a, b


def test_results_have_the_expected_keys(two_runs):
    out, _ = two_runs
    assert set(out) == {"results", "markdown"}
    res = out["results"]
    assert list(res) == ["tiny vit", "row tokens", "raw pixels"]
    for name, r in res.items():
        assert set(r) == {
            "linear_probe", "linear_probe_val", "linear_probe_l2", "knn", "feature_dim",
            "feature_std_mean", "train_samples", "test_samples", "seconds",
        }, name
        assert set(r["knn"]) == {"1", "5"}
        assert 0.0 <= r["linear_probe"] <= 100.0
        assert r["train_samples"] == 80 and r["test_samples"] == 40
        assert r["feature_std_mean"] > 0
    assert res["tiny vit"]["feature_dim"] == 16  # mean-pooled [B, 4, 16]
    assert res["row tokens"]["feature_dim"] == 8
    assert res["raw pixels"]["feature_dim"] == 64  # flattened 1x8x8
    # The classes are easy: the raw pixels separate them perfectly.
    assert res["raw pixels"]["linear_probe"] == 100.0
    assert res["raw pixels"]["knn"]["1"] == 100.0


def test_markdown_table_lists_every_encoder(two_runs):
    out, _ = two_runs
    md = out["markdown"]
    lines = md.splitlines()
    assert lines[0].startswith("| encoder | linear probe (%) |") and "k-NN k=1" in lines[0] and "k-NN k=5" in lines[0]
    for name, r in out["results"].items():
        row = next(line for line in lines if line.startswith(f"| {name} |"))
        assert f"{r['linear_probe']:.2f}" in row and f"| {r['feature_dim']} |" in row
    assert "80 training samples" in md and "40 held-out samples" in md


def test_evaluation_is_reproducible(two_runs):
    a, b = two_runs
    strip = lambda res: {n: {k: v for k, v in r.items() if k != "seconds"} for n, r in res.items()}  # noqa: E731
    assert strip(a["results"]) == strip(b["results"])
    assert a["markdown"] == b["markdown"]


def test_train_samples_cap_and_no_raw_baseline():
    train, test = _tiny_images(20, seed=1), _tiny_images(10, seed=2)
    cfg = EvalConfig(batch_size=16, knn_k=(3,), train_samples=40, random_baseline=False, raw_baseline=False)
    out = probe_encoders({"row tokens": RowTokens()}, train, test, cfg)
    assert list(out["results"]) == ["row tokens"]
    r = out["results"]["row tokens"]
    assert r["train_samples"] == 40 and r["test_samples"] == 40
    assert "raw pixels" not in out["markdown"]


def test_markdown_table_of_nothing():
    assert markdown_table({}).startswith("| encoder |")


def test_probes_evaluator_is_registered():
    assert "probes" in registry.evaluators()
    assert registry.get_evaluator("probes") is evaluate_encoders


def test_jepa_eval_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    from jepa_core.cli import main

    assert main(["eval", str(tmp_path)]) == 2
    assert "neither a run folder (no config.yaml or checkpoints/ in it) nor a checkpoint file" in capsys.readouterr().err


def test_attentive_protocol_extracts_each_split_once_and_pools_the_same_tokens():
    from jepa_core.config import EvalConfig

    enc = _encoders()["tiny vit"]
    train, test = _tiny_images(20, seed=1), _tiny_images(10, seed=2)
    calls = []

    class Counting(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.num_heads = inner, inner.num_heads

        def forward(self, x):
            calls.append(len(x))
            return self.inner(x)

    cfg = EvalConfig(protocols=("linear", "attentive"), raw_baseline=False, knn_k=(1,), batch_size=64,
                     attentive_epochs=1, attentive_lrs=(1e-3,), attentive_wds=(0.01,), attentive_depth=1)
    with_att = probe_encoders({"e": Counting(enc)}, train, test, cfg)
    assert sum(calls) == len(train) + len(test)  # one forward pass per sample
    cfg_lin = EvalConfig(protocols=("linear",), raw_baseline=False, batch_size=64)
    lin_only = probe_encoders({"e": enc}, train, test, cfg_lin)
    # mean of the cached tokens = the features the linear probe sees without the cache
    assert with_att["results"]["e"]["linear_probe"] == lin_only["results"]["e"]["linear_probe"]
    assert "attentive_probe" in with_att["results"]["e"]


def test_tasks_probe_each_labeling_of_one_feature_pass(tmp_path):
    """Two labelings of the same samples: identity (equal to no tasks) and label // 2 (2 classes);
    the encoder runs once; each task has its own results and files."""
    train, test = _tiny_images(20, seed=1), _tiny_images(10, seed=2)
    calls = []

    class Counting(RowTokens):
        def forward(self, x):
            calls.append(len(x))
            return super().forward(x)

    cfg = EvalConfig(batch_size=32, knn_k=(1,), random_baseline=False, raw_baseline=False, plots=False,
                     protocols=("linear", "knn", "attentive"), attentive_epochs=1, attentive_lrs=(1e-3,),
                     attentive_wds=(0.01,), attentive_depth=1)
    torch.manual_seed(0)
    enc = Counting()
    plain = probe_encoders({"e": enc}, train, test, cfg)
    calls.clear()
    out = probe_encoders({"e": enc}, train, test, cfg, out_dir=tmp_path,
                            tasks={"same": lambda y: y, "pairs": lambda y: y // 2})
    assert sum(calls) == len(train) + len(test)  # one pass over each split for both tasks
    assert list(out["results"]) == ["same", "pairs"]
    same, pairs = out["results"]["same"]["e"], out["results"]["pairs"]["e"]
    for key in ("linear_probe", "knn", "attentive_probe"):
        assert same[key] == plain["results"]["e"][key]
    assert pairs["linear_probe"] > 75.0  # 2 classes (chance 50 %) of an easy set: the relabeling is used
    assert "### same" in out["markdown"] and "### pairs" in out["markdown"]
    for sub in ("same", "pairs"):
        assert (tmp_path / sub / "results.json").is_file()
    assert (tmp_path / "results.json").is_file()


def test_attentive_form_is_checked_by_the_probes_evaluator():
    from types import SimpleNamespace

    from jepa_core.config import ConfigError

    train, test = _tiny_images(2, seed=1), _tiny_images(2, seed=2)
    bad = EvalConfig(protocols=("linear",), attentive_form="vjepa3")
    with pytest.raises(ConfigError, match=r"eval.attentive_form must be one of vjepa, vjepa2 .*'vjepa3'"):
        probe_encoders({"row tokens": RowTokens()}, train, test, bad)
    # `jepa pretrain` checks it before training through the evaluator's check_config
    with pytest.raises(ConfigError, match="attentive_form"):
        evaluate_encoders.check_config(SimpleNamespace(eval=bad))
    evaluate_encoders.check_config(SimpleNamespace(eval=EvalConfig(attentive_form="vjepa")))


def test_empty_tasks_mean_one_untitled_table(tmp_path):
    """``tasks={}`` is "no tasks", as ``None``: one untitled table and the files in out_dir
    itself (it used to write a "### None" section and fail on the task's folder name)."""
    train, test = _tiny_images(20, seed=1), _tiny_images(10, seed=2)
    cfg = EvalConfig(batch_size=16, knn_k=(3,), random_baseline=False, raw_baseline=False)
    none = probe_encoders({"row tokens": RowTokens()}, train, test, cfg, out_dir=tmp_path / "a")
    empty = probe_encoders({"row tokens": RowTokens()}, train, test, cfg, tasks={}, out_dir=tmp_path / "b")
    assert "None" not in empty["markdown"] and empty["markdown"] == none["markdown"]
    assert (tmp_path / "b" / "results.json").is_file() and not (tmp_path / "b" / "none").exists()


def test_last_layers_are_recorded_and_named_in_the_table():
    # Regression: the table's caption said "last-layer features" when the last k were probed.
    from jepa_core.nn.vit import VisionTransformer

    train, test = _tiny_images(20, seed=1), _tiny_images(10, seed=2)
    x0 = train[0][0]
    enc = VisionTransformer(img_size=x0.shape[-1], patch_size=4, in_chans=x0.shape[0], embed_dim=8, depth=3,
                            num_heads=2)
    cfg = EvalConfig(batch_size=16, knn_k=(3,), last_layers=2, random_baseline=False)
    out = probe_encoders({"vit": enc}, train, test, cfg)
    assert out["results"]["vit"]["last_layers"] == 2 and out["results"]["vit"]["feature_dim"] == 16
    assert "last_layers" not in out["results"]["raw pixels"]
    assert "each of the last 2 layers, concatenated" in out["markdown"]
    plain = probe_encoders({"vit": enc}, train, test, EvalConfig(batch_size=16, knn_k=(3,), random_baseline=False))
    assert "last_layers" not in plain["results"]["vit"] and "mean-pooled last-layer features" in plain["markdown"]
