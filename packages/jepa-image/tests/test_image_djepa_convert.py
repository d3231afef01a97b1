"""The ``djepa`` converter on a synthetic checkpoint written in the released layout
(djepa:models/djepa.py names; MAR's SimpleMLPAdaLN names for the denoiser, mar:models/diffloss.py;
``{"model", "model_ema", "optimizer", "epoch", "args"}`` as djepa:main_djepa.py saves)."""

from __future__ import annotations

import pytest
import torch
from jepa_core.cli import main as cli
from jepa_core.config import to_dict
from jepa_core.generative import generate_tokens
from jepa_core.pretrained import PretrainedError, convert, get_converter
from jepa_core.run import load_run
from jepa_image import djepa, djepa_convert

# our denoiser names -> the released (MAR) ones, written out literally
MAR_NAMES = [
    ("diffloss.head.time_embed.mlp.", "diffloss.net.time_embed.mlp."),
    ("diffloss.head.cond_embed.", "diffloss.net.cond_embed."),
    ("diffloss.head.input_proj.", "diffloss.net.input_proj."),
    ("diffloss.head.final_layer.linear.", "diffloss.net.final_layer.linear."),
    ("diffloss.head.final_layer.modulation.1.", "diffloss.net.final_layer.adaLN_modulation.1."),
]


def _released_name(k: str) -> str:
    for a, b in MAR_NAMES:
        if k.startswith(a):
            return b + k[len(a):]
    if k.startswith("diffloss.head.blocks."):
        i, rest = k[len("diffloss.head.blocks."):].split(".", 1)
        rest = rest.replace("norm.", "in_ln.", 1).replace("modulation.1.", "adaLN_modulation.1.", 1)
        return f"diffloss.net.res_blocks.{i}.{rest}"
    return k


def _tiny_cfg(**model):
    cfg = djepa.SPEC.load_config("b", overrides=[
        "model.embed_dim=32", "model.depth=2", "model.num_heads=4", "model.decoder_embed_dim=32",
        "model.decoder_depth=1", "model.decoder_num_heads=4", "model.head_width=24", "model.head_depth=2",
        "model.buffer_size=3", "data.num_classes=7", "data.image_size=64", "model.sample_steps=3",
        "train.device=cpu", *[f"model.{k}={v}" for k, v in model.items()]])
    return cfg


def _released_file(path, cfg, seed=0, compiled=False):
    torch.manual_seed(seed)
    net = djepa.DJEPANet(cfg.model, djepa.grid_side(cfg) ** 2, djepa.token_dim(cfg), cfg.data.num_classes)
    ema = djepa.DJEPANet(cfg.model, djepa.grid_side(cfg) ** 2, djepa.token_dim(cfg), cfg.data.num_classes)
    pre = "_orig_mod." if compiled else ""
    model = {pre + _released_name(k): v for k, v in net.state_dict().items()}
    model_ema = {pre + _released_name(k): v for k, v in ema.state_dict().items()}
    assert pre + "diffloss.net.res_blocks.1.in_ln.weight" in model
    torch.save({"model": model, "model_ema": model_ema, "optimizer": {}, "epoch": 3, "args": {"ema_rate": 0.9999}},
               path)
    return net, ema


@pytest.mark.parametrize("compiled", [False, True])
def test_released_layout_converts_to_a_run_checkpoint_that_samples(tmp_path, compiled):
    cfg = _tiny_cfg(num_heads=4)
    net, ema = _released_file(tmp_path / "released.pth", cfg, compiled=compiled)
    info = convert(tmp_path / "released.pth", tmp_path / "ours.pt", method="djepa", num_heads=4, pred_num_heads=4)
    assert info.arch["depth"] == 2 and info.arch["classes"] == 7 and info.arch["tokens"] == 16
    run = load_run(tmp_path / "ours.pt")
    model = run["model"]
    for k, v in net.state_dict().items():
        assert torch.equal(model.net.state_dict()[k], v), k
    for k, v in ema.state_dict().items():
        assert torch.equal(model.ema.module.state_dict()[k], v), k
    c = run["cfg"]
    assert (c.model.head, c.model.qk_norm, c.model.buffer_size, c.model.jepa_weight) == ("gauss", True, 3, 1.0)
    assert (c.tokenizer.kind, c.tokenizer.scale, c.data.image_size) == ("vae", 0.2325, 64)
    # the EMA copy samples (tokens only: the VAE is not needed for them)
    with torch.no_grad():
        tokens = generate_tokens(
            lambda t, k: model.ema.module.features(t, ~k, model.ema.module.class_embedding(torch.tensor([1, 2]))),
            model.ema.module.diffloss.sample, 16, 16, 4, 2, generator=torch.Generator().manual_seed(0))
    assert tokens.shape == (2, 16, 16) and torch.isfinite(tokens).all()


def test_round_trip_to_the_released_layout_is_exact(tmp_path):
    cfg = _tiny_cfg(head="flow", jepa_weight=0)
    _released_file(tmp_path / "released.pth", cfg)
    convert(tmp_path / "released.pth", tmp_path / "ours.pt", method="djepa", num_heads=4, pred_num_heads=4)
    convert(tmp_path / "ours.pt", tmp_path / "back.pth", to="official")  # the file records djepa
    a = torch.load(tmp_path / "released.pth", weights_only=True)
    b = torch.load(tmp_path / "back.pth", weights_only=True)
    assert set(a["model"]) == set(b["model"]) and "jepaloss.pred.fc1.weight" not in a["model"]
    for part in ("model", "model_ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), k
    assert load_run(tmp_path / "ours.pt")["cfg"].model.head == "flow"


def test_safetensors_output_and_cli(tmp_path, capsys):
    cfg = _tiny_cfg()
    _released_file(tmp_path / "r.pth", cfg)
    assert cli(["convert", str(tmp_path / "r.pth"), str(tmp_path / "w.safetensors"), "--to", "safetensors",
                "--method", "djepa", "--num-heads", "4", "--pred-num-heads", "4"]) == 0
    assert "djepa" in capsys.readouterr().out
    convert(tmp_path / "w.safetensors", tmp_path / "w.pt")
    assert to_dict(load_run(tmp_path / "w.pt")["cfg"])["model"]["embed_dim"] == 32


def test_unknown_width_needs_head_counts_and_foreign_files_are_refused(tmp_path):
    cfg = _tiny_cfg()
    _released_file(tmp_path / "r.pth", cfg)
    with pytest.raises(PretrainedError, match="--num-heads"):
        convert(tmp_path / "r.pth", tmp_path / "o.pt", method="djepa")
    torch.save({"model": {"encoder.weight": torch.zeros(2)}}, tmp_path / "x.pth")
    with pytest.raises(PretrainedError, match="not a D-JEPA"):
        convert(tmp_path / "x.pth", tmp_path / "o.pt", method="djepa")


def test_released_b_size_is_recognised_without_hints():
    with torch.device("meta"):
        cfg = djepa.SPEC.load_config("b")
        net = djepa.DJEPANet(cfg.model, 256, 16, 1000)
    sd = djepa_convert.released_to_ours({_released_name(k): v for k, v in net.state_dict().items()})
    inferred = djepa_convert.infer_config(sd)
    assert to_dict(inferred)["model"] == to_dict(cfg)["model"]
    assert get_converter("djepa").package == "jepa-image"


def test_the_released_layout_is_recognised_without_method(tmp_path):
    """The released file records no method and matches none of the generic layouts; the D-JEPA
    converter's match function still claims it, so `jepa convert` needs no --method."""
    cfg = _tiny_cfg(num_heads=4)
    net, _ = _released_file(tmp_path / "released.pth", cfg)
    info = convert(tmp_path / "released.pth", tmp_path / "ours.pt", num_heads=4, pred_num_heads=4)
    assert info.method == "djepa"
    model = load_run(tmp_path / "ours.pt")["model"]
    assert all(torch.equal(model.net.state_dict()[k], v) for k, v in net.state_dict().items())
