"""V-JEPA and V-JEPA 2 on CUDA (``-m gpu``; skipped without a GPU): the same loss as on the CPU
for the same weights and batch, the packed context (one encoder pass for all mask
configurations, attention per configuration) equal to one pass per configuration on CUDA's
attention kernels, bf16 close to fp32, and a training step that learns."""

from __future__ import annotations

import copy

import pytest
import torch
from jepa_core.testing import no_tf32
from jepa_video.masks import MultiBlock3DMaskCollator
from jepa_video.vjepa import VJEPA2_SPEC, VJEPA_SPEC

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
CUDA = torch.device("cuda")
SPECS = {"vjepa": VJEPA_SPEC, "vjepa2": VJEPA2_SPEC}
# 8 frames at 64 px, tubelet 2 x 16 x 16: a 4 x 4 x 4 token grid; head_dim 32 for RoPE.
SMALL = [
    "data.frames_per_clip=8", "data.crop_size=64", "model.encoder=custom", "model.embed_dim=64",
    "model.depth=2", "model.num_heads=2", "model.patch_size=16", "model.pred_depth=2",
    "model.pred_emb_dim=64", "model.pred_num_heads=2", "model.activation_checkpointing=false",
]


@pytest.fixture(autouse=True)
def exact_fp32():
    with no_tf32():
        yield


def _model_and_batch(method: str, *extra: str, batch_size: int = 4):
    cfg = SPECS[method].load_config("demo", overrides=SMALL + list(extra))
    torch.manual_seed(0)
    model = SPECS[method].build_model(cfg)
    with torch.no_grad():
        for t in model.predictor.mask_tokens:
            t.normal_()
        for p in model.target_encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    d, m = cfg.data, cfg.model
    col = MultiBlock3DMaskCollator(cfg.mask, d.crop_size, d.frames_per_clip, m.patch_size, m.tubelet_size, seed=1)
    videos = torch.randn(batch_size, 3, d.frames_per_clip, d.crop_size, d.crop_size,
                         generator=torch.Generator().manual_seed(0))
    return model, col([(v, 0) for v in videos])


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else [m.to(device) for m in v] if isinstance(v, list) else v
            for k, v in batch.items()}


@pytest.mark.parametrize("method", ["vjepa", "vjepa2"])
def test_loss_on_cuda_matches_cpu_and_packed_equals_per_config(method):
    model, batch = _model_and_batch(method)
    with torch.no_grad():
        ref = model(batch)["loss"]
        gpu = copy.deepcopy(model).to(CUDA)
        gb = _to(batch, CUDA)
        packed = gpu(gb)["loss"]
        gpu.packed_context = False
        unpacked = gpu(gb)["loss"]
        torch.testing.assert_close(packed.cpu(), ref, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(unpacked, packed, rtol=1e-5, atol=1e-6)
        gpu.packed_context = True
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = gpu(gb)["loss"].float().cpu()
    assert abs(half - ref) < 0.03 * ref, (float(half), float(ref))


@pytest.mark.parametrize("method", ["vjepa", "vjepa2"])
def test_bf16_training_steps_on_cuda_track_fp32_on_cpu(method):
    """Ten steps (fused AdamW, EMA) on a fixed batch: bf16 autocast on CUDA follows fp32 on the CPU."""
    from jepa_core.optim import adamw_kwargs

    model, batch = _model_and_batch(method)
    runs = {}
    for device, dtype in ((torch.device("cpu"), None), (CUDA, torch.bfloat16)):
        m = copy.deepcopy(model).to(device).train()
        b = _to(batch, device)
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3, **adamw_kwargs(device))
        losses = []
        for _ in range(10):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = m(b)["loss"]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            m.update_target(0.99)
            losses.append(float(loss))
        runs[device.type] = losses
    cpu, gpu = runs["cpu"], runs["cuda"]
    assert all(abs(a - b) < 0.03 * b for a, b in zip(gpu, cpu)), (gpu, cpu)
    assert gpu[-1] < gpu[0] and cpu[-1] < cpu[0]
