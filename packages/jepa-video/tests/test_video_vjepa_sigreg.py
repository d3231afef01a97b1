"""V-JEPA's options beyond the official code: ``model.sigreg_weight`` (LeJEPA's SIGReg on the
context encoder's embeddings) and ``model.ema=false``. The defaults leave the loss unchanged."""

from __future__ import annotations

import pytest
import torch
from jepa_core.sigreg import sigreg_loss, slice_directions
from jepa_video.masks import MultiBlock3DMaskCollator
from jepa_video.vjepa import VJEPA2_SPEC, VJEPA_SPEC

torch.set_num_threads(1)

TINY = [
    "data.frames_per_clip=4", "data.crop_size=32", "data.batch_size=4", "data.num_workers=0",
    "model.encoder=custom", "model.embed_dim=24", "model.depth=2", "model.num_heads=2", "model.patch_size=8",
    "model.pred_depth=1", "model.pred_emb_dim=12", "model.pred_num_heads=2", "model.sigreg_slices=16",
]
SPECS = {"vjepa": VJEPA_SPEC, "vjepa2": VJEPA2_SPEC}


def _model(method: str, *extra: str):
    cfg = SPECS[method].load_config("demo", overrides=TINY + list(extra))
    torch.manual_seed(0)
    return SPECS[method].build_model(cfg), cfg


def _batch(cfg, step: int = 2) -> dict:
    d, m = cfg.data, cfg.model
    col = MultiBlock3DMaskCollator(cfg.mask, d.crop_size, d.frames_per_clip, m.patch_size, m.tubelet_size, seed=1)
    videos = torch.randn(3, 3, d.frames_per_clip, d.crop_size, d.crop_size, generator=torch.Generator().manual_seed(0))
    b = col([(v, 0) for v in videos])
    b["step"] = step
    return b


@pytest.mark.parametrize("method", ["vjepa", "vjepa2"])
@pytest.mark.parametrize("on", ["pooled", "tokens"])
def test_default_unchanged_and_weight_adds_sigreg(method, on):
    base, cfg = _model(method)
    assert cfg.model.sigreg_weight == 0.0 and base.sigreg is None
    batch = _batch(cfg)
    out0 = base(batch)
    assert "sigreg" not in out0
    model, cfg_w = _model(method, "model.sigreg_weight=0.2", f"model.sigreg_on={on}")
    model.load_state_dict(base.state_dict())
    out = model(batch)
    assert torch.allclose(out["pred_loss"], out0["loss"].detach(), rtol=1e-6)
    with torch.no_grad():
        ctx = [model.encoder(batch["videos"], m) for m in batch["masks_enc"]]
        emb = torch.stack([z.mean(1) for z in ctx]) if on == "pooled" else torch.cat([z.flatten(0, 1) for z in ctx])
        sig = sigreg_loss(emb, slice_directions(24, 16, seed=cfg_w.train.seed, step=2))
    assert torch.allclose(out["sigreg"], sig, rtol=1e-4)
    assert torch.allclose(out["loss"].detach(), 0.8 * out0["loss"].detach() + 0.2 * sig, rtol=1e-5)


def test_without_ema_there_is_no_target():
    model, cfg = _model("vjepa", "model.ema=false", "model.sigreg_weight=0.1")
    assert model.target_encoder is None and model.target_modules() == {}
    assert model.eval_encoder() is model.encoder
    out = model(_batch(cfg))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model.encoder.patch_embed.proj.weight.grad.abs().sum() > 0
