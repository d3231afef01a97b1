"""`jepa pretrain iwm` under torchrun on CPU (gloo): 2 processes x 8 images train like 1 process x
16 images. The paired views, their actions and the masks are drawn for the global batch, so both
runs see the same views and actions, and the conditioned predictor's gradients are all-reduced."""

from __future__ import annotations

import csv

import pytest
import torch
from jepa_core.testing import run_pretrain

TINY = [
    "model.encoder=custom", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
    "model.pred_depth=1", "model.pred_emb_dim=16", "model.patch_size=4",
    "data.num_workers=0", "data.pin_memory=false", "train.num_threads=1", "train.progress=false",
    "train.log_every=1", "optim.max_steps=4", "eval.enabled=false", "train.device=cpu",
]


def _run(nproc: int, run_dir, batch: int, *extra: str) -> None:
    run_pretrain("iwm", [*TINY, f"data.batch_size={batch}", *extra], run_dir, nproc)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("conditioning", ["feature", "sequence"])
def test_two_processes_train_like_one_process(tmp_path, conditioning):
    one, two = tmp_path / "one", tmp_path / "two"
    _run(0, one, 16, f"model.conditioning={conditioning}")
    _run(2, two, 8, f"model.conditioning={conditioning}", "train.strategy=ddp")
    a = torch.load(one / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    b = torch.load(two / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert a["step"] == b["step"] == 4 and a["model"].keys() == b["model"].keys()
    assert any(".condition_mlp." in k or ".action_weight" in k for k in a["model"])
    diff = max(float((a["model"][k].float() - b["model"][k].float()).abs().max()) for k in a["model"])
    assert diff < 1e-6, diff  # float summation order only
    rows = [list(csv.DictReader(open(r / "metrics.csv", newline=""))) for r in (one, two)]
    assert [int(r["step"]) for r in rows[1]] == [1, 2, 3, 4]
    for ra, rb in zip(*rows):
        assert float(ra["loss"]) == pytest.approx(float(rb["loss"]), rel=1e-5)


@pytest.mark.slow
@pytest.mark.distributed
def test_process_scope_draws_other_views(tmp_path):
    """train.draw_scope=process (each process draws its own views, as the official collators draw
    masks): the runs differ, so the equality above is not an accident of the data."""
    one, two = tmp_path / "one", tmp_path / "two"
    _run(0, one, 16)
    _run(2, two, 8, "train.strategy=ddp", "train.draw_scope=process")
    rows = [list(csv.DictReader(open(r / "metrics.csv", newline=""))) for r in (one, two)]
    assert float(rows[0][0]["loss"]) != pytest.approx(float(rows[1][0]["loss"]), rel=1e-5)
