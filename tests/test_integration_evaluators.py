"""The method-specific evaluators end to end (every package installed: jepa-eval's `world_model`
and `flow` evaluators on tiny runs of the methods that name them)."""

from __future__ import annotations

import json

import pytest
import torch
from jepa_core import registry
from jepa_core.run import pretrain

IWM_TINY = [
    "model.encoder=custom", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
    "model.pred_depth=1", "model.pred_emb_dim=16", "model.patch_size=4",
    "data.batch_size=16", "data.num_workers=0", "data.pin_memory=false",
    "train.device=cpu", "train.num_threads=1", "train.progress=false",
]
MC_TINY = [
    "data.image_size=32", "data.train_clips=8", "data.test_clips=4", "data.num_frames=3", "data.batch_size=4",
    "model.channels=[8,12]", "model.radius=1", "model.hidden=[8]", "model.expander=[16,16]",
    "train.device=cpu", "train.num_threads=1", "train.progress=false",
]


@pytest.mark.slow
def test_pretrain_ends_with_the_world_model_table(tmp_path):
    """The `world_model` evaluator after a tiny run: probes, MRR rows (pretrained, random init,
    chance) and predictor fine-tuning (pretrained and re-initialised predictor)."""
    run = tmp_path / "wm"
    overrides = [o for o in IWM_TINY if o != "eval.enabled=false"] + [
        "optim.max_steps=3", "eval.train_samples=200", "eval.protocols=[linear]", "eval.monitor_every=0",
        "world_model_eval.mrr_images=8", "world_model_eval.mrr_candidates=6", "world_model_eval.finetune_epochs=1",
        "world_model_eval.predictor_finetune=true", "world_model_eval.finetune_batch_size=64"]
    pretrain("iwm", overrides=overrides, run_dir=run)
    results = json.loads((run / "eval" / "results.json").read_text())
    rows = results["world_model"]["rows"]
    assert rows["chance (action ignored)"]["mrr"] == pytest.approx(sum(1 / k for k in range(1, 7)) / 6, abs=1e-4)
    assert 0 < rows["random init"]["mrr"] <= 1
    pre = next(v for k, v in rows.items() if k.startswith("pretrained ("))
    assert 0 < pre["mrr"] <= 1 and 0 <= pre["predictor_finetune"] <= 100
    assert "predictor_finetune" in rows["pretrained encoder, re-initialised predictor"]
    assert "linear_probe" in results["pretrained (EMA target)"]


@pytest.mark.slow
def test_pretrain_ends_with_the_flow_table(tmp_path):
    """The `flow` evaluator after a tiny MC-JEPA run: probes, then the flow rows with baselines."""
    run = tmp_path / "mc"
    pretrain("mcjepa", overrides=MC_TINY + ["optim.max_steps=2", "eval.protocols=[linear,flow]",
                                         "eval.monitor_every=0"], run_dir=run)
    results = json.loads((run / "eval" / "results.json").read_text())
    rows = results["flow"]["rows"]
    assert set(rows) == {"pretrained", "random init", "zero flow", "mean flow (training pairs)"}
    # known answer: zero flow's EPE is the mean length of the true flow over the evaluated pairs
    spec = registry.get_method("mcjepa")
    pairs = spec.extra["flow_eval_data"](spec.load_config("demo", overrides=MC_TINY))
    lengths = torch.cat([pairs[i][2].norm(dim=0).flatten() for i in range(len(pairs))])
    assert rows["zero flow"]["epe"] == pytest.approx(float(lengths.mean()), abs=1e-3)
    assert "linear_probe" in results["pretrained"]
    assert (run / "eval" / "flow.png").exists()
