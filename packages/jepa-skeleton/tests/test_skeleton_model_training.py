"""`jepa pretrain sjepa` end to end on tiny synthetic data: exact resume after a kill (the same
masks and views are drawn), two processes under torchrun training like one process on the same
global batch (centre included), the bench cases."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from jepa_core.data import StampedDataset
from jepa_core.run import pretrain
from jepa_core.testing import run_pretrain
from jepa_skeleton import sjepa

TINY = [
    "data.dataset=synthetic", "data.synthetic_train=64", "data.synthetic_test=16", "data.synthetic_frames=16",
    "data.window=16", "data.min_crop=8", "model.embed_dim=32", "model.depth=1", "model.num_heads=2",
    "model.pred_dim=32", "model.pred_depth=1", "model.pred_num_heads=2", "data.num_workers=0",
    "data.pin_memory=false", "train.num_threads=1", "train.progress=false", "train.log_every=1",
    "eval.enabled=false", "train.device=cpu", "optim.warmup=0",
]
RESUME = TINY + ["data.batch_size=8", "train.checkpoint_every=2", "train.seed=3"]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_collated_masks_and_views_are_a_function_of_seed_and_step():
    cfg = sjepa.SPEC.load_config("demo", overrides=TINY)
    dataset, collate = sjepa.build_train_data(cfg)
    stamped = StampedDataset(dataset, seed=cfg.train.seed)
    a = collate([stamped[(i, 7, i)] for i in range(4)])
    b = collate([stamped[(i, 7, i)] for i in range(4)])
    c = collate([stamped[(i, 8, i)] for i in range(4)])
    for key in ("skeletons", "gumbel", "rotation", "drop_axis"):
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["gumbel"], c["gumbel"]) and not torch.equal(a["rotation"], c["rotation"])
    # a process of a 2-process run holding slots 1 and 3 gets those rows of the same draw
    two = sjepa.train_collate(cfg, rank=1, world_size=2)
    d = two([stamped[(i, 7, i)] for i in (1, 3)])
    for key in ("gumbel", "rotation", "drop_axis"):
        assert torch.equal(d[key], a[key][[1, 3]]), key


@pytest.mark.slow
@pytest.mark.fault
def test_resume_after_a_kill_is_exact(tmp_path):
    """Stopped after step 5 with step 4 the newest checkpoint (a kill before the step-5 save),
    resumed to 8: the same weights, centre, optimizer moments and logged losses as the
    uninterrupted run, so the same masks and views were drawn after the resume."""
    n = 8
    full = pretrain("sjepa", overrides=RESUME + [f"optim.max_steps={n}"], run_dir=tmp_path / "full")
    run = tmp_path / "stopped"
    pretrain("sjepa", overrides=RESUME + ["optim.max_steps=5"], run_dir=run)
    ck = run / "checkpoints"
    (ck / "latest.pt").unlink()
    (ck / "step-5.pt").unlink()
    resumed = pretrain("sjepa", overrides=RESUME + [f"optim.max_steps={n}"], run_dir=run, resume=True)
    assert resumed["steps"] == n and resumed["final_loss"] == full["final_loss"]
    a, b = _load(tmp_path / "full" / "checkpoints" / "latest.pt"), _load(ck / "latest.pt")
    assert float(a["model"]["criterion.center"].abs().sum()) > 0
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    for i in sa:
        assert torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"])
    rows_a, rows_b = _rows(tmp_path / "full" / "metrics.csv"), _rows(run / "metrics.csv")
    assert [int(r["step"]) for r in rows_b] == list(range(1, n + 1))
    for ra, rb in zip(rows_a, rows_b):
        assert ra["loss"] == rb["loss"] and ra["target_entropy"] == rb["target_entropy"], ra["step"]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_train_like_one_process(tmp_path):
    """2 processes x 4 sequences under DDP against 1 process x 8: the same losses, weights and
    centre (its batch mean is all-reduced), up to float summation order."""
    one, two = tmp_path / "one", tmp_path / "two"
    args = TINY + ["optim.max_steps=3"]
    run_pretrain("sjepa", [*args, "data.batch_size=8"], one, 0, timeout=120)
    run_pretrain("sjepa", [*args, "data.batch_size=4"], two, 2, timeout=120)
    a, b = _load(one / "checkpoints" / "latest.pt"), _load(two / "checkpoints" / "latest.pt")
    assert a["step"] == b["step"] == 3 and a["model"].keys() == b["model"].keys()
    center_a, center_b = a["model"]["criterion.center"], b["model"]["criterion.center"]
    assert float(center_a.abs().sum()) > 0 and torch.allclose(center_a, center_b, atol=1e-5)
    diff = max(float((a["model"][k].float() - b["model"][k].float()).abs().max()) for k in a["model"])
    assert diff < 1e-5, diff
    for ra, rb in zip(_rows(one / "metrics.csv"), _rows(two / "metrics.csv")):
        assert float(ra["loss"]) == pytest.approx(float(rb["loss"]), rel=1e-5)


@pytest.mark.slow
def test_demo_preset_trains(tmp_path):
    """A dozen steps of the real demo preset: the loss falls and stays finite."""
    run = tmp_path / "demo"
    pretrain("sjepa", overrides=["optim.max_steps=12", "train.log_every=4", "eval.enabled=false",
                                 "train.progress=false", "train.device=cpu", "data.synthetic_train=400"],
             run_dir=run)
    losses = [float(r["loss"]) for r in _rows(run / "metrics.csv")]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


def test_bench_cases_are_registered_and_run():
    from jepa_core import benchmark as bm
    from jepa_skeleton import bench

    assert {c.name for c in bench.CASES} >= {"masks", "steps"}
    ctx = bm.Context(repeats=1, warmup=0, log=lambda s: None)
    rows = bench.case_masks(ctx)
    assert rows and all(r.ours > 0 for r in rows)
