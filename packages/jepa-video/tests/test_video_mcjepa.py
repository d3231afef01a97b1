"""`jepa pretrain mcjepa`: the spec and presets, one training step (flow losses on frame pairs,
VICReg on still images, no EMA target), the flow-start gate, the variance-covariance ablation,
and exact resume (the flow evaluator's table: tests/test_integration_evaluators.py)."""

from __future__ import annotations

import math

import pytest
import torch
from jepa_core import registry
from jepa_core.run import pretrain
from jepa_video import mcjepa

TINY = [
    "data.image_size=32", "data.train_clips=8", "data.test_clips=4", "data.num_frames=3", "data.batch_size=4",
    "model.channels=[8,12]", "model.radius=1", "model.hidden=[8]", "model.expander=[16,16]",
    "train.device=cpu", "train.num_threads=1", "train.progress=false",
]


def _cfg(*extra: str):
    return registry.get_method("mcjepa").load_config("demo", overrides=TINY + list(extra))


def _batch(cfg):
    dataset, collate = mcjepa.build_train_data(cfg)
    batch = collate([dataset[i] for i in range(4)])
    return {k: v for k, v in batch.items() if k not in ("labels", "num_bad")}


def test_registered_with_presets():
    spec = registry.get_method("mcjepa")
    assert spec is mcjepa.SPEC and set(spec.preset_paths()) == {"demo", "convnext_t"}
    paper = spec.load_config("convnext_t")
    assert paper.model.encoder == "convnext_t" and paper.loss.flow_start_epoch == 10
    assert paper.model.expander == (8192, 8192, 8192) and paper.loss.content == 0.1
    assert spec.evaluator == "flow"


def test_one_step_trains_every_module_without_a_target():
    cfg = _cfg()
    torch.manual_seed(0)
    model = mcjepa.build_model(cfg)
    assert model.target_modules() == {}
    batch = _batch(cfg)
    assert batch["pairs"].shape == (4, 2, 3, 32, 32) and batch["views"].shape == (4, 2, 3, 32, 32)
    out = model(batch)
    for key in ("regression", "photometric", "smoothness", "cycle", "vc", "content"):
        assert math.isfinite(float(out[key])), key
    assert float(out["photometric"]) > 0  # zero initial flow does not explain moving frames
    out["loss"].backward()
    for name, module in model.trainable_modules().items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters()), name
    flow = model.predict_flow(batch["pairs"][:, 0], batch["pairs"][:, 1])
    assert flow.shape == (4, 2, 32, 32)


def test_flow_losses_wait_for_flow_start_epoch():
    cfg = _cfg("loss.flow_start_epoch=1")
    model = mcjepa.build_model(cfg)
    batch = _batch(cfg)
    assert batch["epoch"] == 0
    out = model(batch)
    assert "regression" not in out
    out["loss"].backward()
    assert all(p.grad is None for p in model.flow_estimator.parameters())


def test_variance_covariance_ablation_removes_the_term():
    cfg = _cfg("loss.variance_covariance=false")
    out = mcjepa.build_model(cfg)(_batch(cfg))
    assert float(out["vc"]) == 0.0
    out_on = mcjepa.build_model(_cfg())(_batch(_cfg()))
    assert float(out_on["vc"]) > 0  # the features start far below unit std


def test_feature_std_of_every_level_is_logged():
    cfg = _cfg()
    torch.manual_seed(0)
    model = mcjepa.build_model(cfg)
    batch = _batch(cfg)
    out = model(batch)
    feats = model.encoder(batch["pairs"][:, 0])
    assert len(feats) == 2
    for i, f in enumerate(feats):
        # per channel over batch and positions, then the channel mean
        want = f.permute(1, 0, 2, 3).reshape(f.shape[1], -1).std(dim=1).mean()
        torch.testing.assert_close(out[f"feature_std_l{i}"], want.detach())
    assert out["feature_std"] is out[f"feature_std_l{len(feats) - 1}"]  # the coarsest, as before
    # constant features (the collapse) read as 0
    const = mcjepa.build_model(cfg)
    for p in const.encoder.parameters():
        torch.nn.init.zeros_(p)
    out = const(batch)
    assert all(float(out[f"feature_std_l{i}"]) == 0.0 for i in range(len(feats)))


@pytest.mark.slow
@pytest.mark.fault
def test_resume_after_a_kill_is_exact(tmp_path):
    """Stopped after step 5 with step 4 the newest checkpoint, resumed to 8: the same weights
    and logged losses as the uninterrupted run (the same pairs, still images and views)."""
    import csv

    args = TINY + ["eval.enabled=false", "train.checkpoint_every=2", "train.log_every=1", "train.seed=3"]
    full = pretrain("mcjepa", overrides=args + ["optim.max_steps=8"], run_dir=tmp_path / "full")
    run = tmp_path / "stopped"
    pretrain("mcjepa", overrides=args + ["optim.max_steps=5"], run_dir=run)
    (run / "checkpoints" / "latest.pt").unlink()
    (run / "checkpoints" / "step-5.pt").unlink()
    resumed = pretrain("mcjepa", overrides=args + ["optim.max_steps=8"], run_dir=run, resume=True)
    assert resumed["steps"] == 8 and resumed["final_loss"] == full["final_loss"]
    load = lambda p: torch.load(p / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)  # noqa: E731
    a, b = load(tmp_path / "full"), load(run)
    assert any(k.startswith("flow_estimator.") for k in a["model"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    rows = [list(csv.DictReader(open(r / "metrics.csv", newline=""))) for r in (tmp_path / "full", run)]
    assert [int(r["step"]) for r in rows[1]] == list(range(1, 9))
    for ra, rb in zip(*rows):
        assert ra["loss"] == rb["loss"] and ra["photometric"] == rb["photometric"], ra["step"]
