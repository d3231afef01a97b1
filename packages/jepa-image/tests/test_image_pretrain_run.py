"""`jepa pretrain ijepa` end to end on the bundled demo data with a tiny model: the run folder,
and exact resume after a kill."""

from __future__ import annotations

import csv
import math

import pytest
import torch
import yaml
from jepa_core.config import ConfigError
from jepa_core.run import pretrain

TINY = [
    "model.encoder=custom", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
    "model.pred_depth=1", "model.pred_emb_dim=16", "model.patch_size=4",
    "data.batch_size=16", "data.num_workers=0", "data.pin_memory=false",
    "train.device=cpu", "train.num_threads=1", "train.progress=false", "eval.enabled=false",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_pretrain_writes_the_run_folder(tmp_path):
    run = tmp_path / "r"
    summary = pretrain(
        "ijepa",
        overrides=TINY + ["optim.max_steps=6", "train.log_every=4", "train.checkpoint_every=2",
                          "train.keep_checkpoints=2"],
        run_dir=run,
    )
    assert summary["steps"] == 6
    assert summary["bad_samples"] == 0
    assert math.isfinite(summary["final_loss"]) and summary["final_loss"] > 0

    # config.yaml: the resolved config, overrides included.
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["method"] == "ijepa" and cfg["preset"] == "demo"
    assert cfg["model"]["embed_dim"] == 32 and cfg["optim"]["max_steps"] == 6
    assert cfg["data"]["dataset"] == "fashion_mnist_demo"

    # metrics.csv: a row every log_every steps, plus the last step.
    rows = _rows(run / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [4, 6]
    assert float(rows[-1]["loss"]) == pytest.approx(summary["final_loss"])
    assert {"loss", "lr", "wd", "momentum", "bad_samples", "context_tokens", "target_tokens"} <= set(rows[0])
    # The schedules run over the full 10 demo epochs, not the 6 steps: still warming up.
    ipe = 12000 // 16
    assert float(rows[0]["epoch"]) == pytest.approx(4 / ipe, abs=1e-4)
    o = cfg["optim"]  # warm-up from start_lr to lr over optim.warmup epochs
    assert float(rows[0]["lr"]) == pytest.approx(
        o["start_lr"] + 4 / (o["warmup"] * ipe) * (o["lr"] - o["start_lr"]), rel=1e-6
    )
    assert float(rows[0]["momentum"]) == pytest.approx(0.996 + 3 * 0.004 / (10 * ipe), rel=1e-9)

    # checkpoints: latest plus the newest keep_checkpoints step files.
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir() if not p.name.startswith("."))
    assert ckpts == ["latest.pt", "step-4.pt", "step-6.pt"]
    latest = _load(run / "checkpoints" / "latest.pt")
    assert latest["step"] == 6
    assert {k.split(".")[0] for k in latest["model"]} == {"encoder", "predictor", "target_encoder"}
    assert latest["model"]["encoder.pos_embed"].shape == (1, 49, 32)
    assert latest["config"]["model"]["embed_dim"] == 32

    # plots and report.
    for name in ("loss.png", "masks.png"):
        data = (run / "plots" / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000, name
    report = (run / "report.md").read_text()
    assert "ijepa" in report and "steps: 6" in report and "corrupt samples skipped: 0" in report

    # A second run into the same folder without --resume refuses to clobber it.
    with pytest.raises(ConfigError, match="resume"):
        pretrain("ijepa", overrides=TINY + ["optim.max_steps=2"], run_dir=run)


def test_training_changes_the_weights_and_ema_follows(tmp_path):
    run = tmp_path / "r"
    pretrain("ijepa", overrides=TINY + ["optim.max_steps=3", "train.checkpoint_every=1", "train.keep_checkpoints=5"], run_dir=run)
    first = _load(run / "checkpoints" / "step-1.pt")["model"]
    last = _load(run / "checkpoints" / "latest.pt")["model"]
    w = "encoder.blocks.0.attn.qkv.weight"
    t = "target_encoder.module.blocks.0.attn.qkv.weight"
    assert not torch.equal(first[w], last[w])
    assert not torch.equal(first[t], last[t])
    # The target moves slowly (momentum ~0.996): it stays much closer to its start than the encoder.
    assert (last[t] - first[t]).norm() < 0.1 * (last[w] - first[w]).norm()
    # The fixed tables never change.
    assert torch.equal(first["encoder.pos_embed"], last["encoder.pos_embed"])


RESUME = TINY + ["train.checkpoint_every=2", "train.log_every=1", "train.seed=3"]


@pytest.mark.parametrize("kill_before_checkpoint", [True, False])
def test_resume_after_a_stop_is_exact(tmp_path, kill_before_checkpoint):
    N = 8
    full = pretrain("ijepa", overrides=RESUME + [f"optim.max_steps={N}"], run_dir=tmp_path / "full")

    run = tmp_path / "stopped"
    # max_steps stops the run early but keeps the schedules of the whole run.
    pretrain("ijepa", overrides=RESUME + ["optim.max_steps=5"], run_dir=run)
    ck = run / "checkpoints"
    assert [int(r["step"]) for r in _rows(run / "metrics.csv")] == [1, 2, 3, 4, 5]
    if kill_before_checkpoint:
        # Simulate a kill after step 5, before its checkpoint was written: the newest checkpoint
        # on disk is step 4, but metrics.csv already holds a row for step 5.
        (ck / "latest.pt").unlink()
        (ck / "step-5.pt").unlink()
        assert _load(ck / "step-4.pt")["step"] == 4
    else:
        assert _load(ck / "latest.pt")["step"] == 5

    resumed = pretrain("ijepa", overrides=RESUME + [f"optim.max_steps={N}"], run_dir=run, resume=True)
    assert resumed["steps"] == N

    a = _load(tmp_path / "full" / "checkpoints" / "latest.pt")
    b = _load(ck / "latest.pt")
    assert a["step"] == b["step"] == N
    assert a["model"].keys() == b["model"].keys()
    for prefix in ("encoder.", "predictor.", "target_encoder."):
        keys = [k for k in a["model"] if k.startswith(prefix)]
        assert keys
        for k in keys:
            assert torch.equal(a["model"][k], b["model"][k]), k
    # Optimizer moments too.
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        assert torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"])
        assert torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"])
    assert resumed["final_loss"] == full["final_loss"]

    # metrics.csv: every step exactly once, and the same numbers as the uninterrupted run.
    rows_b = _rows(run / "metrics.csv")
    rows_a = _rows(tmp_path / "full" / "metrics.csv")
    assert [int(r["step"]) for r in rows_b] == list(range(1, N + 1))
    for ra, rb in zip(rows_a, rows_b):
        for key in ("loss", "lr", "wd", "momentum", "context_tokens", "target_tokens"):
            assert ra[key] == rb[key], (ra["step"], key)


def test_resume_without_checkpoint_starts_from_scratch(tmp_path):
    a = pretrain("ijepa", overrides=TINY + ["optim.max_steps=2"], run_dir=tmp_path / "a")
    b = pretrain("ijepa", overrides=TINY + ["optim.max_steps=2"], run_dir=tmp_path / "b", resume=True)
    assert b["steps"] == 2
    assert a["final_loss"] == b["final_loss"]  # same seed, same run
