"""`jepa pretrain --launcher local`: the real pretrain job through submitit's LocalExecutor (the
code path of --launcher slurm, on this machine), two tasks forming a DDP group."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("submitit")

TINY = [
    "model.encoder=custom", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
    "model.pred_depth=1", "model.pred_emb_dim=16", "model.patch_size=4",
    "data.batch_size=16", "data.num_workers=0", "data.pin_memory=false",
    "train.num_threads=1", "train.progress=false", "train.log_every=1", "optim.max_steps=3",
    "eval.enabled=false", "train.device=cpu",
]


@pytest.mark.slow
@pytest.mark.distributed
def test_pretrain_with_the_local_launcher(tmp_path, capsys):
    from jepa_core import checkpoint as ckpt
    from jepa_core.cli import main

    run = tmp_path / "run"
    argv = ["pretrain", "ijepa", *TINY, "--run-dir", str(run), "--launcher", "local", "--gpus-per-node", "0",
            "--tasks-per-node", "2", "--time", "10", "--wait"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "submitted job" in out
    summary = json.loads(out[out.index("{"):])
    assert summary["steps"] == 3 and summary["world_size"] == 2 and summary["strategy"] == "ddp"
    assert ckpt.load(run / "checkpoints" / "latest.pt")["step"] == 3
    assert (run / "submitit").is_dir() and (run / "report.md").is_file()
