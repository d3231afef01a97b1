"""`jepa pretrain dmtjepa`: the spec and presets, the training step and its hooks, the heads in
run checkpoints, exact resume, the target-std column, bad input, and the bench case."""

from __future__ import annotations

import csv
import math
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import torch
from jepa_core import registry
from jepa_core.checkpoint import CheckpointError
from jepa_core.config import ConfigError
from jepa_core.masks import MultiBlockMaskCollator, MultiBlockMaskConfig
from jepa_core.run import load_run, pretrain
from jepa_image import dmtjepa
from jepa_image.dmtjepa import DMTJEPAConfig, build_model, load_without_heads

TINY = [
    "model.encoder=custom", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
    "model.pred_depth=1", "model.pred_emb_dim=16", "model.patch_size=4",
    "data.batch_size=16", "data.num_workers=0", "data.pin_memory=false",
    "train.device=cpu", "train.num_threads=1", "train.progress=false", "eval.enabled=false",
]
HEADS = ("head.", "target_head.module.")


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _tiny_cfg(**dmt) -> DMTJEPAConfig:
    cfg = registry.get_method("dmtjepa").load_config("demo", overrides=TINY)
    for k, v in dmt.items():
        setattr(cfg.dmt, k, v)
    return cfg


def _batch(cfg: DMTJEPAConfig, b: int = 4, seed: int = 0) -> dict:
    img = cfg.data.image_size
    images = torch.randn(b, 1, img, img, generator=torch.Generator().manual_seed(seed))
    mcfg = MultiBlockMaskConfig(min_keep=4, fix_position_bound=True)
    out = MultiBlockMaskCollator(mcfg, img, cfg.model.patch_size, seed=seed)([(x, 0) for x in images])
    return {"images": images, "masks_enc": out["masks_enc"], "masks_pred": out["masks_pred"]}


# ---------------------------------------------------------------------------------------------
# spec and presets


def test_registered_through_the_entry_point_with_presets():
    eps = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["entry-points"]
    assert metadata.EntryPoint("dmtjepa", eps["jepa.methods"]["dmtjepa"], "jepa.methods").load() is dmtjepa.SPEC
    spec = registry.get_method("dmtjepa")
    assert spec is dmtjepa.SPEC
    ijepa_spec = registry.get_method("ijepa")  # I-JEPA's data, evaluation data and mask plots
    for hook in ("build_train_data", "build_eval_data", "on_run_start", "evaluator"):
        assert getattr(spec, hook) is getattr(ijepa_spec, hook), hook
    assert spec.build_model is dmtjepa.build_model and spec.config_cls is DMTJEPAConfig
    assert set(spec.preset_paths()) == {"demo", "in1k_vitb16", "in1k_vitl16", "in1k_vith14"}
    # the released configs (dmtjepa:configs/*.yaml): encoder, patch, batch per GPU, predictor depth, epochs
    released = {"in1k_vitb16": ("vit_base", 16, 256, 6, 600), "in1k_vitl16": ("vit_large", 16, 256, 12, 600),
                "in1k_vith14": ("vit_huge", 14, 128, 12, 300)}
    for name, (enc, patch, batch, pdepth, epochs) in released.items():
        cfg = spec.load_config(name)
        assert (cfg.model.encoder, cfg.model.patch_size, cfg.data.batch_size, cfg.model.pred_depth,
                cfg.optim.epochs) == (enc, patch, batch, pdepth, epochs), name
        assert cfg.model.pred_emb_dim == 384 and cfg.data.image_size == 224 and cfg.mask.min_keep == 10
        assert (cfg.optim.start_lr, cfg.optim.lr, cfg.optim.final_lr, cfg.optim.warmup) == (2e-4, 1e-3, 1e-6, 40)
        assert tuple(cfg.optim.ema) == (0.996, 1.0) and cfg.optim.final_weight_decay == 0.4
        assert (cfg.dmt.top_k, cfg.dmt.window, cfg.dmt.depth) == (4, 3, 2)
    # the demo keeps I-JEPA's demo settings but the number of epochs (5, to fit 10 minutes), so
    # that `jepa pretrain ijepa optim.epochs=5` trains on the same batches and masks
    ours = spec.load_config("demo")
    theirs = registry.get_method("ijepa").load_config("demo", overrides=[f"optim.epochs={ours.optim.epochs}"])
    assert ours.optim.epochs == 5 and set(ours.eval.protocols) == {"linear", "knn", "dense"}
    for section in ("data", "mask", "optim", "train"):
        assert getattr(ours, section) == getattr(theirs, section), section
    for key in ("encoder", "embed_dim", "depth", "num_heads", "patch_size", "pred_depth", "pred_emb_dim"):
        assert getattr(ours.model, key) == getattr(theirs.model, key), key
    assert ours.model.loss == "l2" and ours.dmt.query == "neighbour_mean" and not ours.dmt.wrap


def test_bad_config_names_the_key_and_the_fix():
    spec = registry.get_method("dmtjepa")
    with pytest.raises(ConfigError, match=r"dmt.window / dmt.top_k: top_k=9 .*top_k <= 8"):
        spec.load_config("demo", overrides=["dmt.top_k=9"])
    with pytest.raises(ConfigError, match=r"dmt.window=9: a 9x9 neighbour window does not fit the 7x7 token grid"):
        spec.load_config("demo", overrides=["dmt.window=9"])
    with pytest.raises(ConfigError, match="dmt.query=image_mean"):
        spec.load_config("demo", overrides=["dmt.query_batch_mixup=true"])
    with pytest.raises(ConfigError, match="dmt.num_heads=3 does not divide the encoder width 128"):
        spec.load_config("demo", overrides=["dmt.num_heads=3"])
    with pytest.raises(ConfigError, match="dmt.query"):
        spec.load_config("demo", overrides=["dmt.query=patch_mean"])


# ---------------------------------------------------------------------------------------------
# the step and its hooks


def test_hooks_train_the_head_and_update_its_ema_twin():
    torch.manual_seed(0)
    cfg = _tiny_cfg()
    model = build_model(cfg)
    assert list(model.trainable_modules()) == ["encoder", "predictor", "head"]
    assert list(model.target_modules()) == ["target_encoder", "target_head"]
    assert model.eval_encoder() is model.target_encoder.module
    out = model(_batch(cfg))
    assert {"loss", "target_std", "target_std_min"} <= set(out) and torch.isfinite(out["loss"])
    out["loss"].backward()
    for name in ("encoder", "predictor", "head"):
        grads = [p.grad for p in getattr(model, name).parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), name
        assert any(float(g.abs().sum()) > 0 for g in grads), name
    assert all(p.grad is None for t in model.target_modules().values() for p in t.parameters())
    # EMA with m = 0.25 after moving the online head: target = 0.25 target + 0.75 online
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in model.target_head.module.state_dict().items()}
    model.update_target(0.25)
    for k, v in model.head.state_dict().items():
        assert torch.allclose(model.target_head.module.state_dict()[k], 0.25 * before[k] + 0.75 * v), k


def test_targets_are_the_ema_head_over_the_token_grid():
    torch.manual_seed(0)
    cfg = _tiny_cfg()
    model = build_model(cfg)
    batch = _batch(cfg)
    with torch.no_grad():
        h = model.targets(batch["images"], batch["masks_pred"], 1)
        z = torch.nn.functional.layer_norm(model.target_encoder(batch["images"]), (32,))
        full = model.target_head(z, grid=(7, 7))
        # target block j of image b = the aggregated token masks_pred[j][b, t]
        for j, m in enumerate(batch["masks_pred"]):
            for b in range(4):
                assert torch.equal(h[j * 4 + b], full[b, m[b]])
        # a non-square image: the grid comes from its own height and width
        rect = torch.randn(2, 1, 28, 20)
        assert model.target_head(z[:2, :35], grid=model.token_grid(rect)).shape == (2, 35, 32)
    # the targets come from the EMA head: moving the online head alone changes nothing
    with torch.no_grad():
        for p in model.head.parameters():
            p.mul_(3.0)
        assert torch.equal(model.targets(batch["images"], batch["masks_pred"], 1), h)
        for p in model.target_head.parameters():
            p.mul_(3.0)
        assert not torch.allclose(model.targets(batch["images"], batch["masks_pred"], 1), h)


def test_released_flags_change_the_step():
    torch.manual_seed(0)
    cfg = _tiny_cfg()
    batch = _batch(cfg)
    losses = {}
    for name, flags in {"paper": {}, "released": dict(query="image_mean", query_batch_mixup=True, wrap=True)}.items():
        c = _tiny_cfg(**flags)
        torch.manual_seed(1)
        m = build_model(c)
        assert (m.target_head.module.query, m.target_head.module.wrap) == (c.dmt.query, c.dmt.wrap)
        with torch.no_grad():
            losses[name] = float(m(batch)["loss"])
    assert losses["paper"] != losses["released"]


# ---------------------------------------------------------------------------------------------
# runs and checkpoints


def test_pretrain_writes_the_heads_and_the_target_std_column(tmp_path):
    run = tmp_path / "r"
    summary = pretrain("dmtjepa", overrides=TINY + ["optim.max_steps=4", "train.log_every=2",
                                                     "train.checkpoint_every=2"], run_dir=run)
    assert summary["steps"] == 4 and math.isfinite(summary["final_loss"])
    latest = _load(run / "checkpoints" / "latest.pt")
    keys = latest["model"].keys()
    assert {k.split(".")[0] for k in keys} == {"encoder", "predictor", "target_encoder", "head", "target_head"}
    assert "head.blocks.1.attn.q.weight" in keys and "target_head.module.norm.weight" in keys
    assert latest["config"]["method"] == "dmtjepa" and latest["config"]["dmt"]["top_k"] == 4
    rows = _rows(run / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [2, 4]
    for r in rows:  # per-dimension std of the targets: finite and positive (0 would be a collapse)
        assert 0 < float(r["target_std_min"]) <= float(r["target_std"]) < 10
    # the heads round-trip: the loaded model equals the trained one, heads included
    loaded = load_run(run)
    model = loaded["model"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, latest["model"][k]), k
    cfg = loaded["cfg"]
    batch = _batch(cfg)
    fresh = build_model(cfg)
    fresh.load_state_dict(latest["model"])
    with torch.no_grad():
        assert torch.equal(fresh(batch)["loss"], model(batch)["loss"])
    # the online head trained, the target head followed
    torch.manual_seed(cfg.train.seed)  # the run's initial weights: pretrain seeds, then builds
    first = build_model(cfg)
    w = "blocks.0.attn.q.weight"
    assert not torch.equal(model.head.state_dict()[w], first.head.state_dict()[w])
    moved_online = (model.head.state_dict()[w] - first.head.state_dict()[w]).norm()
    moved_target = (model.target_head.module.state_dict()[w] - first.target_head.module.state_dict()[w]).norm()
    assert 0 < moved_target < 0.1 * moved_online


def test_a_checkpoint_without_the_heads_is_refused_with_the_fix(tmp_path):
    torch.manual_seed(0)
    cfg = _tiny_cfg()
    model = build_model(cfg)
    sd = {k: v for k, v in build_model(cfg).state_dict().items() if not k.startswith(HEADS)}
    with pytest.raises(CheckpointError, match=r"no DMT-JEPA head weights \(head\.\*, target_head\.\*\).*released "
                                              r"DMT-JEPA code.*drops both heads.*strict=False.*load_without_heads"):
        model.load_state_dict(sd)
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    missing = load_without_heads(model, sd)
    assert missing and all(k.startswith(HEADS) for k in missing)
    assert torch.equal(model.encoder.blocks[0].attn.qkv.weight, sd["encoder.blocks.0.attn.qkv.weight"])
    for k, v in model.head.state_dict().items():  # heads as initialised, the twin equal to the online head
        assert torch.equal(v, head_before[k]) and torch.equal(model.target_head.module.state_dict()[k], v)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_without_heads(model, {k: v for k, v in sd.items() if not k.startswith("predictor.")})
    run = tmp_path / "r"
    pretrain("dmtjepa", overrides=TINY + ["optim.max_steps=1"], run_dir=run)
    ck = _load(run / "checkpoints" / "latest.pt")
    ck["model"] = {k: v for k, v in ck["model"].items() if not k.startswith(HEADS)}
    (run / "checkpoints" / "latest.pt").unlink()
    torch.save(ck, run / "checkpoints" / "latest.pt")
    (run / "checkpoints" / "step-1.pt").unlink()
    # a run whose checkpoint lost its heads: `jepa eval` and `--resume` give the method's fix
    with pytest.raises(CheckpointError, match=r"no DMT-JEPA head weights.*load_without_heads"):
        load_run(run / "checkpoints" / "latest.pt")
    with pytest.raises(CheckpointError, match=r"no DMT-JEPA head weights.*load_without_heads"):
        pretrain("dmtjepa", overrides=TINY + ["optim.max_steps=2"], run_dir=run, resume=True)


RESUME = TINY + ["train.checkpoint_every=2", "train.log_every=1", "train.seed=3"]


@pytest.mark.slow
@pytest.mark.fault
def test_resume_after_a_kill_is_exact(tmp_path):
    """As test_image_pretrain_run.py: stopped after step 5 with step 4 the newest checkpoint (a kill
    before the step-5 save), resumed to 8 = the uninterrupted run, heads and their moments included."""
    n = 8
    full = pretrain("dmtjepa", overrides=RESUME + [f"optim.max_steps={n}"], run_dir=tmp_path / "full")
    run = tmp_path / "stopped"
    pretrain("dmtjepa", overrides=RESUME + ["optim.max_steps=5"], run_dir=run)
    ck = run / "checkpoints"
    (ck / "latest.pt").unlink()
    (ck / "step-5.pt").unlink()
    resumed = pretrain("dmtjepa", overrides=RESUME + [f"optim.max_steps={n}"], run_dir=run, resume=True)
    assert resumed["steps"] == n and resumed["final_loss"] == full["final_loss"]
    a, b = _load(tmp_path / "full" / "checkpoints" / "latest.pt"), _load(ck / "latest.pt")
    assert a["model"].keys() == b["model"].keys()
    assert any(k.startswith("head.") for k in a["model"]) and any(k.startswith("target_head.") for k in a["model"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys() and len(sa) == sum(
        1 for p in build_model(_tiny_cfg()).parameters() if p.requires_grad)  # head moments too
    for i in sa:
        assert torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) and torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"])
    rows_a, rows_b = _rows(tmp_path / "full" / "metrics.csv"), _rows(run / "metrics.csv")
    assert [int(r["step"]) for r in rows_b] == list(range(1, n + 1))
    for ra, rb in zip(rows_a, rows_b):
        for key in ("loss", "lr", "momentum", "target_std", "target_std_min"):
            assert ra[key] == rb[key], (ra["step"], key)


@pytest.mark.slow
@pytest.mark.fault
def test_sigkill_mid_run_then_resume_is_exact(tmp_path):
    """A real kill: `jepa pretrain dmtjepa` in a subprocess, SIGKILLed once its first checkpoint
    is on disk (wherever it then is), resumed here: the same weights as an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    n = 10
    args = RESUME + [f"optim.max_steps={n}"]
    full = pretrain("dmtjepa", overrides=args, run_dir=tmp_path / "full")
    run = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "jepa_core.cli", "pretrain", "dmtjepa", *args, "--run-dir", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 240
    while not (run / "checkpoints" / "step-2.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert (run / "checkpoints" / "step-2.pt").exists() or (run / "checkpoints" / "latest.pt").exists()
    resumed = pretrain("dmtjepa", overrides=args, run_dir=run, resume=True)
    assert resumed["steps"] == n and resumed["final_loss"] == full["final_loss"]
    a, b = _load(tmp_path / "full" / "checkpoints" / "latest.pt"), _load(run / "checkpoints" / "latest.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [int(r["step"]) for r in _rows(run / "metrics.csv")] == list(range(1, n + 1))


@pytest.mark.slow
def test_demo_preset_trains_without_collapse(tmp_path):
    """A dozen steps of the real demo preset (128 images a step): the loss falls and stays finite,
    the targets keep their spread."""
    run = tmp_path / "demo"
    pretrain("dmtjepa", overrides=["optim.max_steps=12", "train.log_every=4", "eval.enabled=false",
                                   "train.progress=false", "train.device=cpu"], run_dir=run)
    rows = _rows(run / "metrics.csv")
    losses = [float(r["loss"]) for r in rows]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    assert all(float(r["target_std"]) > 0.1 and float(r["target_std_min"]) > 0.01 for r in rows)


# ---------------------------------------------------------------------------------------------
# bench


def test_bench_case_is_registered_beside_ijepa():
    from jepa_core import benchmark
    from jepa_image import bench

    eps = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["entry-points"]
    assert metadata.EntryPoint("dmtjepa", eps["jepa.bench"]["dmtjepa"], "jepa.bench").load() is bench.DMT_CASES
    assert [c.name for c in bench.DMT_CASES] == ["steps"]  # runs with `jepa bench --cases steps`
    ctx = benchmark.Context(repeats=1, warmup=0, log=lambda s: None, methods=("ijepa",))
    assert bench.case_dmt_steps(ctx) == []  # only when DMT-JEPA is asked for
    ijepa_model, _ = bench.build_model("tiny")
    model, _ = bench.build_dmt_model("tiny", ijepa_model)
    assert torch.equal(model.encoder.blocks[0].attn.qkv.weight, ijepa_model.encoder.blocks[0].attn.qkv.weight)


@pytest.mark.slow
def test_bench_steps_case_tiny():
    from jepa_core import benchmark
    from jepa_image import bench

    rows = bench.case_dmt_steps(benchmark.Context(repeats=1, warmup=0, log=lambda s: None, sizes=("tiny",)))
    assert [r.name.split(",")[0] for r in rows] == [
        "DMT-JEPA train step vs I-JEPA (official column: I-JEPA", "DMT-JEPA targets vs I-JEPA targets (no grad)"]
    assert rows[0].ours > 0 and rows[0].theirs > 0 and "overhead" in rows[0].note
