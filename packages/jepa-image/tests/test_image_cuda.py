"""I-JEPA on CUDA (``-m gpu``; skipped without a GPU): the same loss as on the CPU for the same
weights and batch, bf16 close to fp32, and a short demo pretraining run with its evaluation."""

from __future__ import annotations

import copy

import pytest
import torch
from jepa_core.run import pretrain
from jepa_image.ijepa import SPEC, build_model, build_train_data

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
CUDA = torch.device("cuda")


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else [m.to(device) for m in v] if isinstance(v, list) else v
            for k, v in batch.items()}


def test_ijepa_loss_on_cuda_matches_cpu_and_bf16_is_close():
    torch.backends.cudnn.allow_tf32 = False  # exact fp32 for the comparison
    try:
        cfg = SPEC.load_config("demo", overrides=["mask.num_enc_masks=2"])
        torch.manual_seed(0)
        model = build_model(cfg)
        dataset, collate = build_train_data(cfg)
        batch = collate([dataset[i] for i in range(32)])
        with torch.no_grad():
            ref = model(batch)["loss"]
            gpu = copy.deepcopy(model).to(CUDA)
            out = gpu(_to(batch, CUDA))["loss"]
            torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-6)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                half = gpu(_to(batch, CUDA))["loss"].float().cpu()
        assert abs(half - ref) < 0.03 * ref, (float(half), float(ref))
    finally:
        torch.backends.cudnn.allow_tf32 = True


@pytest.mark.slow
def test_demo_pretraining_on_cuda_runs_and_evaluates(tmp_path):
    summary = pretrain("ijepa", "demo", overrides=["train.device=cuda", "optim.max_steps=150",
                                                   "train.progress=false", "data.num_workers=2"],
                       run_dir=tmp_path / "run")
    assert summary["steps"] == 150 and summary["final_loss"] == summary["final_loss"]  # not NaN
    ev = summary["evaluation"]
    ours, raw = ev["pretrained (EMA target)"]["linear_probe"], ev["raw pixels"]["linear_probe"]
    assert ours > 30 and raw > 30, ev  # percent; ten classes, chance is 10
    assert (tmp_path / "run" / "report.md").is_file()
