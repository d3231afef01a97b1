"""I-JEPA's options beyond the official code: ``model.sigreg_weight`` (LeJEPA's SIGReg on the
context encoder's embeddings) and ``model.ema=false`` (targets from the online encoder under
stop-gradient). The defaults leave the official loss unchanged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from jepa_core import registry
from jepa_core.config import ConfigError
from jepa_core.data import Stamped
from jepa_core.masks import apply_masks
from jepa_core.nn import repeat_interleave_batch
from jepa_core.sigreg import sigreg_loss, slice_directions
from jepa_image.ijepa import SPEC, build_model, build_train_data

TINY = [
    "model.encoder=custom", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
    "model.pred_depth=1", "model.pred_emb_dim=16", "model.patch_size=4", "model.sigreg_slices=32",
]


def _setup(*overrides: str, step: int = 4, b: int = 8):
    cfg = SPEC.load_config("demo", overrides=TINY + list(overrides))
    torch.manual_seed(0)
    model = build_model(cfg)
    dataset, collate = build_train_data(cfg)
    batch = collate([Stamped(dataset[i], step) for i in range(b)])
    return cfg, model, batch


def test_default_is_the_official_loss_and_the_collator_adds_nothing():
    cfg, model, batch = _setup()
    assert cfg.model.sigreg_weight == 0.0 and cfg.model.ema is True
    assert model.sigreg is None and "step" not in batch
    out = model(batch)
    assert set(out) == {"loss", "context_tokens", "target_tokens"}
    with torch.no_grad():
        images, me, mp = batch["images"], batch["masks_enc"], batch["masks_pred"]
        h = F.layer_norm(model.target_encoder(images), (32,))
        h = repeat_interleave_batch(apply_masks(h, mp), images.shape[0], repeat=len(me))
        expected = F.smooth_l1_loss(model.predictor(model.encoder(images, me), me, mp), h)
    assert torch.allclose(out["loss"].detach(), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("on", ["pooled", "tokens"])
def test_sigreg_weight_adds_the_sigreg_term(on):
    _, base, base_batch = _setup()
    cfg, model, batch = _setup("model.sigreg_weight=0.25", f"model.sigreg_on={on}")
    assert batch["step"] == 4  # the collator stamps the step, which seeds the slices
    for key in ("images", "masks_enc", "masks_pred"):  # same batch as the default's
        a, b = batch[key], base_batch[key]
        assert all(torch.equal(x, y) for x, y in zip(a, b)) if isinstance(a, list) else torch.equal(a, b)
    out = model(batch)
    pred = base(base_batch)["loss"].detach()  # same weights (same seed), same batch
    with torch.no_grad():
        ctx = model.encoder(batch["images"], batch["masks_enc"])
        emb = ctx.mean(1) if on == "pooled" else ctx.flatten(0, 1)
        sig = sigreg_loss(emb, slice_directions(32, 32, seed=cfg.train.seed, step=4))
    assert torch.allclose(out["pred_loss"], pred, rtol=1e-6)
    assert torch.allclose(out["sigreg"], sig, rtol=1e-5)
    assert torch.allclose(out["loss"].detach(), 0.75 * pred + 0.25 * sig, rtol=1e-5)
    # the term has a gradient into the encoder
    model.zero_grad()
    out["loss"].backward()
    g_with = model.encoder.patch_embed.proj.weight.grad.clone()
    base.zero_grad()
    base(base_batch)["loss"].backward()
    assert not torch.allclose(g_with, 0.75 * base.encoder.patch_embed.proj.weight.grad, atol=1e-7)


def test_without_ema_the_encoder_makes_the_targets_under_stop_gradient():
    _, model, batch = _setup("model.ema=false")
    assert model.target_encoder is None and model.target_modules() == {}
    assert model.eval_encoder() is model.encoder
    assert not any(k.startswith("target_encoder") for k in model.state_dict())
    out = model(batch)
    with torch.no_grad():
        images, me, mp = batch["images"], batch["masks_enc"], batch["masks_pred"]
        h = F.layer_norm(model.encoder(images), (32,))
        h = repeat_interleave_batch(apply_masks(h, mp), images.shape[0], repeat=len(me))
        z = model.predictor(model.encoder(images, me), me, mp)
    assert torch.allclose(out["loss"].detach(), F.smooth_l1_loss(z, h), rtol=1e-6)
    # stop-gradient: the gradient is that of the loss with the targets held constant
    out["loss"].backward()
    g = model.encoder.patch_embed.proj.weight.grad.clone()
    model.zero_grad()
    F.smooth_l1_loss(model.predictor(model.encoder(images, me), me, mp), h).backward()
    assert torch.allclose(g, model.encoder.patch_embed.proj.weight.grad, atol=1e-7)


def test_sigreg_without_ema_trains(tmp_path):
    from jepa_core.run import pretrain

    summary = pretrain("ijepa", overrides=TINY + [
        "model.sigreg_weight=0.1", "model.ema=false", "optim.max_steps=3", "train.log_every=1", "eval.enabled=false",
        "data.batch_size=16", "train.device=cpu", "train.num_threads=1", "train.progress=false"],
        run_dir=tmp_path / "run")
    assert summary["steps"] == 3 and torch.isfinite(torch.tensor(summary["final_loss"]))
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"sigreg", "pred_loss"} <= set(header) and "momentum" not in header


@pytest.mark.parametrize("override, words", [
    ("model.sigreg_weight=1", "model.sigreg_weight must be in [0, 1)"),
    ("model.sigreg_weight=-0.1", "model.sigreg_weight must be in [0, 1)"),
    ("model.sigreg_slices=0", "model.sigreg_slices must be >= 1"),
])
def test_config_errors(override, words):
    with pytest.raises(ConfigError) as e:
        SPEC.load_config("demo", overrides=[override])
    assert words in str(e.value)


@pytest.mark.parametrize("method", ["dmtjepa", "iwm"])
def test_other_methods_refuse_the_ijepa_only_options(method):
    for override in ("model.sigreg_weight=0.1", "model.ema=false"):
        with pytest.raises(ConfigError, match="options of the ijepa method"):
            registry.get_method(method).load_config("demo", overrides=[override])
