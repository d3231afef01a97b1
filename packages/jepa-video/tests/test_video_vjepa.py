"""V-JEPA and V-JEPA 2 methods: the loss against a hand computation, where gradients go, the
V-JEPA 2 mask-token quirk, the official presets, the demo data path and a short run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from jepa_core import checkpoint as ckpt
from jepa_core import registry
from jepa_video.demo_data import split_label
from jepa_video.vjepa import (
    VJEPA,
    VJEPA2_SPEC,
    VJEPA_SPEC,
    build_eval_data,
    build_train_data,
    enable_activation_checkpointing,
    eval_tasks,
)

torch.set_num_threads(1)

# A tiny model: 4 frames at 32 px, tubelet 2 x 8 x 8 -> a 2 x 4 x 4 token grid.
TINY = [
    "data.frames_per_clip=4", "data.crop_size=32", "data.batch_size=4", "data.num_workers=0",
    "model.encoder=custom", "model.embed_dim=24", "model.depth=2", "model.num_heads=2", "model.patch_size=8",
    "model.pred_depth=1", "model.pred_emb_dim=12", "model.pred_num_heads=2",
]
SPECS = {"vjepa": VJEPA_SPEC, "vjepa2": VJEPA2_SPEC}


def tiny_cfg(method: str, *extra: str):
    return SPECS[method].load_config("demo", overrides=TINY + list(extra))


def tiny_model(method: str, *extra: str, seed: int = 0) -> tuple[VJEPA, object]:
    cfg = tiny_cfg(method, *extra)
    torch.manual_seed(seed)
    model = SPECS[method].build_model(cfg)
    with torch.no_grad():
        # Distinct mask tokens (they start at zero) and a target that differs from the encoder,
        # so that using the wrong token or the wrong encoder changes the loss.
        for t in model.predictor.mask_tokens:
            t.normal_()
        for p in model.target_encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model, cfg


def tiny_batch(cfg, batch_size: int = 3, step: int = 0) -> dict:
    from jepa_video.masks import MultiBlock3DMaskCollator

    d, m = cfg.data, cfg.model
    col = MultiBlock3DMaskCollator(cfg.mask, d.crop_size, d.frames_per_clip, m.patch_size, m.tubelet_size, seed=1)
    g = torch.Generator().manual_seed(step)
    videos = torch.randn(batch_size, 3, d.frames_per_clip, d.crop_size, d.crop_size, generator=g)
    b = col([(v, 0) for v in videos])
    return b


@pytest.mark.parametrize("method", ["vjepa", "vjepa2"])
@pytest.mark.parametrize("loss_exp", [1.0, 2.0])
def test_loss_equals_hand_computation(method, loss_exp):
    model, cfg = tiny_model(method, f"model.loss_exp={loss_exp}")
    batch = tiny_batch(cfg)
    out = model(batch)
    videos = batch["videos"]
    with torch.no_grad():
        h = model.target_encoder.module(videos)  # [B, N, D], through the encoder's own norm
        h = F.layer_norm(h, (h.shape[-1],))  # then a parameter-free layer norm
        losses = []
        for i, (m_enc, m_pred) in enumerate(zip(batch["masks_enc"], batch["masks_pred"])):
            z = model.encoder(videos, m_enc)  # one encoder pass per configuration
            token = i if method == "vjepa" else 0  # V-JEPA 2: mask_tokens[0] for every configuration
            p = model.predictor(z, m_enc, m_pred, mask_index=token)
            target = torch.stack([h[b, m_pred[b]] for b in range(videos.shape[0])])
            losses.append(((p - target).abs() ** loss_exp).mean() / loss_exp)
        expected = sum(losses) / len(losses)
    assert len(losses) == 2
    torch.testing.assert_close(out["loss"].detach(), expected, rtol=1e-5, atol=1e-6)
    # The other mask-token choice gives a different loss, so the check above is sharp.
    with torch.no_grad():
        z = model.encoder(videos, batch["masks_enc"][1])
        other = model.predictor(z, batch["masks_enc"][1], batch["masks_pred"][1], mask_index=1 - (method == "vjepa"))
        target = torch.stack([h[b, batch["masks_pred"][1][b]] for b in range(videos.shape[0])])
        wrong = (losses[0] + ((other - target).abs() ** loss_exp).mean() / loss_exp) / 2
    assert not torch.allclose(wrong, expected)


@pytest.mark.parametrize("method", ["vjepa", "vjepa2"])
def test_packed_context_equals_one_pass_per_config(method):
    model, cfg = tiny_model(method)
    batch = tiny_batch(cfg)
    packed = model(batch)["loss"]
    model.packed_context = False
    separate = model(batch)["loss"]
    torch.testing.assert_close(packed, separate, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["vjepa", "vjepa2"])
def test_gradients_reach_encoder_and_predictor_not_target(method):
    model, cfg = tiny_model(method)
    model(tiny_batch(cfg))["loss"].backward()
    for name, module in (("encoder", model.encoder), ("predictor", model.predictor)):
        trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        missing = [n for n, p in trainable if p.grad is None]
        assert not missing, f"{name} parameters without gradient: {missing}"
        assert any(p.grad.abs().sum() > 0 for _, p in trainable)
    assert all(p.grad is None and not p.requires_grad for p in model.target_encoder.parameters())


def test_vjepa2_shares_mask_token_zero():
    model, cfg = tiny_model("vjepa2")
    assert len(model.predictor.mask_tokens) == 10 and len(cfg.mask) == 2
    model(tiny_batch(cfg))["loss"].backward()
    tokens = model.predictor.mask_tokens
    assert tokens[0].grad is not None and tokens[0].grad.abs().sum() > 0
    assert all(t.grad is None and not t.requires_grad for t in list(tokens)[1:])
    # Trainable parameters exclude the unused tokens, so the optimizer never sees them.
    from jepa_core.optim import param_groups

    ids = {id(p) for g in param_groups(model.trainable_modules()) for p in g["params"]}
    assert id(tokens[0]) in ids and not any(id(t) in ids for t in list(tokens)[1:])


@pytest.mark.parametrize("method, per_config", [("vjepa", None), ("vjepa2", "true")])
def test_one_mask_token_per_config(method, per_config):
    extra = [f"model.mask_token_per_config={per_config}"] if per_config else []
    model, cfg = tiny_model(method, *extra)
    model(tiny_batch(cfg))["loss"].backward()
    tokens = list(model.predictor.mask_tokens)
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in tokens[:2])
    assert all(t.grad is None for t in tokens[2:])


def test_activation_checkpointing_same_loss_and_grads():
    model, cfg = tiny_model("vjepa2")
    batch = tiny_batch(cfg)
    loss = model(batch)["loss"]
    loss.backward()
    grads = [p.grad.clone() for p in model.encoder.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    enable_activation_checkpointing(model.encoder.blocks)
    enable_activation_checkpointing(model.predictor.predictor_blocks)
    names = set(model.state_dict())
    loss2 = model(batch)["loss"]
    loss2.backward()
    torch.testing.assert_close(loss2, loss)
    for g, p in zip(grads, (p for p in model.encoder.parameters() if p.requires_grad)):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)
    assert set(model.state_dict()) == names  # parameter names unchanged
    built = VJEPA2_SPEC.build_model(tiny_cfg("vjepa2", "model.activation_checkpointing=true"))
    assert all(getattr(b, "_jepa_checkpointed", False) for b in built.encoder.blocks)
    assert not any(getattr(b, "_jepa_checkpointed", False) for b in built.target_encoder.module.blocks)


def test_vjepa_official_presets():
    cfg = VJEPA_SPEC.load_config("vitl16")
    o, d, m = cfg.optim, cfg.data, cfg.model
    assert (o.lr, o.start_lr, o.final_lr, o.lr_schedule) == (6.25e-4, 2e-4, 1e-6, "cosine")
    assert o.ema == (0.998, 1.0) and (o.ipe, o.ipe_scale, o.epochs, o.warmup) == (300, 1.25, 300, 40)
    assert (o.weight_decay, o.final_weight_decay, o.clip_grad) == (0.04, 0.4, 10.0)
    assert (d.batch_size, d.frames_per_clip, d.frame_step, d.fps, d.crop_size) == (24, 16, 4, None, 224)
    assert (d.crop_scale, d.aspect_ratio, d.hflip) == ((0.3, 1.0), (0.75, 1.35), 0.5)
    assert (m.encoder, m.patch_size, m.tubelet_size, m.pred_depth, m.pred_emb_dim) == ("vit_large", 16, 2, 12, 384)
    assert (m.use_rope, m.uniform_power, m.num_mask_tokens, m.mask_token_per_config) == (False, True, 2, True)
    assert [(c.num_blocks, c.spatial_scale) for c in cfg.mask] == [(8, (0.15, 0.15)), (2, (0.7, 0.7))]
    assert VJEPA_SPEC.load_config("vith16").model.encoder == "vit_huge"
    h384 = VJEPA_SPEC.load_config("vith16_384")
    assert (h384.model.encoder, h384.data.crop_size, h384.data.batch_size) == ("vit_huge", 384, 10)


def test_vjepa2_official_presets():
    for preset, encoder in (("vitl16", "vit_large"), ("vith16", "vit_huge"), ("vitg16", "vit_giant_xformers")):
        cfg = VJEPA2_SPEC.load_config(preset)
        o, d, m = cfg.optim, cfg.data, cfg.model
        assert m.encoder == encoder
        assert (o.lr_schedule, o.lr, o.start_lr, o.warmup, o.ipe) == ("constant", 5.25e-4, 1e-4, 40, 300)
        assert o.ema == (0.99925, 0.99925) and (o.weight_decay, o.final_weight_decay) == (0.04, 0.04)
        assert o.clip_grad is None
        assert (d.frames_per_clip, d.fps, d.frame_step, d.crop_size, d.batch_size) == (16, 4, None, 256, 24)
        assert d.weights == (0.335, 0.1, 0.565)
        assert (m.use_rope, m.pred_num_heads, m.num_mask_tokens, m.mask_token_per_config) == (True, 12, 10, False)
        assert m.activation_checkpointing and m.rescale_init and not m.rope_fix_tiling
    cool = VJEPA2_SPEC.load_config("vitg16_384_cooldown")
    assert (cool.data.frames_per_clip, cool.data.crop_size, cool.data.batch_size) == (64, 384, 6)
    assert (cool.optim.epochs, cool.optim.ipe, cool.optim.ipe_scale, cool.optim.warmup) == (40, 300, 1.25, 0)
    assert (cool.optim.lr, cool.optim.final_lr, cool.optim.ema) == (5.25e-4, 1e-6, (0.99925, 0.99925))
    assert cool.optim.lr_schedule == "linear"  # the official LinearDecaySchedule


def test_methods_registered():
    assert {"vjepa", "vjepa2"} <= set(registry.methods())
    assert registry.get_method("vjepa") is VJEPA_SPEC and registry.get_method("vjepa2") is VJEPA2_SPEC
    assert set(VJEPA_SPEC.preset_paths()) == {"demo", "demo_gpu", "demo_flowclips", "vitl16", "vith16", "vith16_384"}
    assert set(VJEPA2_SPEC.preset_paths()) == {"demo", "demo_gpu", "vitl16", "vith16", "vitg16", "vitg16_384_cooldown"}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return tmp_path_factory.mktemp("vjepa_demo")


DEMO = ["data.demo_clips=16", "data.demo_eval_clips=8"]


def test_demo_train_and_eval_data(demo_root):
    cfg = tiny_cfg("vjepa", f"data.root={demo_root}", *DEMO)
    ds, collate = build_train_data(cfg)
    assert len(ds) == 16
    from jepa_core.data import StampedDataset

    stamped = StampedDataset(ds, seed=0)
    b1 = collate([stamped[(i, 5)] for i in range(4)])
    b2 = collate([stamped[(i, 5)] for i in range(4)])
    assert b1["videos"].shape == (4, 3, 4, 32, 32)
    assert len(b1["masks_enc"]) == len(b1["masks_pred"]) == 2
    assert torch.equal(b1["videos"], b2["videos"])  # a function of (seed, step, index)
    assert all(torch.equal(a, b) for a, b in zip(b1["masks_enc"] + b1["masks_pred"], b2["masks_enc"] + b2["masks_pred"]))
    train, test = build_eval_data(cfg)  # the demo preset: data.label=both, one task per label
    assert (len(train), len(test)) == (16, 8)
    raw = train.dataset.labels
    assert [train[i][1] for i in range(4)] == raw[:4]
    tasks = eval_tasks(cfg)
    assert list(tasks) == ["motion direction", "object class"]
    y = torch.tensor(raw)
    assert tasks["motion direction"](y).tolist() == [split_label(v)[1] for v in raw]
    assert tasks["object class"](y).tolist() == [split_label(v)[0] for v in raw]
    dir_train, _ = build_eval_data(tiny_cfg("vjepa", f"data.root={demo_root}", "data.label=direction", *DEMO))
    labels = [dir_train[i][1] for i in range(4)]
    assert labels == [split_label(y)[1] for y in raw[:4]] and all(0 <= y < 8 for y in labels)
    assert eval_tasks(tiny_cfg("vjepa", f"data.root={demo_root}", "data.label=direction", *DEMO)) is None
    cls_train, _ = build_eval_data(tiny_cfg("vjepa", f"data.root={demo_root}", "data.label=class", *DEMO))
    assert [cls_train[i][1] for i in range(4)] == [split_label(y)[0] for y in raw[:4]]
    clip, _ = test[0]
    assert clip.shape == (3, 4, 32, 32)


@pytest.mark.parametrize("method", ["vjepa", "vjepa2"])
def test_pretrain_three_steps_writes_checkpoint(method, demo_root, tmp_path):
    from jepa_core.run import pretrain

    overrides = TINY + DEMO + [
        f"data.root={demo_root}", "optim.max_steps=3", "optim.warmup=0", "train.device=cpu",
        "train.progress=false", "train.log_every=1",
    ]
    if method == "vjepa":  # also the probes on the held-out demo clips (k-NN only, no baselines)
        overrides += ["eval.protocols=[knn]", "eval.knn_k=[3]", "eval.random_baseline=false",
                      "eval.raw_baseline=false", "eval.plots=false", "baseline.image_encoder=null"]
    else:
        overrides += ["eval.enabled=false"]
    summary = pretrain(method, overrides=overrides, run_dir=tmp_path / "run")
    assert summary["steps"] == 3 and summary["final_loss"] == summary["final_loss"]  # finite, not NaN
    # The probes run only where jepa-eval is installed (not in the per-package test session).
    has_eval = registry.get_evaluator("probes") is not None
    assert ("evaluation" in summary) == (method == "vjepa" and has_eval)
    obj = ckpt.load(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert obj["step"] == 3 and obj["config"]["method"] == method
    keys = obj["model"].keys()
    assert any(k.startswith("encoder.blocks.") for k in keys)
    assert any(k.startswith("target_encoder.module.blocks.") for k in keys)
    assert any(k.startswith("predictor.mask_tokens.") for k in keys)
