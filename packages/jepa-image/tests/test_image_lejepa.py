"""`jepa pretrain lejepa`: the spec and presets, the multi-crop views (a function of (seed, step)
and of the sample's slot), the loss against a hand computation, lambda = 0 without a SIGReg
gradient, a few training steps, and config errors."""

from __future__ import annotations

import csv
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import torch
from jepa_core import registry
from jepa_core.config import ConfigError
from jepa_core.data import Stamped
from jepa_core.run import pretrain
from jepa_core.sigreg import isotropy_null_value, sigreg_loss, slice_directions
from jepa_image import lejepa
from PIL import Image

TINY = [
    "model.encoder=custom", "model.embed_dim=32", "model.depth=2", "model.num_heads=2", "model.patch_size=4",
    "model.proj_hidden_dim=32", "model.proj_dim=16", "views.num_local=2", "views.local_size=12",
    "loss.num_slices=64", "data.batch_size=16", "data.num_workers=0", "data.pin_memory=false",
    "train.device=cpu", "train.num_threads=1", "train.progress=false", "eval.enabled=false",
]


def _cfg(*overrides: str):
    return registry.get_method("lejepa").load_config("demo", overrides=TINY + list(overrides))


def _samples(dataset, step: int, idx, slots=None):
    slots = slots if slots is not None else [None] * len(idx)
    return [Stamped(dataset[i], step, s) for i, s in zip(idx, slots)]


def _batch(cfg, step: int = 3, b: int = 8) -> dict:
    dataset, collate = lejepa.build_train_data(cfg)
    return collate(_samples(dataset, step, range(b)))


# ---------------------------------------------------------------------------------------------
# spec and presets


def test_registered_through_the_entry_point_with_presets():
    eps = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["entry-points"]
    assert metadata.EntryPoint("lejepa", eps["jepa.methods"]["lejepa"], "jepa.methods").load() is lejepa.SPEC
    spec = registry.get_method("lejepa")
    assert {"demo", "in1k_vitl14"} <= set(spec.preset_paths())
    paper = spec.load_config("in1k_vitl14")
    # the code README's "GOTO" setup: 2 x 224 + 6 x 98 views, lambda 0.05, AdamW 5e-4 / wd 0.05
    assert (paper.views.num_global, paper.views.num_local) == (2, 6)
    assert (paper.data.image_size, paper.views.local_size) == (224, 98)
    assert tuple(paper.data.crop_scale) == (0.3, 1.0) and tuple(paper.views.local_scale) == (0.05, 0.3)
    assert paper.loss.lamb == 0.05 and paper.optim.lr == 5e-4 and paper.optim.weight_decay == 0.05
    assert paper.model.encoder == "vit_large" and paper.model.patch_size == 14
    demo = spec.load_config("demo")
    assert demo.data.dataset == "fashion_mnist_demo" and demo.model.in_chans == 1


def test_model_has_no_target_and_trains_encoder_and_projector():
    model = lejepa.build_model(_cfg())
    assert model.target_modules() == {}
    assert list(model.trainable_modules()) == ["encoder", "projector"]
    assert model.eval_encoder() is model.encoder


# ---------------------------------------------------------------------------------------------
# views


def test_views_have_the_configured_shapes_and_are_a_function_of_seed_and_step():
    cfg = _cfg("views.num_local=3")
    b = _batch(cfg, step=3)
    assert b["images"].shape == (8, 2, 1, 28, 28) and b["local_images"].shape == (8, 3, 1, 12, 12)
    assert b["step"] == 3 and b["labels"].shape == (8,)
    again = _batch(cfg, step=3)  # a new collator, the same (seed, step): the same views
    assert torch.equal(b["images"], again["images"]) and torch.equal(b["local_images"], again["local_images"])
    other = _batch(cfg, step=4)
    assert not torch.allclose(b["images"], other["images"])
    reseeded = _batch(_cfg("views.num_local=3", "train.seed=1"), step=3)
    assert not torch.allclose(b["images"], reseeded["images"])
    # the two global views of an image differ (own crop, flip and photometric draws)
    assert not torch.allclose(b["images"][:, 0], b["images"][:, 1])


def test_views_do_not_depend_on_the_number_of_processes():
    """Two processes x 4 samples get exactly the views of one process x 8 (global draw scope)."""
    cfg = _cfg()
    dataset, one = lejepa.build_train_data(cfg)
    whole = one(_samples(dataset, 5, range(8), slots=range(8)))
    for rank in (0, 1):
        _, collate = lejepa.build_train_data(cfg, rank=rank, world_size=2)
        slots = [j * 2 + rank for j in range(4)]
        part = collate(_samples(dataset, 5, slots, slots=slots))
        # equal up to float summation order (the blur runs at the batch's largest kernel)
        for key in ("images", "local_images"):
            assert torch.allclose(part[key], whole[key][slots], atol=1e-5), (key, rank)


def test_image_folder_views(tmp_path):
    """Image folders: per-sample crops and flips (seeded by the Trainer per sample), the
    photometric ops on the batch; RGB views of the configured sizes."""
    for c in ("a", "b"):
        (tmp_path / "train" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray((torch.rand(40, 36, 3) * 255).byte().numpy()).save(tmp_path / "train" / c / f"{i}.png")
    cfg = registry.get_method("lejepa").load_config("demo", overrides=TINY + [
        "data.dataset=imagefolder", f"data.root={tmp_path}", "model.in_chans=3", "data.image_size=24",
        "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]", "views.local_size=8"])
    dataset, collate = lejepa.build_train_data(cfg)
    torch.manual_seed(0)
    b = collate(_samples(dataset, 0, range(6)))
    assert b["images"].shape == (6, 2, 3, 24, 24) and b["local_images"].shape == (6, 2, 3, 8, 8)
    assert torch.isfinite(b["images"]).all()
    out = lejepa.build_model(cfg)(b)
    assert torch.isfinite(out["loss"])


# ---------------------------------------------------------------------------------------------
# the loss


def test_loss_equals_a_hand_computation():
    cfg = _cfg("loss.lamb=0.3")
    torch.manual_seed(0)
    model = lejepa.build_model(cfg)
    b = _batch(cfg, step=7)
    out = model(b)
    with torch.no_grad():
        # each view through the encoder on its own, its tokens averaged
        views = [b["images"][:, v] for v in range(2)] + [b["local_images"][:, v] for v in range(2)]
        emb = torch.stack([model.encoder(x).mean(1) for x in views])  # [V, B, D]
        z = model.projector(emb.flatten(0, 1)).view(4, 8, -1)  # BatchNorm over all views' rows
        centres = (z[0] + z[1]) / 2
        pred = sum(((z[v] - centres) ** 2).mean() for v in range(4)) / 4
        a = slice_directions(16, 64, seed=cfg.train.seed, step=7)
        sig = sum(sigreg_loss(z[v], a) for v in range(4)) / 4
        expected = 0.7 * pred + 0.3 * sig
    assert torch.allclose(out["pred_loss"], pred, rtol=1e-5, atol=1e-6)
    assert torch.allclose(out["sigreg"], sig, rtol=1e-5, atol=1e-6)
    assert torch.allclose(out["loss"].detach(), expected, rtol=1e-5, atol=1e-6)
    # the centre is that of the global views only: all views' mean gives another number
    wrong = ((z - z.mean(0)) ** 2).mean()
    assert not torch.allclose(wrong, pred, rtol=1e-3)


def test_slices_follow_the_batch_step():
    cfg = _cfg("loss.lamb=0.5")
    model = lejepa.build_model(cfg)
    b = _batch(cfg, step=2)
    s1 = model(b)["sigreg"]
    assert torch.equal(model(b)["sigreg"], s1)  # same step: same slices, same value
    assert not torch.equal(model({**b, "step": 3})["sigreg"], s1)


def test_sigreg_of_isotropic_projections_is_the_null_value():
    """The loss's SIGReg term on N(0, I) 'projections' sits at the null value (~1.06), on
    collapsed ones far above it."""
    model = lejepa.LeJEPA(torch.nn.Identity(), torch.nn.Identity(), lamb=0.5)
    g = torch.Generator().manual_seed(0)
    iso = model.losses(torch.randn(2, 4096, 32, generator=g), 2, step=0)["sigreg"]
    assert abs(float(iso) - isotropy_null_value()) < 0.1
    collapsed = model.losses(torch.zeros(2, 4096, 32), 2, step=0)
    assert float(collapsed["sigreg"]) > 100 and float(collapsed["pred_loss"]) == 0.0


def test_lambda_zero_has_no_sigreg_gradient():
    cfg0, cfg1 = _cfg("loss.lamb=0"), _cfg("loss.lamb=0.5")
    b = _batch(cfg0, step=1)

    def grads(cfg, key="loss"):
        torch.manual_seed(0)
        model = lejepa.build_model(cfg)
        out = model(b)
        out[key].backward() if out[key].requires_grad else None
        return out, [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]

    out0, g0 = grads(cfg0)
    assert not out0["sigreg"].requires_grad and float(out0["sigreg"]) > 0  # logged only
    assert torch.equal(out0["loss"].detach(), out0["pred_loss"])
    # the gradient is exactly that of the prediction loss alone
    torch.manual_seed(0)
    model = lejepa.build_model(cfg0)
    z = model.project(b)
    pred = (z - z[:2].mean(0)).square().mean()
    pred.backward()
    for p, g in zip(model.parameters(), g0):
        assert torch.allclose(p.grad if p.grad is not None else torch.zeros_like(p), g, atol=1e-7)
    # lambda > 0 does add a SIGReg gradient
    _, g1 = grads(cfg1)
    diffs = [(2 * a - b_).abs().max() for a, b_ in zip(g1, g0)]  # (1 - 0.5) * pred gradient = g0 / 2
    assert max(float(d) for d in diffs) > 1e-4


def test_a_few_steps_train_and_log_the_terms(tmp_path):
    summary = pretrain("lejepa", overrides=TINY + ["optim.max_steps=6", "train.log_every=2", "optim.warmup=0",
                                                   "optim.start_lr=1e-3"], run_dir=tmp_path / "run")
    assert summary["steps"] == 6
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {"pred_loss", "sigreg", "proj_std"} <= set(rows[0])
    assert all(torch.isfinite(torch.tensor(float(r["loss"]))) for r in rows)
    assert "momentum" not in rows[0]  # no EMA target
    ck = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert any(k.startswith("projector.") for k in ck["model"]) and not any("target" in k for k in ck["model"])


def test_one_batch_repeated_lowers_the_loss():
    cfg = _cfg("loss.lamb=0.05")
    torch.manual_seed(0)
    model = lejepa.build_model(cfg)
    b = _batch(cfg, step=0, b=16)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        out = model(b)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < 0.7 * losses[0]


# ---------------------------------------------------------------------------------------------
# config errors


@pytest.mark.parametrize("override, words", [
    ("views.local_size=10", "views.local_size=10 is not a multiple of model.patch_size=4"),
    ("data.image_size=30", "data.image_size=30 is not a multiple"),
    ("loss.lamb=1.5", "loss.lamb must be in [0, 1]"),
    ("loss.quadrature=simpson", "loss.quadrature"),
    ("views.num_global=0", "views.num_global must be >= 1"),
    ("views.local_scale=[0.3,0.1]", "views.local_scale is a (low, high) range"),
    ("model.num_heads=3", "model.num_heads=3 does not divide model.embed_dim=32"),
    ("model.proj_layers=0", "model.proj_layers must be >= 1"),
])
def test_config_errors_name_the_key(override, words):
    with pytest.raises(ConfigError) as e:
        _cfg(override)
    assert words in str(e.value)
