"""The trainer's policies for non-finite steps, corrupt samples and corrupt checkpoints, its
optional Weights & Biases logging and LR scaling, on a tiny synthetic method (in process)."""

from __future__ import annotations

import csv
import logging
import sys
import types

import pytest
import torch
from jepa_core.checkpoint import load
from jepa_core.config import ConfigError, OptimConfig, TrainConfig, from_dict
from jepa_core.testing import LinearJEPA, PointsDataset, collate_points, nan_at_steps
from jepa_core.trainer import NonFiniteLossError, Trainer


def _fit(tmp_path, name="run", dataset=None, resume=False, callbacks=None, optim=None, nan_steps=(), **train):
    torch.manual_seed(0)
    model = LinearJEPA()
    oc = OptimConfig(**{"epochs": 2, "warmup": 0.5, "start_lr": 0.01, "lr": 0.1, "final_lr": 0.001,
                        "ema": (0.9, 1.0), **(optim or {})})
    tc = TrainConfig(**{"device": "cpu", "progress": False, "log_every": 1, "checkpoint_every": 2,
                        "num_threads": 1, **train})
    tr = Trainer(model, dataset or PointsDataset(), collate_points, oc, tc, tmp_path / name, batch_size=8,
                 callbacks=callbacks, loss_hook=nan_at_steps(*nan_steps) if nan_steps else None)
    return tr, tr.fit(resume=resume)


def _rows(tmp_path, name="run"):
    return list(csv.DictReader(open(tmp_path / name / "metrics.csv", newline="")))


def test_nonfinite_skip_drops_the_update_and_counts_it(tmp_path):
    weights = {}

    def grab(trainer, step, row):
        weights[step] = (trainer.model.encoder.weight.detach().clone(),
                         trainer.model.target_encoder.module.weight.detach().clone())

    tr, res = _fit(tmp_path, nonfinite="skip", nan_steps=(3, 4, 9), callbacks=[grab])
    assert res.steps == 16 and res.skipped_nonfinite == 3
    rows = _rows(tmp_path)
    assert [int(r["skipped_nonfinite"]) for r in rows] == [0, 0, 1, 2, 2, 2, 2, 2, 3] + [3] * 7
    # skipped steps leave encoder and EMA target untouched; the others move them
    for s in (3, 4, 9):
        assert torch.equal(weights[s][0], weights[s - 1][0]) and torch.equal(weights[s][1], weights[s - 1][1])
    assert not torch.equal(weights[5][0], weights[4][0])
    # a skipped step adds nothing to the logged mean (its row has no loss); the others are finite
    assert [r["loss"] for r in rows if r["step"] in ("3", "4", "9")] == ["nan"] * 3
    assert all(float(r["loss"]) > 0 for r in rows if r["step"] not in ("3", "4", "9"))
    ck = load(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert ck["skipped_nonfinite"] == 3 and all(torch.isfinite(v).all() for v in ck["model"].values())


def test_nonfinite_skip_stops_after_too_many_in_a_row(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"at step 5: 3 steps in a row .*max_nonfinite_consecutive=2"):
        _fit(tmp_path, nonfinite="skip", nan_steps=(3, 4, 5, 6), max_nonfinite_consecutive=2)


def test_nonfinite_skip_stops_after_too_many_in_all(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"at step 6: 1 steps in a row and 2 in all .*max_nonfinite=1"):
        _fit(tmp_path, nonfinite="skip", nan_steps=(2, 6), max_nonfinite=1)


def test_nonfinite_stop_is_the_default(tmp_path):
    with pytest.raises(NonFiniteLossError, match="NaN or infinite by step 5"):
        _fit(tmp_path, nan_steps=(5,))
    assert load(tmp_path / "run" / "checkpoints" / "latest.pt")["step"] == 4


def test_corrupt_samples_are_skipped_and_counted_in_metrics(tmp_path):
    _, res = _fit(tmp_path, dataset=PointsDataset(corrupt=range(0, 64, 16)), max_bad_fraction=0.1)
    rows = _rows(tmp_path)
    assert res.bad_samples == 8  # 4 corrupt samples a pass, 2 epochs
    assert int(rows[-1]["bad_samples"]) == 8
    counts = [int(r["bad_samples"]) for r in rows]
    assert counts == sorted(counts) and counts[0] < 8


def test_corrupt_newest_checkpoint_is_skipped_on_resume(tmp_path, caplog):
    ref, _ = _fit(tmp_path, name="ref", optim={"max_steps": 8})
    _fit(tmp_path, optim={"max_steps": 6}, keep_last=3)
    folder = tmp_path / "run" / "checkpoints"
    (folder / "step-6.pt").write_bytes(b"\x00garbage" * 10)  # also latest.pt: the same file
    with caplog.at_level(logging.INFO):
        tr, res = _fit(tmp_path, optim={"max_steps": 8}, keep_last=3, resume=True)
    assert "skipping unreadable checkpoint" in caplog.text and "step-6.pt" in caplog.text
    assert "not a readable checkpoint (truncated, corrupt or not a torch file)" in caplog.text
    assert any("resumed from" in r.getMessage() and "step-4.pt" in r.getMessage() for r in caplog.records)
    assert res.steps == 8
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, tr.model.state_dict()[k]), k
    # keep_last=3: the newest three step files stay, all readable
    assert sorted(int(p.stem.split("-")[1]) for p in folder.glob("step-*.pt")) == [4, 6, 8]
    assert all(load(p)["step"] > 0 for p in folder.glob("step-*.pt") if p.name != "step-6.pt")


def test_wandb_logs_each_row_and_keeps_the_run_id(tmp_path, monkeypatch):
    calls = []

    class Run:
        def log(self, data, step):
            calls.append(("log", step, data))

        def finish(self):
            calls.append(("finish",))

    fake = types.ModuleType("wandb")
    fake.util = types.SimpleNamespace(generate_id=lambda: "abc123")
    fake.init = lambda **kw: calls.append(("init", kw)) or Run()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    _fit(tmp_path, wandb={"project": "jepa-test", "mode": "offline"}, optim={"max_steps": 3})
    init = calls[0][1]
    assert init["project"] == "jepa-test" and init["id"] == "abc123" and init["resume"] == "allow"
    assert init["config"] == {}  # the trainer got no config dict here
    assert [c[1] for c in calls if c[0] == "log"] == [1, 2, 3] and calls[-1] == ("finish",)
    assert {"loss", "lr", "peak_mem_mb", "skipped_nonfinite"} <= set(calls[1][2])
    assert (tmp_path / "run" / "wandb-id.txt").read_text() == "abc123"
    # a resumed run continues the same W&B run
    fake.util.generate_id = lambda: "other"
    calls.clear()
    _fit(tmp_path, wandb=True, optim={"max_steps": 4}, resume=True)
    assert calls[0][1]["id"] == "abc123"


def test_wandb_missing_gives_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match=r"jepa-core\[wandb\]"):
        _fit(tmp_path, wandb=True, optim={"max_steps": 1})


def test_metrics_have_memory_and_step_time(tmp_path):
    _fit(tmp_path, optim={"max_steps": 2})
    row = _rows(tmp_path)[-1]
    assert float(row["peak_mem_mb"]) > 10 and float(row["step_time_s"]) > 0


def test_linear_lr_scaling_uses_the_global_batch(tmp_path):
    tr, _ = _fit(tmp_path, optim={"max_steps": 1, "lr_scale_batch": 4, "grad_accum": 2, "lr_schedule": "constant",
                                  "warmup": 0})
    assert tr.global_batch == 16
    assert tr.lr_schedule.value(5) == pytest.approx(0.1 * 16 / 4)


def test_train_config_new_keys_are_checked():
    tc = from_dict(TrainConfig, {"strategy": "fsdp", "nonfinite": "skip", "wandb": {"project": "p"},
                                 "keep_checkpoints": 4})
    assert tc.strategy == "fsdp" and tc.wandb == {"project": "p"} and tc.keep_last == 4
    with pytest.raises(ConfigError, match=r"'train.strategy' must be one of \['auto', 'ddp', 'fsdp'\]"):
        from_dict(TrainConfig, {"strategy": "horovod"}, "train")
    with pytest.raises(ConfigError, match="valid keys: .*keep_last.*nonfinite"):
        from_dict(TrainConfig, {"keep": 3}, "train")
    # the NaN injection is a test hook (Trainer(loss_hook=...)), not a config key
    with pytest.raises(ConfigError, match=r"unknown config key 'train.inject_nan_steps'.*valid keys: "):
        from_dict(TrainConfig, {"inject_nan_steps": [3]}, "train")


def test_resume_warns_only_when_the_data_order_changes(tmp_path, caplog):
    _fit(tmp_path, optim={"max_steps": 2})
    with caplog.at_level(logging.WARNING):
        _fit(tmp_path, optim={"max_steps": 4}, resume=True)
    assert "data order" not in caplog.text
    torch.manual_seed(0)
    oc = OptimConfig(epochs=2, max_steps=6, grad_accum=2)
    tr = Trainer(LinearJEPA(), PointsDataset(), collate_points, oc, TrainConfig(device="cpu", progress=False), tmp_path / "run",
                 batch_size=8)
    with caplog.at_level(logging.WARNING):
        tr.fit(resume=True)
    assert "8 samples per loader step over all processes and 1 micro-batches per step, this run has 8 and 2" \
        in caplog.text
