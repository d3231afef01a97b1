"""`jepa pretrain dmtjepa` under torchrun on CPU (gloo): 2 processes x 8 images train like 1 process
x 16 images, heads and their EMA twins included, under DDP and FSDP2 (the online head is a
trainable module, so its gradients are all-reduced; the target head follows by EMA)."""

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
    run_pretrain("dmtjepa", [*TINY, f"data.batch_size={batch}", *extra], run_dir, nproc)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_train_like_one_process_heads_included(tmp_path, strategy):
    """DDP wraps the online head with the encoder and predictor; FSDP2 shards each head block
    (both modes of a block go through its ``forward``, so the block's parameters are gathered)."""
    one, two = tmp_path / "one", tmp_path / "two"
    _run(0, one, 16)
    _run(2, two, 8, f"train.strategy={strategy}")
    a = torch.load(one / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    b = torch.load(two / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert a["step"] == b["step"] == 4 and a["model"].keys() == b["model"].keys()
    heads = [k for k in a["model"] if k.startswith(("head.", "target_head."))]
    assert any(k.startswith("target_head.") for k in heads) and any(k.startswith("head.") for k in heads)
    diff = max(float((a["model"][k].float() - b["model"][k].float()).abs().max()) for k in a["model"])
    assert diff < 1e-6, diff  # float summation order only
    rows = [list(csv.DictReader(open(r / "metrics.csv", newline=""))) for r in (one, two)]
    assert [int(r["step"]) for r in rows[1]] == [1, 2, 3, 4]
    for ra, rb in zip(*rows):
        assert float(ra["loss"]) == pytest.approx(float(rb["loss"]), rel=1e-5)
        # target_std is each process's batch statistic (8 images), averaged over the processes:
        # close to, not equal to, the statistic of the 16 images of one process
        assert float(rb["target_std"]) == pytest.approx(float(ra["target_std"]), rel=0.1)
        assert float(rb["target_std"]) != float(ra["target_std"])
