"""CUDA paths (``-m gpu``; skipped without a GPU): the ViT on CUDA against the CPU, bf16
autocast against fp32, fused AdamW, the foreach EMA, activation checkpointing, torch.compile,
and the Trainer on CUDA in fp32, bf16 and fp16 (GradScaler) with a checkpoint round trip."""

from __future__ import annotations

import copy

import pytest
import torch
from jepa_core.checkpoint import load
from jepa_core.config import OptimConfig, TrainConfig
from jepa_core.nn import enable_activation_checkpointing, vit
from jepa_core.optim import adamw_kwargs, maybe_compile
from jepa_core.target import EMATarget
from jepa_core.testing import LinearJEPA, PointsDataset, collate_points, no_tf32
from jepa_core.trainer import Trainer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def exact_fp32():
    """No TF32 in these comparisons (cuDNN convolutions use it by default)."""
    with no_tf32():
        yield


def _encoder_and_input(seed: int = 0):
    torch.manual_seed(seed)
    enc = vit("vit_tiny", img_size=64, patch_size=16)
    x = torch.randn(4, 3, 64, 64)
    idx = torch.stack([torch.randperm(16)[:9] for _ in range(4)])  # a context of 9 of 16 tokens
    return enc, x, idx


def test_vit_on_cuda_matches_cpu_fp32_and_bf16_is_close():
    enc, x, idx = _encoder_and_input()
    ref = enc(x, [idx])
    gpu = copy.deepcopy(enc).to(CUDA)
    out = gpu(x.to(CUDA), [idx.to(CUDA)])
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        half = gpu(x.to(CUDA), [idx.to(CUDA)])  # the final LayerNorm runs in fp32 under autocast
    rel = (half.float().cpu() - ref).norm() / ref.norm()
    assert rel < 2e-2, f"bf16 relative error {rel:.3g}"


def test_fused_adamw_on_cuda_matches_the_plain_implementation():
    kw = adamw_kwargs(CUDA)
    assert kw.get("fused") is True
    enc, x, _ = _encoder_and_input()
    a, b = copy.deepcopy(enc).to(CUDA), copy.deepcopy(enc).to(CUDA)
    opt_a = torch.optim.AdamW(a.parameters(), lr=1e-3, weight_decay=0.05, **kw)
    opt_b = torch.optim.AdamW(b.parameters(), lr=1e-3, weight_decay=0.05, foreach=False)
    xb = x.to(CUDA)
    losses = {id(a): [], id(b): []}
    for _ in range(5):
        for m, o in ((a, opt_a), (b, opt_b)):
            loss = m(xb).pow(2).mean()
            loss.backward()
            o.step()
            o.zero_grad(set_to_none=True)
            losses[id(m)].append(loss.item())
    # Adam divides by sqrt(v): where a gradient is near zero, last-bit differences of the backward
    # (atomic adds) move a weight by up to lr per step; so the tolerance is a tenth of lr.
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-4)
    torch.testing.assert_close(losses[id(a)], losses[id(b)], rtol=1e-4, atol=0)
    assert losses[id(a)][-1] < losses[id(a)][0]


def test_foreach_ema_on_cuda_matches_the_parameter_loop():
    enc, _, _ = _encoder_and_input()
    online = enc.to(CUDA)
    target = EMATarget(online)
    ref = copy.deepcopy(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    for m in (0.99, 0.996):
        target.update(online, m)
        with torch.no_grad():
            for q, k in zip(online.parameters(), ref.parameters()):
                if q.requires_grad:
                    k.mul_(m).add_((1 - m) * q)
    for pt, pr in zip(target.module.parameters(), ref.parameters()):
        torch.testing.assert_close(pt, pr, rtol=1e-6, atol=1e-6)
    assert all(p.device.type == "cuda" for p in target.module.parameters())


def test_activation_checkpointing_on_cuda_same_grads_less_memory():
    torch.manual_seed(0)
    enc = vit("vit_small", img_size=224, patch_size=16).to(CUDA)
    ck = copy.deepcopy(enc)
    enable_activation_checkpointing(ck.blocks)
    x = torch.randn(32, 3, 224, 224, device=CUDA)

    def run(m):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = m(x).float().pow(2).mean()
        loss.backward()
        torch.cuda.synchronize()
        return loss, torch.cuda.max_memory_allocated() - base

    l1, mem_plain = run(enc)
    l2, mem_ckpt = run(ck)
    torch.testing.assert_close(l2, l1)
    for p1, p2 in zip(enc.parameters(), ck.parameters()):
        torch.testing.assert_close(p2.grad, p1.grad, rtol=1e-3, atol=1e-5)
    assert mem_ckpt < 0.6 * mem_plain, (mem_ckpt, mem_plain)


def test_compiled_forward_on_cuda_matches_eager():
    enc, x, idx = _encoder_and_input()
    enc = enc.to(CUDA)
    compiled = maybe_compile(enc, True)
    xb, ib = x.to(CUDA), idx.to(CUDA)
    torch.testing.assert_close(compiled(xb, [ib]), enc(xb, [ib]), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# the Trainer on CUDA


def _fit(tmp_path, device: str, precision: str):
    torch.manual_seed(0)
    model = LinearJEPA(d=8, hidden=32)
    oc = OptimConfig(epochs=2, warmup=0.5, start_lr=0.01, lr=0.05, final_lr=0.001, ema=(0.9, 1.0))
    tc = TrainConfig(device=device, precision=precision, progress=False, log_every=1, checkpoint_every=4,
                     num_threads=1)
    tr = Trainer(model, PointsDataset(d=8), collate_points, oc, tc, tmp_path / f"{device}-{precision}", batch_size=8)
    res = tr.fit()
    return model, res, tmp_path / f"{device}-{precision}"


def test_trainer_on_cuda_fp32_matches_cpu(tmp_path):
    cpu, res_cpu, _ = _fit(tmp_path, "cpu", "fp32")
    gpu, res_gpu, run = _fit(tmp_path, "cuda", "fp32")
    assert res_gpu.steps == res_cpu.steps == 16
    assert next(gpu.parameters()).device.type == "cuda"
    for a, b in zip(cpu.state_dict().values(), gpu.state_dict().values()):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5)
    # The checkpoint written on CUDA loads on the CPU (weights_only) and holds the final weights.
    obj = load(run / "checkpoints" / "latest.pt", map_location="cpu")
    assert obj["step"] == 16
    for k, v in gpu.state_dict().items():
        torch.testing.assert_close(obj["model"][k], v.cpu())


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_trainer_on_cuda_mixed_precision_tracks_fp32(tmp_path, precision):
    import csv

    _, _, run32 = _fit(tmp_path, "cuda", "fp32")
    model, res, run = _fit(tmp_path, "cuda", precision)
    assert res.steps == 16
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    l32 = [float(r["loss"]) for r in csv.DictReader(open(run32 / "metrics.csv"))]
    low = [float(r["loss"]) for r in csv.DictReader(open(run / "metrics.csv"))]
    assert len(low) == len(l32) == 16 and all(torch.isfinite(torch.tensor(low)))
    assert low[-1] < 0.5 * low[0]  # it learns (0.084 -> 0.010 in fp32)
    if precision == "bf16":  # no loss scaling: every step's loss within 10 % of fp32's
        for a, b in zip(low, l32):
            assert abs(a - b) <= 0.1 * b + 1e-3, (low, l32)
