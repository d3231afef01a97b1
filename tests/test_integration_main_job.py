"""Cross-package tests: the main job (`jepa pretrain ijepa` with jepa-image and jepa-eval
installed together) and `jepa eval` on its run folder. Run by the `tests-integration` nox
session, which installs every package."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_pretrain_runs_the_probes_at_the_end(tmp_path):
    from jepa_core.run import pretrain

    run = tmp_path / "r"
    overrides = [
        "model.encoder=custom", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
        "model.pred_depth=1", "model.pred_emb_dim=16", "model.patch_size=4",
        "data.batch_size=32", "data.num_workers=0", "data.pin_memory=false",
        "train.device=cpu", "train.num_threads=1", "train.progress=false", "optim.max_steps=3",
        "eval.train_samples=300", "eval.batch_size=500", "eval.knn_k=[5,20]",
    ]
    summary = pretrain("ijepa", overrides=overrides, run_dir=run)
    names = ["pretrained (EMA target)", "random init", "raw pixels"]
    assert list(summary["evaluation"]) == names
    saved = json.loads((run / "eval" / "results.json").read_text())
    assert list(saved) == names
    for name in names:
        r = saved[name]
        assert r["train_samples"] == 300 and r["test_samples"] == 2000
        assert set(r["knn"]) == {"5", "20"}
        # 10 Fashion-MNIST classes: every probe beats chance (10 %) by a margin.
        assert r["linear_probe"] > 25.0, (name, r)
    assert saved["pretrained (EMA target)"]["feature_dim"] == 32
    assert saved["raw pixels"]["feature_dim"] == 784
    report = (run / "report.md").read_text()
    assert "## Evaluation (frozen encoders)" in report
    for name in names:
        assert f"| {name} |" in report


@pytest.mark.slow
def test_jepa_eval_probes_a_finished_run(tmp_path, capsys):
    from jepa_core.cli import main
    from jepa_core.run import pretrain

    run = tmp_path / "r"
    pretrain("ijepa", overrides=[
        "model.encoder=custom", "model.embed_dim=32", "model.depth=1", "model.num_heads=2",
        "model.pred_depth=1", "model.pred_emb_dim=16", "model.patch_size=4", "data.batch_size=32",
        "train.device=cpu", "train.num_threads=1", "train.progress=false", "optim.max_steps=2",
        "eval.enabled=false",
    ], run_dir=run)
    assert not (run / "eval").exists()
    code = main(["eval", str(run), "eval.train_samples=200", "eval.knn_k=[5]", "eval.random_baseline=false"])
    assert code == 0
    out = capsys.readouterr().out
    assert '"step": 2' in out and "| pretrained (EMA target) |" in out
    saved = json.loads((run / "eval" / "results.json").read_text())
    assert list(saved) == ["pretrained (EMA target)", "raw pixels"]
    assert saved["pretrained (EMA target)"]["train_samples"] == 200
    assert saved["pretrained (EMA target)"]["feature_dim"] == 32
    assert set(saved["raw pixels"]["knn"]) == {"5"}
