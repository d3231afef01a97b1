"""Official V-JEPA and V-JEPA 2 checkpoints load with numerical parity (issue #5).

The fixtures were made by Meta's official code (scripts/make_pretrained_fixtures.py imports it
from checkouts of facebookresearch/jepa and facebookresearch/vjepa2): 4-frame 32 px clips,
tubelet 2, patch 8 (2x4x4 = 32 tokens), a 64-wide 2-deep encoder with 4 heads, a 48-wide 2-deep
predictor (V-JEPA: 4 heads, 2 mask tokens, 3-D sin-cos with uniform_power, whose 2*ceil(64/6)=22
channels per axis are cut to 64; V-JEPA 2: 2 heads, 10 mask tokens, 3-D RoPE with the official
tiled frequencies, head_dim 16 -> 4 channels per axis + 4 untouched), every tensor perturbed,
saved in the official layout (``module.backbone.`` keys) with two mask configurations and the
official outputs. ``vjepa2_tiny_hf`` is the same encoder + predictor in the Hugging Face layout;
transformers' ``VJEPA2Model`` reproduced the official outputs exactly when it was made.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from jepa_core import pretrained as P
from jepa_core.cli import main as jepa_main
from jepa_core.masks import apply_masks
from jepa_core.nn.pos_embed import sincos_3d
from jepa_core.pretrained import PretrainedError
from jepa_core.testing import official_layout
from jepa_video import from_pretrained, load_pretrained
from jepa_video.pretrained import _heads

FIX = Path(__file__).parent / "fixtures"
VJEPA = FIX / "vjepa_tiny.pth.tar"
VJEPA2 = FIX / "vjepa2_tiny.pt"
HF = FIX / "vjepa2_tiny_hf"
ATOL = 1e-5
V1 = dict(num_heads=4)
V2 = dict(num_heads=4, pred_num_heads=2, img_size=32)


def _io(name):
    return torch.load(FIX / name, weights_only=True)


def _max(a, b) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("path, io_name, kw", [(VJEPA, "vjepa_tiny_io.pt", V1), (VJEPA2, "vjepa2_tiny_io.pt", V2)])
@torch.no_grad()
def test_encoder_and_predictor_match_the_official_outputs(path, io_name, kw):
    io = _io(io_name)
    enc, pred = from_pretrained(path, which="encoder", with_predictor=True, **kw)
    assert _max(enc(io["x"]), io["enc_full"]) < ATOL
    for i, (mc, mp) in enumerate(zip(io["masks_enc"], io["masks_pred"])):
        ctx = enc(io["x"], mc)
        assert _max(ctx, io["ctx"][i]) < ATOL
        # mask_index i: V-JEPA's mask token per mask configuration; V-JEPA 2 per clip-length group
        assert _max(pred(io["ctx"][i], mc, mp, mask_index=i), io["pred"][i]) < ATOL
    # The mask token really matters: the other index gives another answer.
    assert _max(pred(io["ctx"][0], io["masks_enc"][0], io["masks_pred"][0], mask_index=1), io["pred"][0]) > 1e-4
    tgt = from_pretrained(path, **kw)
    assert tgt.pretrained_info.which == "target_encoder"
    assert _max(tgt(io["x"]), io["target_full"]) < ATOL
    assert _max(io["target_full"], io["enc_full"]) > 1e-3


@torch.no_grad()
def test_vjepa2_encoder_reads_the_grid_from_the_input():
    # 6 frames at 24x40 (non-square), unlike the 4x32x32 the model was built for: the official
    # encoder (handle_nonsquare_inputs) takes RoPE positions from the input grid, and so do we.
    io = _io("vjepa2_tiny_io.pt")
    enc = from_pretrained(VJEPA2, which="encoder", **V2)
    assert io["x2"].shape == (1, 3, 6, 24, 40)
    assert _max(enc(io["x2"]), io["enc_x2"]) < ATOL


@torch.no_grad()
def test_rope_fix_tiling_is_a_different_model():
    io = _io("vjepa2_tiny_io.pt")
    enc = from_pretrained(VJEPA2, which="encoder", rope_fix_tiling=True, **V2)
    assert enc.pretrained_info.arch["rope_fix_tiling"] is True
    assert _max(enc(io["x"]), io["enc_full"]) > 1e-3  # the released weights need the tiled form


def test_architecture_comes_from_the_weights():
    v1 = load_pretrained(VJEPA, with_predictor=True, **V1).info
    assert (v1.method, v1.format) == ("vjepa", "official")
    assert {k: v1.arch[k] for k in ("img_size", "num_frames", "patch_size", "tubelet_size", "embed_dim", "depth",
                                    "use_rope", "uniform_power", "pred_embed_dim", "pred_depth", "pred_num_heads",
                                    "num_mask_tokens")} == dict(
        img_size=32, num_frames=4, patch_size=8, tubelet_size=2, embed_dim=64, depth=2, use_rope=False,
        uniform_power=True, pred_embed_dim=48, pred_depth=2, pred_num_heads=4, num_mask_tokens=2)
    v2 = load_pretrained(VJEPA2, with_predictor=True, num_heads=4, pred_num_heads=2).info
    assert (v2.method, v2.arch["use_rope"], v2.arch["num_mask_tokens"]) == ("vjepa2", True, 10)
    assert v2.arch["img_size"] == 256 and any("store no resolution" in n for n in v2.notes)
    # Without a hint the V-JEPA 2 predictor gets the released 12 heads (pred_num_heads: 12).
    assert load_pretrained(VJEPA2, with_predictor=True, num_heads=4).info.arch["pred_num_heads"] == 12


def test_official_head_counts():
    # ViT-g: 16 heads in V-JEPA, 22 in V-JEPA 2 (vit_giant_xformers); V-JEPA 2 predictor 12 heads.
    assert _heads("vjepa", 1408, None, "x") == 16 and _heads("vjepa2", 1408, None, "x") == 22
    assert _heads("vjepa2", 1024, None, "x") == 16


@torch.no_grad()
def test_hugging_face_layout_gives_the_official_outputs():
    io = _io("vjepa2_tiny_io.pt")
    out = load_pretrained(HF, with_predictor=True)  # heads and sizes from config.json
    assert out.info.format == "hf" and out.info.method == "vjepa2"
    assert _max(out.encoder(io["x"]), io["enc_full"]) < ATOL
    m, t = io["masks_enc"][0], io["masks_pred"][0]
    # transformers' predictor: full encoding gathered at the context, mask_tokens[1]
    assert _max(out.predictor(apply_masks(io["enc_full"], [m]), m, t, mask_index=1), io["pred_hf"]) < ATOL


# ---------------------------------------------------------------------------------------------
# round trips


def _parts(path):
    obj = torch.load(path, weights_only=True)
    return {p: obj[p] for p in P.PARTS}


@pytest.mark.parametrize("path, heads", [(VJEPA, ["--num-heads", "4"]),
                                         (VJEPA2, ["--num-heads", "4", "--pred-num-heads", "2", "--img-size", "32"])])
def test_official_to_ours_to_official_and_safetensors_are_exact(path, heads, tmp_path):
    assert jepa_main(["convert", str(path), str(tmp_path / "ours.pt"), *heads]) == 0
    assert jepa_main(["convert", str(tmp_path / "ours.pt"), str(tmp_path / "back.pt"), "--to", "official"]) == 0
    a, b = _parts(path), _parts(tmp_path / "back.pt")
    assert set(a) == set(b)
    for p in a:
        assert set(a[p]) == set(b[p])
        assert all(torch.equal(a[p][k], b[p][k]) for k in a[p])
    assert all(k.startswith("module.backbone.") for k in b["predictor"])
    assert jepa_main(["convert", str(tmp_path / "ours.pt"), str(tmp_path / "w.safetensors"), "--to", "safetensors"]) == 0
    assert jepa_main(["convert", str(tmp_path / "w.safetensors"), str(tmp_path / "again.pt")]) == 0
    x, y = (torch.load(tmp_path / n, weights_only=True) for n in ("ours.pt", "again.pt"))
    assert x["arch"] == y["arch"] and set(x["model"]) == set(y["model"])
    assert all(torch.equal(x["model"][k], y["model"][k]) for k in x["model"])


def test_hf_export_matches_the_fixture(tmp_path):
    args = ["--num-heads", "4", "--pred-num-heads", "2", "--img-size", "32", "--num-frames", "4"]
    assert jepa_main(["convert", str(VJEPA2), str(tmp_path / "hf"), "--to", "hf", *args]) == 0
    a, _ = P.read_safetensors(HF / "model.safetensors")
    b, _ = P.read_safetensors(tmp_path / "hf" / "model.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert jepa_main(["convert", str(VJEPA), str(tmp_path / "hf1"), "--to", "hf", "--num-heads", "4"]) == 2


# ---------------------------------------------------------------------------------------------
# other sizes, wrong files


@torch.no_grad()
def test_vjepa_at_more_frames_recomputes_the_tables():
    enc, pred = from_pretrained(VJEPA, with_predictor=True, num_frames=8, img_size=48, **V1)
    assert torch.equal(enc.pos_embed[0], sincos_3d(64, 4, 6, 6, uniform_power=True))
    assert torch.equal(pred.predictor_pos_embed[0], sincos_3d(48, 4, 6, 6, uniform_power=True))
    assert enc(torch.randn(1, 3, 8, 48, 48)).shape == (1, 144, 64)


def test_unused_rope_tables_are_dropped(tmp_path):
    obj = torch.load(VJEPA2, weights_only=True)
    obj["encoder"]["module.backbone.pos_embed"] = torch.zeros(1, 32, 64)
    obj["predictor"]["module.backbone.predictor_pos_embed"] = torch.zeros(1, 32, 48)
    torch.save(obj, tmp_path / "with_pos.pt")
    out = load_pretrained(tmp_path / "with_pos.pt", which="encoder", with_predictor=True, method="vjepa2", **V2)
    assert "encoder.pos_embed" in out.info.ignored and "predictor.predictor_pos_embed" in out.info.ignored


def test_wrong_files_give_clear_errors(tmp_path):
    image = Path(__file__).parents[2] / "jepa-image/tests/fixtures/ijepa_tiny.pth.tar"
    if image.is_file():
        with pytest.raises(PretrainedError, match="jepa_image.from_pretrained"):
            from_pretrained(image, num_heads=4)
    with pytest.raises(PretrainedError, match="V-JEPA 2 .RoPE. checkpoint; load it with method='vjepa2'"):
        from_pretrained(VJEPA2, method="vjepa", **V1)  # a RoPE file has no pos_embed
    obj = torch.load(VJEPA, weights_only=True)
    obj["encoder"]["module.backbone.pos_embed"] = torch.randn(1, 30, 64)  # 30 = no square grid
    torch.save(obj, tmp_path / "odd.pth.tar")
    with pytest.raises(PretrainedError, match="matches no 3-D sin-cos table.*num_frames= and img_size="):
        from_pretrained(tmp_path / "odd.pth.tar", **V1)
    data = VJEPA.read_bytes()
    (tmp_path / "cut.pth.tar").write_bytes(data[:5000])
    with pytest.raises(P.CheckpointError, match="truncated"):
        from_pretrained(tmp_path / "cut.pth.tar")
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    with pytest.raises(PretrainedError, match="not a checkpoint"):
        from_pretrained(tmp_path / "clip.mp4")
    with pytest.raises(PretrainedError, match="width 64 is not an official ViT width.*num_heads"):
        from_pretrained(VJEPA2)


# ---------------------------------------------------------------------------------------------
# released sizes, shapes only (meta tensors; V-JEPA's position table is real, as it is matched)


def _meta_parts(enc, pred):
    return {"encoder": dict(enc.state_dict()), "predictor": dict(pred.state_dict())}


def test_released_vjepa_vith16_384_is_recognised():
    from jepa_video.nn import vjepa_predictor, vjepa_vit
    from jepa_video.pretrained import _validate, infer_arch

    with torch.device("meta"):
        parts = _meta_parts(vjepa_vit("vit_huge", img_size=384), vjepa_predictor("vit_huge", img_size=384))
    parts["encoder"]["pos_embed"] = sincos_3d(1280, 8, 24, 24).unsqueeze(0)
    parts["predictor"]["predictor_pos_embed"] = sincos_3d(384, 8, 24, 24).unsqueeze(0)
    arch, _ = infer_arch(parts, "vjepa")
    assert (arch["img_size"], arch["num_frames"], arch["uniform_power"], arch["num_heads"]) == (384, 16, True, 16)
    assert (arch["pred_num_heads"], arch["num_mask_tokens"], arch["depth"]) == (16, 2, 32)
    _validate(parts, arch, "vjepa")


def test_released_vjepa2_vitg_is_recognised():
    from jepa_video.nn import vjepa2_predictor, vjepa2_vit
    from jepa_video.pretrained import _validate, infer_arch

    with torch.device("meta"):
        parts = _meta_parts(vjepa2_vit("vit_giant_xformers", num_frames=64), vjepa2_predictor("vit_giant_xformers"))
    arch, notes = infer_arch(parts, "vjepa2", path_hint="vitg.pt")
    assert (arch["num_heads"], arch["pred_num_heads"], arch["num_mask_tokens"]) == (22, 12, 10)
    assert (arch["embed_dim"], arch["depth"], int(1408 * arch["mlp_ratio"]), arch["img_size"]) == (1408, 40, 6144, 256)
    _validate(parts, arch, "vjepa2")
    assert infer_arch(parts, "vjepa2", path_hint="vitg-384.pt")[0]["img_size"] == 384


def _tiny_cfg(spec, depth: int, extra: list[str]):
    """The demo config shrunk to a 32-wide encoder of ``depth`` blocks on 4 frames of 32 px."""
    return spec.load_config("demo", overrides=[
        "model.encoder=custom", "model.embed_dim=32", f"model.depth={depth}", "model.num_heads=2",
        "model.pred_depth=1", "model.pred_emb_dim=16", "data.crop_size=32", "data.frames_per_clip=4", *extra,
    ])


@pytest.mark.parametrize("method, extra", [("vjepa", []), ("vjepa2", ["model.pred_num_heads=2",
                                                                      "model.rope_fix_tiling=true"])])
def test_trainer_checkpoints_load_with_their_config(method, extra, tmp_path):
    from jepa_core.config import to_dict
    from jepa_core.registry import get_method

    spec = get_method(method)
    cfg = _tiny_cfg(spec, 1, extra)
    model = spec.build_model(cfg)
    torch.save({"format": "jepa-run", "version": 1, "step": 3, "model": model.state_dict(), "optimizer": {},
                "config": to_dict(cfg)}, tmp_path / "step-3.pt")
    out = load_pretrained(tmp_path / "step-3.pt", which="encoder", with_predictor=True)
    assert out.info.format == "jepa-run" and out.info.method == method
    assert out.info.arch["rope_fix_tiling"] is (method == "vjepa2")
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(out.encoder(x), model.encoder(x))
    ref = model.predictor.state_dict()
    assert set(out.predictor.state_dict()) == set(ref)
    assert all(torch.equal(v, ref[k]) for k, v in out.predictor.state_dict().items())


# ---------------------------------------------------------------------------------------------
# one description: loading infers the method's own config and builds through the pretraining builders


@pytest.mark.parametrize("method, extra", [
    ("vjepa", []),
    ("vjepa", ["model.mlp_ratio=3.0", "model.pred_mlp_ratio=2.0", "model.uniform_power=false",
               "model.num_mask_tokens=3", "model.pred_num_heads=4"]),
    ("vjepa2", ["model.pred_num_heads=2"]),
])
def test_loading_infers_the_model_config_and_builds_the_pretraining_modules(method, extra, tmp_path):
    from jepa_core.registry import get_method
    from jepa_core.sizes import resolve_vit_size
    from jepa_video.nn import VIDEO_VIT_SIZES
    from jepa_video.pretrained import infer_config

    spec = get_method(method)
    cfg = _tiny_cfg(spec, 2, extra)
    model = spec.build_model(cfg)
    # perturbed: not the init, so the loaded weights must be these (tables stay sin-cos)
    torch.save(official_layout(model, "module.backbone."), tmp_path / "tiny.pt")
    sizes = dict(img_size=32, num_frames=4) if method == "vjepa2" else {}  # RoPE files store no size
    hints = dict(num_heads=2, pred_num_heads=cfg.model.pred_num_heads, **sizes)

    parts = P.official_parts(torch.load(tmp_path / "tiny.pt", weights_only=True))
    got, _ = infer_config(parts, method, **hints)
    m, g = cfg.model, got.model
    assert type(got) is type(cfg) and type(g) is type(m) and got.method == method
    assert (got.data.crop_size, got.data.frames_per_clip) == (32, 4)
    assert (resolve_vit_size(g.encoder, g.embed_dim, g.depth, g.num_heads, g.mlp_ratio, VIDEO_VIT_SIZES)
            == resolve_vit_size(m.encoder, m.embed_dim, m.depth, m.num_heads, m.mlp_ratio, VIDEO_VIT_SIZES))
    for f in ("patch_size", "tubelet_size", "in_chans", "pred_depth", "pred_emb_dim", "num_mask_tokens", "use_rope",
              "uniform_power", "rope_fix_tiling"):
        assert getattr(g, f) == getattr(m, f), f
    assert (g.pred_num_heads, g.pred_mlp_ratio) == (m.pred_num_heads or 2, m.pred_mlp_ratio or 4.0)
    assert P.expected_shapes(spec.build_model(got)) == P.expected_shapes(model)

    out = load_pretrained(tmp_path / "tiny.pt", which="encoder", with_predictor=True, **hints)
    assert out.info.method == method and out.info.arch["embed_dim"] == 32
    assert P.expected_shapes(out.encoder) == P.expected_shapes(model.encoder)
    assert P.expected_shapes(out.predictor) == P.expected_shapes(model.predictor)
    assert type(out.encoder) is type(model.encoder) and type(out.predictor) is type(model.predictor)
    x = torch.randn(1, 3, 4, 32, 32)
    mc, mp = torch.tensor([[0, 1, 2, 5, 9, 17]]), torch.tensor([[3, 4, 30]])
    model.eval()
    with torch.no_grad():
        assert torch.equal(out.encoder(x), model.encoder(x))
        for i in range(2):
            assert torch.equal(out.predictor(out.encoder(x, mc), mc, mp, mask_index=i),
                               model.predictor(model.encoder(x, mc), mc, mp, mask_index=i))


def test_released_sizes_are_named_in_the_inferred_config():
    from jepa_video.nn import vjepa2_predictor, vjepa2_vit
    from jepa_video.pretrained import infer_config

    with torch.device("meta"):
        parts = _meta_parts(vjepa2_vit("vit_giant_xformers", num_frames=64), vjepa2_predictor("vit_giant_xformers"))
    cfg, _ = infer_config(parts, "vjepa2", path_hint="vitg-384.pt")
    assert (cfg.model.encoder, cfg.model.embed_dim, cfg.model.pred_num_heads) == ("vit_giant_xformers", None, 12)
    assert (cfg.data.crop_size, cfg.data.frames_per_clip, cfg.model.use_rope) == (384, 64, True)


def test_the_video_converters_match_their_own_files():
    from jepa_video.pretrained import VJEPA2_CONVERTER, VJEPA_CONVERTER, match_vjepa, match_vjepa2

    assert P.find_converter(VJEPA)[0] is VJEPA_CONVERTER
    assert P.find_converter(VJEPA2)[0] is VJEPA2_CONVERTER
    assert P.find_converter(HF)[0] is VJEPA2_CONVERTER  # config.json model_type
    assert P.find_converter(HF / "model.safetensors")[0] is VJEPA2_CONVERTER  # key names alone
    assert {P.get_converter(n).package for n in ("vjepa", "vjepa2")} == {"jepa-video"}
    image = Path(__file__).parents[2] / "jepa-image/tests/fixtures/ijepa_tiny.pth.tar"
    if image.is_file():
        view = P.view_checkpoint(P.read_checkpoint(image))
        assert match_vjepa(view) == 0 and match_vjepa2(view) == 0
    hf = P.view_checkpoint(P.read_checkpoint(HF))
    assert match_vjepa2(hf) == 2.0 and match_vjepa(hf) == 0
    # the loader's own choice uses the same rule; method= overrides it
    assert VJEPA2_CONVERTER.load(VJEPA2, **V2).pretrained_info.method == "vjepa2"
