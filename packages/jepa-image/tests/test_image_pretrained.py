"""Official I-JEPA checkpoints load with numerical parity (issue #5).

The fixtures in tests/fixtures were made by Meta's official I-JEPA code
(scripts/make_pretrained_fixtures.py imports it from a checkout): a 64-wide, 2-deep ViT with
patch 8 at 48 px (4 heads) and a 32-wide, 2-deep predictor, every tensor perturbed, saved as the
official ``.pth.tar`` (``module.`` keys, ``opt``, ``epoch``, ...), with inputs, masks and the
official outputs. ``ijepa_tiny_hf`` is the same ``encoder`` in the Hugging Face hub layout,
which transformers' ``IJepaModel`` reproduced to 7e-7 when the fixture was made.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from jepa_core import pretrained as P
from jepa_core.cli import main as jepa_main
from jepa_core.nn.pos_embed import sincos_2d
from jepa_core.pretrained import PretrainedError
from jepa_core.testing import official_layout
from jepa_image import from_pretrained, load_pretrained
from jepa_image.pretrained import infer_arch

torch.set_num_threads(1)
FIX = Path(__file__).parent / "fixtures"
OFFICIAL = FIX / "ijepa_tiny.pth.tar"
HF = FIX / "ijepa_tiny_hf"
ATOL = 1e-5


@pytest.fixture(scope="module")
def io():
    return torch.load(FIX / "ijepa_tiny_io.pt", weights_only=True)


def _max(a, b) -> float:
    return (a - b).abs().max().item()


# ---------------------------------------------------------------------------------------------
# parity with the official code


@torch.no_grad()
def test_official_encoder_and_predictor_match_the_official_outputs(io):
    enc, pred = from_pretrained(OFFICIAL, which="encoder", with_predictor=True, num_heads=4)
    assert _max(enc(io["x"]), io["enc_full"]) < ATOL
    ctx = enc(io["x"], io["masks_enc"])
    assert _max(ctx, io["ctx"]) < ATOL
    out = pred(io["ctx"], io["masks_enc"], io["masks_pred"])
    assert out.shape == io["pred"].shape  # 2 target blocks x batch 2 rows, 6 tokens
    assert _max(out, io["pred"]) < ATOL
    assert _max(pred(ctx, io["masks_enc"], io["masks_pred"]), io["pred"]) < ATOL


@torch.no_grad()
def test_target_encoder_is_the_default_and_differs_from_the_context_encoder(io):
    tgt = from_pretrained(OFFICIAL, num_heads=4)
    assert tgt.pretrained_info.which == "target_encoder"
    assert _max(tgt(io["x"]), io["target_full"]) < ATOL
    assert _max(io["target_full"], io["enc_full"]) > 1e-3  # the two entries really differ


def test_architecture_and_info_come_from_the_weights():
    info = load_pretrained(OFFICIAL, with_predictor=True, num_heads=4).info
    assert info.format == "official" and info.method == "ijepa"
    assert info.parts == ("encoder", "predictor", "target_encoder")
    assert info.arch == dict(method="ijepa", img_size=48, patch_size=8, in_chans=3, embed_dim=64, depth=2, num_heads=4,
                             mlp_ratio=4.0, pos_embed_order="wh", pred_embed_dim=32, pred_depth=2, pred_num_heads=4,
                             pred_mlp_ratio=4.0)
    assert "ijepa" in info.summary() and "img_size=48" in info.summary()


@torch.no_grad()
def test_hugging_face_layout_gives_the_official_context_encoder(io):
    info = json.loads((HF / "config.json").read_text())
    assert info["model_type"] == "ijepa" and info["num_attention_heads"] == 4
    enc = from_pretrained(HF)  # heads from config.json
    assert enc.pretrained_info.format == "hf"
    assert _max(enc(io["x"]), io["enc_full"]) < ATOL
    # The safetensors file alone (no config.json): heads must be given.
    with pytest.raises(PretrainedError, match="num_heads"):
        from_pretrained(HF / "model.safetensors")
    assert _max(from_pretrained(HF / "model.safetensors", num_heads=4)(io["x"]), io["enc_full"]) < ATOL


def _hf_v5_names(sd: dict) -> dict:
    """The transformers >= 5 module names of the same weights (layers.{i}.attention.q_proj, ...)."""
    out = {}
    for k, v in sd.items():
        k = k.replace("encoder.layer.", "layers.").replace("attention.attention.query", "attention.q_proj")
        k = k.replace("attention.attention.key", "attention.k_proj").replace("attention.attention.value", "attention.v_proj")
        k = k.replace("attention.output.dense", "attention.o_proj").replace("intermediate.dense", "mlp.fc1")
        k = k.replace(".output.dense", ".mlp.fc2")
        out["ijepa." + k] = v
    return out


@torch.no_grad()
def test_transformers_v5_key_names_and_model_prefix_load_too(io, tmp_path):
    tensors, _ = P.read_safetensors(HF / "model.safetensors")
    v5 = _hf_v5_names(tensors)
    assert "ijepa.layers.0.attention.q_proj.weight" in v5 and "ijepa.layers.1.mlp.fc2.bias" in v5
    P.write_safetensors(v5, tmp_path / "v5.safetensors")
    assert _max(from_pretrained(tmp_path / "v5.safetensors", num_heads=4)(io["x"]), io["enc_full"]) < ATOL


# ---------------------------------------------------------------------------------------------
# round trips


def _official_model_dicts(path) -> dict:
    obj = torch.load(path, weights_only=True)
    return {p: obj[p] for p in P.PARTS}


def _assert_same(a: dict, b: dict):
    assert set(a) == set(b)
    for p in a:
        assert set(a[p]) == set(b[p]), p
        for k in a[p]:
            assert a[p][k].dtype == b[p][k].dtype and torch.equal(a[p][k], b[p][k]), (p, k)


def test_official_to_ours_to_official_is_exact(tmp_path):
    assert jepa_main(["convert", str(OFFICIAL), str(tmp_path / "ours.pt"), "--num-heads", "4"]) == 0
    ours = torch.load(tmp_path / "ours.pt", weights_only=True)
    assert ours["format"] == "jepa-weights" and ours["method"] == "ijepa" and ours["arch"]["num_heads"] == 4
    assert "target_encoder.module.blocks.0.attn.qkv.weight" in ours["model"]
    assert jepa_main(["convert", str(tmp_path / "ours.pt"), str(tmp_path / "back.pth.tar"), "--to", "official"]) == 0
    _assert_same(_official_model_dicts(OFFICIAL), _official_model_dicts(tmp_path / "back.pth.tar"))
    assert all(k.startswith("module.") for k in torch.load(tmp_path / "back.pth.tar", weights_only=True)["encoder"])


def test_ours_to_safetensors_to_ours_is_exact(tmp_path, io):
    assert jepa_main(["convert", str(OFFICIAL), str(tmp_path / "a.pt"), "--num-heads", "4"]) == 0
    assert jepa_main(["convert", str(tmp_path / "a.pt"), str(tmp_path / "b.safetensors"), "--to", "safetensors"]) == 0
    assert jepa_main(["convert", str(tmp_path / "b.safetensors"), str(tmp_path / "c.pt")]) == 0
    a, c = (torch.load(tmp_path / n, weights_only=True) for n in ("a.pt", "c.pt"))
    assert a["arch"] == c["arch"]
    _assert_same({"model": a["model"]}, {"model": c["model"]})
    # ... and the safetensors file loads on its own (the arch travels in its metadata).
    enc = from_pretrained(tmp_path / "b.safetensors", which="encoder")
    with torch.no_grad():
        assert _max(enc(io["x"]), io["enc_full"]) < ATOL


def test_hf_export_round_trips_the_encoder(tmp_path):
    assert jepa_main(["convert", str(OFFICIAL), str(tmp_path / "hf"), "--to", "hf", "--num-heads", "4"]) == 0
    a, _ = P.read_safetensors(HF / "model.safetensors")
    b, _ = P.read_safetensors(tmp_path / "hf" / "model.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_trainer_checkpoint_loads_with_its_config(tmp_path):
    from jepa_image.ijepa import SPEC, build_model

    cfg = SPEC.load_config("demo", overrides=["model.encoder=custom", "model.embed_dim=32", "model.depth=1",
                                              "model.num_heads=2", "model.pred_depth=1", "model.pred_emb_dim=16"])
    model = build_model(cfg)
    from jepa_core.config import to_dict

    obj = {"format": "jepa-run", "version": 1, "step": 7, "model": model.state_dict(), "optimizer": {},
           "config": to_dict(cfg)}
    torch.save(obj, tmp_path / "step-7.pt")
    enc, pred = from_pretrained(tmp_path / "step-7.pt", with_predictor=True)  # heads from the run config
    assert enc.pretrained_info.format == "jepa-run"
    x = torch.randn(2, cfg.model.in_chans, cfg.data.image_size, cfg.data.image_size)
    with torch.no_grad():
        assert torch.equal(enc(x), model.target_encoder.module(x))
    assert all(torch.equal(v, model.predictor.state_dict()[k]) for k, v in pred.state_dict().items())


# ---------------------------------------------------------------------------------------------
# architecture options


def _save_official(tmp_path, enc, pred=None) -> Path:
    obj = {"encoder": P.add_prefix(enc.state_dict(), "module."),
           "target_encoder": P.add_prefix(enc.state_dict(), "module.")}
    if pred is not None:
        obj["predictor"] = P.add_prefix(pred.state_dict(), "module.")
    torch.save(obj, tmp_path / "ck.pth.tar")
    return tmp_path / "ck.pth.tar"


def test_official_widths_need_no_head_count(tmp_path):
    from jepa_core.nn import VisionTransformer, VisionTransformerPredictor

    enc = VisionTransformer(img_size=32, patch_size=16, embed_dim=384, depth=1, num_heads=6)
    pred = VisionTransformerPredictor(num_patches=4, embed_dim=384, predictor_embed_dim=48, depth=1, num_heads=6)
    info = load_pretrained(_save_official(tmp_path, enc, pred), with_predictor=True).info
    assert info.arch["num_heads"] == 6 and info.arch["pred_num_heads"] == 6  # predictor = encoder heads
    # ViT-g: I-JEPA's giant has 16 heads (head_dim 88), not V-JEPA 2's 22 (ijepa:src/models/vision_transformer.py).
    assert P.heads_for(1408, None, "x") == 16 and P.heads_for(1280, None, "x") == 16


@torch.no_grad()
def test_other_resolution_recomputes_the_tables_exactly(io):
    enc, pred = from_pretrained(OFFICIAL, which="encoder", with_predictor=True, num_heads=4, img_size=64)
    assert torch.equal(enc.pos_embed[0], sincos_2d(64, 8, order="wh"))
    assert torch.equal(pred.predictor_pos_embed[0], sincos_2d(32, 8, order="wh"))
    assert any("recomputed (exact)" in n for n in enc.pretrained_info.notes)
    x = torch.nn.functional.interpolate(io["x"], size=64)
    assert enc(x).shape == (2, 64, 64)
    # At the native size the stored table is used as is, and it is I-JEPA's column-first table.
    native = from_pretrained(OFFICIAL, num_heads=4)
    assert torch.equal(native.pos_embed[0], sincos_2d(64, 6, order="wh"))


def test_a_non_sincos_table_is_resampled_bicubically(tmp_path):
    from jepa_core.nn import VisionTransformer

    enc = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=1, num_heads=4)
    with torch.no_grad():
        enc.pos_embed.add_(0.1)
    loaded = from_pretrained(_save_official(tmp_path, enc), num_heads=4, img_size=48)
    assert loaded.pos_embed.shape == (1, 36, 64)
    assert any("bicubic" in n for n in loaded.pretrained_info.notes)


# ---------------------------------------------------------------------------------------------
# bad input


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(PretrainedError, match="not a checkpoint"):
        from_pretrained(tmp_path / "notes.txt")


def test_truncated_files(tmp_path):
    data = OFFICIAL.read_bytes()
    (tmp_path / "cut.pth.tar").write_bytes(data[: len(data) // 2])
    with pytest.raises(P.CheckpointError, match="truncated"):
        from_pretrained(tmp_path / "cut.pth.tar")
    st = (HF / "model.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(st[: len(st) - 100])
    with pytest.raises(PretrainedError, match="truncated"):
        from_pretrained(tmp_path / "cut.safetensors", num_heads=4)


def test_pickled_code_is_never_run(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('ran')",))

    torch.save({"encoder": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(P.CheckpointError, match="not a readable checkpoint"):
        from_pretrained(tmp_path / "evil.pt")


def test_video_checkpoint_is_refused_with_the_fix():
    video = Path(__file__).parents[2] / "jepa-video/tests/fixtures/vjepa_tiny.pth.tar"
    if not video.is_file():
        pytest.skip("video fixture not in this checkout")
    with pytest.raises(PretrainedError, match="video checkpoint.*jepa_video.from_pretrained"):
        from_pretrained(video, num_heads=4)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    obj = torch.load(OFFICIAL, weights_only=True)
    del obj["target_encoder"]["module.blocks.1.mlp.fc2.bias"]
    obj["target_encoder"]["module.blocks.0.attn.extra"] = torch.zeros(1)
    torch.save(obj, tmp_path / "bad.pth.tar")
    with pytest.raises(PretrainedError) as err:
        from_pretrained(tmp_path / "bad.pth.tar", num_heads=4)
    msg = str(err.value)
    assert "missing keys: blocks.1.mlp.fc2.bias" in msg and "unexpected keys: blocks.0.attn.extra" in msg


def test_not_a_jepa_checkpoint(tmp_path):
    torch.save({"state_dict": {"conv1.weight": torch.zeros(8, 3, 7, 7)}}, tmp_path / "resnet.pt")
    with pytest.raises(PretrainedError, match="holds no JEPA weights"):
        from_pretrained(tmp_path / "resnet.pt")
    torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7)}, tmp_path / "sd.pt")
    with pytest.raises(PretrainedError, match="no ViT encoder|patch_embed"):
        from_pretrained(tmp_path / "sd.pt")


def test_non_official_width_asks_for_the_head_count():
    with pytest.raises(PretrainedError, match="width 64 is not an official ViT width.*num_heads"):
        from_pretrained(OFFICIAL)


def test_hf_file_has_no_predictor():
    with pytest.raises(PretrainedError, match="holds no predictor"):
        from_pretrained(HF, with_predictor=True)


def test_convert_cli_reports_errors(tmp_path, capsys):
    (tmp_path / "x.bin").write_bytes(b"\x00" * 32)
    assert jepa_main(["convert", str(tmp_path / "x.bin"), str(tmp_path / "y.pt")]) == 2
    assert "not a checkpoint" in capsys.readouterr().err


def test_infer_arch_reads_shapes_only():
    sd = {k: v for k, v in torch.load(OFFICIAL, weights_only=True)["encoder"].items()}
    arch, notes = infer_arch({"encoder": P.strip_prefixes(sd)}, num_heads=4)
    assert arch["depth"] == 2 and arch["img_size"] == 48 and notes == []


# ---------------------------------------------------------------------------------------------
# released sizes, shapes only (meta tensors; the position table is real, as it is matched)


@pytest.mark.parametrize("preset, expect", [
    ("in1k_vith14", dict(img_size=224, patch_size=14, embed_dim=1280, depth=32, num_heads=16, pred_depth=12)),
    ("in1k_vith16_448", dict(img_size=448, patch_size=16, embed_dim=1280, depth=32, num_heads=16, pred_depth=12)),
    ("in22k_vitg16", dict(img_size=224, patch_size=16, embed_dim=1408, depth=40, num_heads=16, pred_depth=16)),
])
def test_released_layouts_are_recognised_without_hints(preset, expect):
    from jepa_image.ijepa import SPEC, build_model
    from jepa_image.pretrained import _validate

    with torch.device("meta"):
        model = build_model(SPEC.load_config(preset))
    parts = {p: dict(getattr(model, p).state_dict()) for p in ("encoder", "predictor")}
    grid = expect["img_size"] // expect["patch_size"]
    parts["encoder"]["pos_embed"] = sincos_2d(expect["embed_dim"], grid).unsqueeze(0)
    parts["predictor"]["predictor_pos_embed"] = sincos_2d(384, grid).unsqueeze(0)
    arch, notes = infer_arch(parts)
    assert {k: arch[k] for k in expect} == expect and notes == []
    assert arch["pred_num_heads"] == 16 and arch["pred_embed_dim"] == 384  # = encoder heads (ijepa helper)
    assert int(arch["embed_dim"] * arch["mlp_ratio"]) == (6144 if arch["embed_dim"] == 1408 else 5120)
    _validate(parts, arch)  # every key and shape of the official layout


def test_a_bare_method_state_dict_loads(tmp_path, io):
    ours = tmp_path / "ours.pt"
    assert jepa_main(["convert", str(OFFICIAL), str(ours), "--num-heads", "4"]) == 0
    torch.save(torch.load(ours, weights_only=True)["model"], tmp_path / "model_state.pt")  # like model.state_dict()
    enc = from_pretrained(tmp_path / "model_state.pt", which="encoder", num_heads=4)
    assert enc.pretrained_info.format == "jepa-weights"
    with torch.no_grad():
        assert _max(enc(io["x"]), io["enc_full"]) < ATOL


# ---------------------------------------------------------------------------------------------
# one description: loading infers I-JEPA's own config and builds through the pretraining builders


def _tiny_cfg(*extra):
    from jepa_image.ijepa import SPEC

    return SPEC.load_config("demo", overrides=["model.encoder=custom", "model.embed_dim=32", "model.depth=2",
                                               "model.num_heads=2", "model.pred_depth=1", "model.pred_emb_dim=16",
                                               "data.image_size=32", "model.patch_size=8", *extra])


@pytest.mark.parametrize("extra", [[], ["model.mlp_ratio=3.0", "model.pred_num_heads=4", "model.pred_mlp_ratio=2.0",
                                        "model.pos_embed_order=hw", "model.in_chans=1"]])
def test_loading_infers_the_model_config_and_builds_the_pretraining_modules(tmp_path, extra):
    from jepa_core.sizes import resolve_vit_size
    from jepa_image.ijepa import build_model
    from jepa_image.pretrained import infer_config

    cfg = _tiny_cfg(*extra)
    model = build_model(cfg)
    # perturbed: not the init, so the loaded weights must be these (tables stay sin-cos)
    torch.save(official_layout(model, "module."), tmp_path / "tiny.pth.tar")

    parts = P.official_parts(torch.load(tmp_path / "tiny.pth.tar", weights_only=True))
    got, notes = infer_config(parts, num_heads=2, pred_num_heads=cfg.model.pred_num_heads)
    m, g = cfg.model, got.model
    assert got.data.image_size == cfg.data.image_size and type(got) is type(cfg)
    assert (resolve_vit_size(g.encoder, g.embed_dim, g.depth, g.num_heads, g.mlp_ratio)
            == resolve_vit_size(m.encoder, m.embed_dim, m.depth, m.num_heads, m.mlp_ratio))
    for f in ("patch_size", "in_chans", "pred_depth", "pred_emb_dim", "pos_embed_order"):
        assert getattr(g, f) == getattr(m, f), f
    assert (g.pred_num_heads, g.pred_mlp_ratio) == (m.pred_num_heads or 2, m.pred_mlp_ratio or 4.0)
    # build_model(inferred config) has the same keys and shapes as the pretrained model
    again = build_model(got)
    assert P.expected_shapes(again) == P.expected_shapes(model)

    enc, pred = from_pretrained(tmp_path / "tiny.pth.tar", which="encoder", with_predictor=True, num_heads=2,
                                pred_num_heads=cfg.model.pred_num_heads)
    assert P.expected_shapes(enc) == P.expected_shapes(model.encoder)
    assert P.expected_shapes(pred) == P.expected_shapes(model.predictor)
    assert type(enc) is type(model.encoder) and type(pred) is type(model.predictor)
    x = torch.randn(2, m.in_chans, 32, 32)
    with torch.no_grad():
        model.eval()
        assert torch.equal(enc(x), model.encoder(x))
        masks_enc, masks_pred = [torch.tensor([[0, 1, 2, 5]] * 2)], [torch.tensor([[8, 9]] * 2)]
        assert torch.equal(pred(enc(x, masks_enc), masks_enc, masks_pred),
                           model.predictor(model.encoder(x, masks_enc), masks_enc, masks_pred))


def test_released_sizes_are_named_in_the_inferred_config():
    from jepa_image.ijepa import SPEC, build_model
    from jepa_image.pretrained import infer_config

    for preset in ("in1k_vith14", "in22k_vitg16"):
        cfg = SPEC.load_config(preset)
        with torch.device("meta"):
            model = build_model(cfg)
        parts = {p: dict(getattr(model, p).state_dict()) for p in ("encoder", "predictor")}
        grid = cfg.data.image_size // cfg.model.patch_size
        parts["encoder"]["pos_embed"] = sincos_2d(model.encoder.embed_dim, grid).unsqueeze(0)
        parts["predictor"]["predictor_pos_embed"] = sincos_2d(cfg.model.pred_emb_dim, grid).unsqueeze(0)
        got, _ = infer_config(parts)
        assert got.model.encoder == cfg.model.encoder and got.model.embed_dim is None, preset
        assert (got.model.pred_depth, got.model.pred_emb_dim) == (cfg.model.pred_depth, cfg.model.pred_emb_dim)


def test_the_ijepa_converter_matches_image_files_only():
    from jepa_image.pretrained import CONVERTER, match

    assert P.find_converter(OFFICIAL)[0] is CONVERTER
    assert P.find_converter(HF)[0] is CONVERTER  # config.json model_type
    assert P.find_converter(HF / "model.safetensors")[0] is CONVERTER  # key names alone
    assert P.get_converter("ijepa") is CONVERTER and CONVERTER.package == "jepa-image"
    video = Path(__file__).parents[2] / "jepa-video/tests/fixtures/vjepa_tiny.pth.tar"
    if video.is_file():
        assert match(P.view_checkpoint(P.read_checkpoint(video))) == 0
    view = P.view_checkpoint(P.read_checkpoint(HF))
    assert match(view) == 2.0 and match(P.CheckpointView(view.raw, "hf", {}, hf_config={"model_type": "vit"})) == 0
