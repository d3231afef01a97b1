"""The sample-quality evaluator of jepa-eval on a D-JEPA run of jepa-image (cross-package: the
jepa-eval session has no jepa-image)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_evaluator_on_a_tiny_djepa_run(tmp_path):
    """The whole evaluator after 2 steps of a tiny D-JEPA: the numbers exist, are sane, and the
    classifier is taken from the cache the second time."""
    from jepa_core.run import evaluate_run, pretrain

    run = tmp_path / "run"
    tiny = ["model.embed_dim=16", "model.depth=1", "model.num_heads=2", "model.decoder_embed_dim=16",
            "model.decoder_depth=1", "model.decoder_num_heads=2", "model.head_width=16", "model.head_depth=1",
            "model.sample_steps=4", "data.batch_size=16", "train.device=cpu", "train.progress=false",
            "sample.steps=4", "sample.batch_size=50", "sample_eval.per_class=5", "sample_eval.classifier_epochs=1",
            "sample_eval.probe_samples=500", "optim.max_steps=2"]
    summary = pretrain("djepa", overrides=tiny, run_dir=run)
    r = summary["evaluation"]
    assert r["samples"] == 50 and r["chance"] == 10.0 and not r["classifier_cached"]
    assert 0 <= r["class_accuracy"] <= 100 and r["fd_classifier"] >= 0 and r["fd_classifier_real_floor"] >= 0
    assert r["classifier_test_accuracy"] > 60  # the CNN learned the real data
    assert set(r["linear_probe"]) == {"ema_encoder", "random_init"}
    assert (run / "eval" / "samples.png").is_file() and (run / "report.md").read_text().count("Sample quality")
    again = evaluate_run(run, overrides=["sample_eval.probe=false"])
    assert again["evaluation"]["classifier_cached"]
