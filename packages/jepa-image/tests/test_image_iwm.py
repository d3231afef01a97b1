"""`jepa pretrain iwm`: the spec and presets, the union-of-blocks masks, the action-conditioned
predictor (feature, sequence, none), the training step, the world-model adapter, exact resume
(views and actions included), bad input."""

from __future__ import annotations

import csv
import math
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import torch
from jepa_core import registry
from jepa_core.config import ConfigError
from jepa_core.masks import StepSeeds
from jepa_core.run import pretrain
from jepa_image import iwm
from jepa_image import iwm_views as V
from jepa_image.iwm import IWMMaskConfig, UnionBlockMaskSampler

TINY = [
    "model.encoder=custom", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
    "model.pred_depth=1", "model.pred_emb_dim=16", "model.patch_size=4",
    "data.batch_size=16", "data.num_workers=0", "data.pin_memory=false",
    "train.device=cpu", "train.num_threads=1", "train.progress=false", "eval.enabled=false",
]


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _cfg(*overrides: str):
    return registry.get_method("iwm").load_config("demo", overrides=TINY + list(overrides))


def _batch(cfg, b: int = 6, step: int = 0) -> dict:
    """A real collated batch of the demo data (paired views, action, masks)."""
    dataset, collate = iwm.build_train_data(cfg)
    return collate([dataset[i] for i in range(b)])


# ---------------------------------------------------------------------------------------------
# spec and presets


def test_registered_through_the_entry_point_with_presets():
    eps = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["entry-points"]
    assert metadata.EntryPoint("iwm", eps["jepa.methods"]["iwm"], "jepa.methods").load() is iwm.SPEC
    spec = registry.get_method("iwm")
    assert set(spec.preset_paths()) == {"demo", "demo_inv", "in1k_vitb16_inv", "in1k_vitb16_equi"}
    inv, equi = spec.load_config("in1k_vitb16_inv"), spec.load_config("in1k_vitb16_equi")
    # the paper's IWM^Inv_{12,384} and IWM^Equi_{18,384} on ViT-B/16, both feature-conditioned
    assert (inv.model.pred_depth, inv.model.pred_emb_dim, equi.model.pred_depth, equi.model.pred_emb_dim) == (
        12, 384, 18, 384)
    for cfg in (inv, equi):
        assert (cfg.model.encoder, cfg.model.patch_size, cfg.data.image_size) == ("vit_base", 16, 224)
        assert cfg.model.conditioning == "feature" and cfg.model.loss == "l2" and cfg.optim.epochs == 300
        v = cfg.views
        assert (v.jitter_p, v.brightness, v.contrast, v.saturation, v.hue) == (0.8, 0.4, 0.4, 0.2, 0.1)
        assert (v.grayscale_p, v.blur_p, v.solarize_p) == (0.2, 0.2, 0.1) and v.source == "independent"
        assert (cfg.mask.num_blocks, tuple(cfg.mask.block_scale)) == (4, (0.15, 0.2))
        assert cfg.world_model_eval.mrr_candidates == 256
    demo, demo_inv = spec.load_config("demo"), spec.load_config("demo_inv")
    assert demo.model.pred_depth > demo_inv.model.pred_depth
    assert spec.evaluator == "world_model" and "world_model" in spec.extra


def test_bad_config_names_the_key_and_the_fix():
    with pytest.raises(ConfigError, match=r"model.action_dim=5.*7 entries"):
        _cfg("model.action_dim=5")
    with pytest.raises(ConfigError, match=r"model.conditioning"):
        _cfg("model.conditioning=film")
    with pytest.raises(ConfigError, match=r"views.blur_p"):
        _cfg("views.blur_p=1.5")
    with pytest.raises(ConfigError, match=r"views.solarize_p"):
        _cfg("views.solarize_p=-0.1")
    with pytest.raises(ConfigError, match=r"views.jitr_p|valid"):
        _cfg("views.jitr_p=0.5")
    with pytest.raises(ConfigError, match=r"leaves 0 of the 7x7 tokens visible, fewer than mask.min_context=4"):
        _cfg("mask.block_scale=[0.9,1.0]", "mask.num_blocks=4")


# ---------------------------------------------------------------------------------------------
# masks


def test_union_masks_partition_the_grid_and_are_seeded():
    sampler = UnionBlockMaskSampler(IWMMaskConfig(), 7, 7)
    out = sampler(32, StepSeeds(0, None, 5))
    (ctx,), (tgt,) = out["masks_enc"], out["masks_pred"]
    assert ctx.shape[0] == tgt.shape[0] == 32
    k = tgt.shape[1] // 4
    assert tgt.shape[1] == 4 * k and 6 <= k <= 10  # 4 blocks of 15-20 % of 49 tokens, one size per batch
    for c, t in zip(ctx, tgt):
        assert not set(c.tolist()) & set(t.tolist())  # visible and predicted tokens are disjoint
        assert c.tolist() == sorted(c.tolist())
        for block in t.view(4, k):  # each block is a rectangle of k tokens
            rows, cols = block // 7, block % 7
            assert len(set(block.tolist())) == k
            assert (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) == k
    again = sampler(32, StepSeeds(0, None, 5))
    assert torch.equal(again["masks_enc"][0], ctx) and torch.equal(again["masks_pred"][0], tgt)
    other = sampler(32, StepSeeds(0, None, 6))
    assert not torch.equal(other["masks_pred"][0], tgt)


def test_positions_are_drawn_again_until_every_image_keeps_min_context():
    """Large blocks that can hide almost all of a small grid: every image of every batch still
    keeps mask.min_context visible tokens (the positions are redrawn from the same generator)."""
    cfg = IWMMaskConfig(num_blocks=4, block_scale=(0.3, 0.35), min_context=6)
    sampler = UnionBlockMaskSampler(cfg, 6, 6)
    for step in range(30):
        out = sampler(16, StepSeeds(0, None, step))
        assert out["masks_enc"][0].shape[1] >= 6
    assert torch.equal(sampler(16, StepSeeds(0, None, 3))["masks_enc"][0], sampler(16, StepSeeds(0, None, 3))["masks_enc"][0])


def test_one_image_sees_everything_outside_the_blocks():
    """Without truncation (one image), the visible tokens are exactly the complement of the union."""
    sampler = UnionBlockMaskSampler(IWMMaskConfig(num_blocks=2, block_scale=(0.2, 0.2), aspect_ratio=(1.0, 1.0)),
                                    5, 5)
    ctx, tgt = sampler.masks(1, torch.Generator().manual_seed(0))
    # 2 blocks of 2x2 (k = int(25 * 0.2) = 5, h = w = round(sqrt 5) = 2)
    assert tgt.shape == (1, 8)
    assert sorted(ctx[0].tolist()) == sorted(set(range(25)) - set(tgt[0].tolist()))


# ---------------------------------------------------------------------------------------------
# predictor


def _predictor(conditioning: str):
    cfg = _cfg(f"model.conditioning={conditioning}", "model.pred_depth=2")
    torch.manual_seed(0)
    return iwm.build_model(cfg), cfg


@pytest.mark.parametrize("conditioning", ["feature", "sequence", "none"])
def test_zeroing_the_action_changes_only_a_conditioned_predictor(conditioning):
    model, cfg = _predictor(conditioning)
    batch = _batch(cfg)
    action = batch["action"]
    assert action.shape == (6, V.ACTION_DIM) and action.abs().sum() > 0
    z = model.encoder(batch["images"], batch["masks_enc"])
    with torch.no_grad():
        a = model.predictor(z, batch["masks_enc"], batch["masks_pred"], condition=action)
        b = model.predictor(z, batch["masks_enc"], batch["masks_pred"], condition=torch.zeros_like(action))
    assert a.shape == (6, batch["masks_pred"][0].shape[1], 32)
    if conditioning == "none":
        assert torch.equal(a, b)
    else:
        assert (a - b).abs().max() > 1e-6  # small at init (0.02-std projections), never zero
        # only the rows whose action changed
        same = (action == 0).all(dim=1)
        for i in range(6):
            assert torch.equal(a[i], b[i]) == bool(same[i])


def test_action_of_the_wrong_size_is_a_clear_error():
    model, cfg = _predictor("feature")
    batch = _batch(cfg)
    z = model.encoder(batch["images"], batch["masks_enc"])
    with pytest.raises(ValueError, match=r"action has 5 entries but the predictor was built for 7"):
        model.predictor(z, batch["masks_enc"], batch["masks_pred"], condition=batch["action"][:, :5])
    with pytest.raises(ValueError, match=r"needs the action"):
        model.predictor(z, batch["masks_enc"], batch["masks_pred"])
    seq, _ = _predictor("sequence")
    with pytest.raises(ValueError, match=r"action has 8 entries"):
        seq.predictor(z, batch["masks_enc"], batch["masks_pred"], condition=torch.zeros(6, 8))


def test_sequence_conditioning_adds_one_token_per_action_entry():
    model, cfg = _predictor("sequence")
    p = model.predictor
    action = torch.randn(3, V.ACTION_DIM)
    tokens = p.condition_tokens(action)
    assert tokens.shape == (3, V.ACTION_DIM, cfg.model.pred_emb_dim)
    # entry i's token is a_i * W_i + b_i: its own projection
    i = 2
    assert torch.allclose(tokens[:, i], action[:, i:i + 1] * p.action_weight[i] + p.action_bias[i])


# ---------------------------------------------------------------------------------------------
# training step


def test_step_regresses_the_ema_tokens_of_the_target_view_at_the_masked_positions():
    model, cfg = _predictor("feature")
    batch = _batch(cfg)
    out = model(batch)
    assert math.isfinite(out["loss"].item())
    out["loss"].backward()
    assert model.predictor.condition_mlp[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.target_encoder.parameters())
    # the loss is the squared error to the layer-normed EMA tokens of the *target* view
    from jepa_core.masks import apply_masks
    from jepa_core.target import normalize_targets
    with torch.no_grad():
        h = apply_masks(normalize_targets(model.target_encoder(batch["target_images"])), batch["masks_pred"])
        z = model.predictor(model.encoder(batch["images"], batch["masks_enc"]), batch["masks_enc"],
                            batch["masks_pred"], condition=batch["action"])
    assert out["loss"].item() == pytest.approx(float(((z - h) ** 2).mean()), rel=1e-5)
    # model.targets=all: every position of the target view
    cfg_all = _cfg("model.targets=all")
    torch.manual_seed(0)
    all_model = iwm.build_model(cfg_all)
    assert all_model(batch)["target_tokens"] == 49


def test_world_model_adapter_shapes_and_null_action():
    model, cfg = _predictor("feature")
    wm = iwm.SPEC.extra["world_model"](model, cfg)
    images = torch.randn(3, 1, 28, 28).clamp(-0.8, 2.0)
    pred, cand = wm.world_model_batch(images, 5, torch.Generator().manual_seed(0))
    assert pred.shape == cand.shape and pred.shape[:2] == (3, 5)
    tokens = wm.encode(images)
    assert tokens.shape == (3, 49, 32) and not tokens.requires_grad
    ft = wm.finetune_predictor(pretrained=True)
    out = ft(tokens)
    assert out.shape == (3, 49, 32)
    assert all(p.requires_grad for n, p in ft.named_parameters() if "pos_embed" not in n)
    # a copy: training it leaves the model's predictor alone
    assert ft.predictor is not model.predictor
    fresh = wm.finetune_predictor(pretrained=False)
    assert not torch.equal(fresh.predictor.predictor_blocks[0].mlp.fc1.weight,
                           model.predictor.predictor_blocks[0].mlp.fc1.weight)


# ---------------------------------------------------------------------------------------------
# runs


RESUME = TINY + ["train.checkpoint_every=2", "train.log_every=1", "train.seed=3"]


def test_collated_views_and_actions_are_a_function_of_seed_and_step():
    """The same (seed, step) gives the same views, actions and masks; another step others."""
    cfg = _cfg()
    dataset, collate = iwm.build_train_data(cfg)
    from jepa_core.data import StampedDataset

    stamped = StampedDataset(dataset, seed=cfg.train.seed)
    a = collate([stamped[(i, 7, i)] for i in range(4)])
    b = collate([stamped[(i, 7, i)] for i in range(4)])
    c = collate([stamped[(i, 8, i)] for i in range(4)])
    for key in ("images", "target_images", "action", "params_source", "params_target"):
        assert torch.equal(a[key], b[key]), key
    assert torch.equal(a["masks_pred"][0], b["masks_pred"][0])
    assert not torch.equal(a["action"], c["action"])


@pytest.mark.slow
@pytest.mark.fault
def test_resume_after_a_kill_is_exact(tmp_path):
    """Stopped after step 5 with step 4 the newest checkpoint (a kill before the step-5 save),
    resumed to 8: the same weights, optimizer moments and logged losses as the uninterrupted run,
    so the same views, actions and masks were drawn after the resume."""
    n = 8
    full = pretrain("iwm", overrides=RESUME + [f"optim.max_steps={n}"], run_dir=tmp_path / "full")
    run = tmp_path / "stopped"
    pretrain("iwm", overrides=RESUME + ["optim.max_steps=5"], run_dir=run)
    ck = run / "checkpoints"
    (ck / "latest.pt").unlink()
    (ck / "step-5.pt").unlink()
    resumed = pretrain("iwm", overrides=RESUME + [f"optim.max_steps={n}"], run_dir=run, resume=True)
    assert resumed["steps"] == n and resumed["final_loss"] == full["final_loss"]
    a, b = _load(tmp_path / "full" / "checkpoints" / "latest.pt"), _load(ck / "latest.pt")
    assert any(k.startswith("predictor.condition_mlp.") for k in a["model"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    for i in sa:
        assert torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"])
    rows_a, rows_b = _rows(tmp_path / "full" / "metrics.csv"), _rows(run / "metrics.csv")
    assert [int(r["step"]) for r in rows_b] == list(range(1, n + 1))
    for ra, rb in zip(rows_a, rows_b):
        assert ra["loss"] == rb["loss"], ra["step"]


@pytest.mark.slow
def test_demo_preset_trains(tmp_path):
    """A dozen steps of the real demo preset: the loss falls and stays finite."""
    run = tmp_path / "demo"
    pretrain("iwm", overrides=["optim.max_steps=12", "train.log_every=4", "eval.enabled=false",
                               "train.progress=false", "train.device=cpu"], run_dir=run)
    losses = [float(r["loss"]) for r in _rows(run / "metrics.csv")]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]



def test_bench_cases_are_registered():
    from jepa_core import benchmark
    from jepa_image import bench

    eps = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["entry-points"]
    assert metadata.EntryPoint("iwm", eps["jepa.bench"]["iwm"], "jepa.bench").load() is bench.IWM_CASES
    assert [c.name for c in bench.IWM_CASES] == ["steps", "data"]
    ctx = benchmark.Context(repeats=1, warmup=0, log=lambda s: None, methods=("ijepa",))
    assert bench.case_iwm_steps(ctx) == [] and bench.case_iwm_views(ctx) == []  # only when IWM is asked for
    model, cfg = bench.build_iwm_model("tiny")
    batch = bench.make_iwm_batch("tiny", cfg, benchmark.Context(repeats=1, warmup=0, log=lambda s: None))
    assert batch["target_images"].shape == batch["images"].shape == (16, 3, 224, 224)
    assert batch["action"].shape == (16, V.ACTION_DIM)


def test_source_view_is_remade_from_the_target_parameters_and_the_action():
    """The action carries the jitter differences and the destructive flags: from the target view's
    recorded parameters, the action and the recorded blur sigma, the source view is remade
    exactly (the shared crop and flip from the recorded boxes)."""
    cfg = _cfg("views.blur_p=0.5", "views.solarize_p=0.5")
    dataset, collate = iwm.build_train_data(cfg)
    samples = [dataset[i] for i in range(32)]
    batch = collate(samples)
    views = collate.batch_transform
    action, pt, ps = batch["action"], batch["params_target"], batch["params_source"]
    names = list(V.VIEW_PARAMS)
    jitter = [names.index(k) for k in ("brightness", "contrast", "saturation", "hue")]
    source = pt.clone()
    source[:, jitter] = pt[:, jitter] - action[:, :4]  # the action is target minus source
    source[:, names.index("grayscale")] = action[:, 4]
    source[:, names.index("solarize")] = action[:, 6]
    blur = ps[:, names.index("blur_sigma")]
    assert torch.equal(action[:, 5], (blur > 0).float())  # the flag; sigma is a recorded parameter
    source[:, names.index("blur_sigma")] = blur
    assert torch.allclose(source, ps, atol=1e-6)
    assert action[:, 5].sum() > 0 and action[:, 6].sum() > 0  # blur and solarise happened
    shared = views.shared_view(torch.stack([s[0] for s in samples]), batch["crop_boxes"], batch["flipped"])
    remade = views.normalize(V.apply_view(shared, source, cfg.views))
    assert torch.allclose(remade, batch["images"], atol=1e-5)
    assert torch.equal(views.normalize(V.apply_view(shared, pt, cfg.views)), batch["target_images"])
