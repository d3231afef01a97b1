"""Every installed method, every preset (timm-style sweep of the registry): the preset loads and
validates, and each demo preset builds its model and takes one training step on a real collated
batch of its own data. A new method or preset is covered without a new test."""

from __future__ import annotations

import math

import pytest
import torch
from jepa_core import registry
from jepa_core.config import validate

CASES = [(m, p) for m in registry.methods() for p in registry.get_method(m).preset_paths()]


def test_the_sweep_sees_every_method():
    assert {"ijepa", "dmtjepa", "iwm", "vjepa", "vjepa2"} <= set(registry.methods())
    assert all(registry.get_method(m).preset_paths() for m in registry.methods())


@pytest.mark.parametrize(("method", "preset"), CASES, ids=[f"{m}-{p}" for m, p in CASES])
def test_preset_loads_and_validates(method, preset):
    spec = registry.get_method(method)
    cfg = spec.load_config(preset)
    assert cfg.method == method
    validate(cfg)
    if spec.evaluator:  # the evaluator's own check, as `jepa pretrain` runs it before training
        evaluator = registry.get_evaluator(spec.evaluator)
        if evaluator is not None and getattr(cfg, "eval", None) is not None and cfg.eval.enabled:
            getattr(evaluator, "check_config", lambda c: None)(cfg)


DEMOS = [m for m in registry.methods() if "demo" in registry.get_method(m).preset_paths()]


@pytest.mark.parametrize("method", DEMOS)
def test_demo_preset_takes_a_step(method):
    """The demo model on 4 samples of the demo data through the method's own collator: a finite
    loss whose gradient reaches every trainable module."""
    spec = registry.get_method(method)
    cfg = spec.load_config("demo", overrides=["data.batch_size=4", "data.num_workers=0"])
    torch.manual_seed(0)
    model = spec.build_model(cfg)
    dataset, collate = spec.build_train_data(cfg, 0, 1)
    batch = collate([dataset[i] for i in range(4)])
    # what the Trainer passes: the whole batch (labels included: class-conditional methods such as
    # D-JEPA read them), less the skipped-sample count
    batch = {k: v for k, v in batch.items() if k != "num_bad"}
    out = model(batch)
    assert math.isfinite(out["loss"].item())
    out["loss"].backward()
    for name, module in model.trainable_modules().items():
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), name


GPU_DEMOS = [m for m in registry.methods() if "demo_gpu" in registry.get_method(m).preset_paths()]


def test_gpu_demo_presets_exist_for_the_image_and_video_demos():
    assert {"ijepa", "lejepa", "vjepa", "vjepa2"} <= set(GPU_DEMOS)


@pytest.mark.parametrize("method", GPU_DEMOS)
def test_gpu_demo_is_the_cpu_demo_scaled_up(method):
    """``demo_gpu`` (``base: demo``) keeps the demo's model, masks or views and learning rate,
    which were measured on CPU, and only lengthens the run and moves it to CUDA."""
    spec = registry.get_method(method)
    cpu, gpu = spec.load_config("demo"), spec.load_config("demo_gpu")
    assert gpu.train.device == "cuda" and gpu.train.precision == "bf16"
    assert gpu.model == cpu.model and gpu.optim.lr == cpu.optim.lr
    for section in ("mask", "views", "loss"):
        if hasattr(cpu, section):
            assert getattr(gpu, section) == getattr(cpu, section), section
    steps = lambda c: c.optim.epochs * getattr(c.data, "demo_clips", 1)  # noqa: E731
    assert steps(gpu) >= 8 * steps(cpu)
