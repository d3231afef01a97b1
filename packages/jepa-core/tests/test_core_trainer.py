"""Trainer behaviour on a tiny synthetic method: schedules applied per step, gradient
accumulation equivalence, the NaN guard, checkpoint contents, EMA updates."""

from __future__ import annotations

import csv

import pytest
import torch
from jepa_core.checkpoint import load
from jepa_core.config import OptimConfig, TrainConfig
from jepa_core.testing import LinearJEPA, PointsDataset, collate_points
from jepa_core.trainer import NonFiniteLossError, Trainer


def _trainer(tmp_path, model, **optim):
    oc = OptimConfig(epochs=2, warmup=0.5, start_lr=0.01, lr=0.1, final_lr=0.001, weight_decay=0.04,
                     final_weight_decay=0.4, ema=(0.9, 1.0), **optim)
    tc = TrainConfig(device="cpu", progress=False, log_every=1, checkpoint_every=3, num_threads=1)
    return Trainer(model, PointsDataset(), collate_points, oc, tc, tmp_path / "run", batch_size=8)


def test_schedules_are_applied_each_step_and_logged(tmp_path):
    torch.manual_seed(0)
    tr = _trainer(tmp_path, LinearJEPA())
    res = tr.fit()
    assert tr.ipe == 8 and res.steps == 16  # 64 samples / 8 per batch, 2 epochs
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 17))
    for r in rows:
        step = int(r["step"]) - 1  # the row of step s logs the values used for update s
        assert float(r["lr"]) == pytest.approx(tr.lr_schedule.value(step))
        assert float(r["wd"]) == pytest.approx(tr.wd_schedule.value(step))
        assert float(r["momentum"]) == pytest.approx(0.9 + step * 0.1 / 16)
    # the decayed group got the scheduled weight decay, the no-decay group none
    groups = {g["name"]: g for g in tr.optimizer.param_groups}
    assert groups["encoder.decay"]["weight_decay"] == pytest.approx(tr.wd_schedule.value(15))
    assert groups["encoder.no_decay"]["weight_decay"] == 0.0


def test_checkpoint_holds_everything_needed_to_resume(tmp_path):
    torch.manual_seed(0)
    tr = _trainer(tmp_path, LinearJEPA())
    tr.fit()
    ck = load(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert ck["step"] == 16 and ck["batches_consumed"] == 16 and ck["samples_seen"] == 128
    assert set(ck["rng"]) >= {"torch", "python"}
    assert {k.split(".")[0] for k in ck["model"]} == {"encoder", "predictor", "target_encoder"}
    assert len(ck["optimizer"]["state"]) == 4  # two weights and two biases have Adam moments
    # keep_checkpoints=2: only the two newest step files stay
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*.pt"))
    assert names == ["step-15.pt", "step-16.pt"]


def test_target_follows_the_encoder_by_ema(tmp_path):
    torch.manual_seed(0)
    model = LinearJEPA()
    tr = _trainer(tmp_path, model)
    tr.fit()
    # The target moved away from its initial copy towards the encoder but is not equal to it.
    assert not torch.equal(model.target_encoder.module.weight, model.encoder.weight)
    assert all(not p.requires_grad for p in model.target_encoder.parameters())


def test_gradient_accumulation_matches_the_larger_batch(tmp_path):
    torch.manual_seed(0)
    a = LinearJEPA()
    b = LinearJEPA()
    b.load_state_dict(a.state_dict())
    ta = _trainer(tmp_path / "a", a)
    oc = ta.optim_cfg
    ta.batch_size = 16
    tb = _trainer(tmp_path / "b", b, grad_accum=2)
    tb.batch_size = 8
    ta.fit()
    tb.fit()
    # The epoch permutation does not depend on the batch size, so the two micro-batches of 8
    # hold exactly the samples of the batch of 16: the same gradients, the same weights.
    assert ta.ipe == tb.ipe == 4 and ta.total_steps == tb.total_steps == int(oc.epochs * 4)
    assert tb.state.batches_consumed == 2 * ta.state.batches_consumed
    assert tb.state.samples_seen == ta.state.samples_seen
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k], atol=1e-6, rtol=1e-5)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = LinearJEPA(nan_at_call=5)  # steps 1-4 fine, step 5 onwards NaN
    tr = _trainer(tmp_path, model)
    with pytest.raises(NonFiniteLossError, match="NaN or infinite by step 5") as err:
        tr.fit()
    assert "latest.pt" in str(err.value)
    ck = load(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert ck["step"] == 3  # checkpoint_every=3: the last one before the NaN
    assert all(torch.isfinite(v).all() for v in ck["model"].values())


def test_linear_lr_schedule_is_wired(tmp_path):
    torch.manual_seed(0)
    tr = _trainer(tmp_path, LinearJEPA(), lr_schedule="linear")
    tr.fit()
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    # 0.1 -> 0.001 linearly over 16 steps, no warm-up
    for r in rows:
        s = int(r["step"])
        assert float(r["lr"]) == pytest.approx(0.1 + s / 16 * (0.001 - 0.1))
