"""V-JEPA under ``torchrun`` (CPU, gloo): 2 processes x B clips train exactly like 1 process x 2B
(issue #13 item 6: clips, crops and masks are keyed by seed, step, sample and global slot)."""

from __future__ import annotations

import pytest
import torch
from jepa_core.testing import run_pretrain

TINY = [
    "data.frames_per_clip=4", "data.crop_size=32", "data.num_workers=0", "data.demo_clips=16",
    "data.demo_eval_clips=8", "model.encoder=custom", "model.embed_dim=24", "model.depth=2", "model.num_heads=2",
    "model.patch_size=8", "model.pred_depth=1", "model.pred_emb_dim=12", "model.pred_num_heads=2",
    "optim.max_steps=4", "train.device=cpu", "train.progress=false", "train.log_every=1", "train.num_threads=1",
    "eval.enabled=false",
]


def _run(nproc: int, run_dir, demo_root, batch: int) -> None:
    run_pretrain("vjepa", [*TINY, f"data.root={demo_root}", f"data.batch_size={batch}"], run_dir, nproc=nproc)


def _model(run_dir) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == 4
    return ckpt["model"]


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.fault
def test_two_processes_train_like_one_process_with_the_global_batch(tmp_path):
    demo = tmp_path / "demo"
    _run(0, tmp_path / "one", demo, 4)  # also writes the demo clips both runs read
    _run(2, tmp_path / "two", demo, 2)
    one, two = _model(tmp_path / "one"), _model(tmp_path / "two")
    assert one.keys() == two.keys() and any(k.startswith("target_encoder.") for k in one)
    diff = max((one[k].float() - two[k].float()).abs().max().item() for k in one)
    assert diff < 1e-6, diff  # float summation order only
