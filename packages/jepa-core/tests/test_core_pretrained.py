"""jepa_core.pretrained: safetensors reading / writing, format detection, key helpers, errors.

The per-method loaders and their parity with the official code are tested in jepa-image and
jepa-video (this package cannot import them)."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from jepa_core import pretrained as P
from jepa_core.checkpoint import CheckpointError
from jepa_core.cli import main as jepa_main
from jepa_core.nn.pos_embed import sincos_2d, sincos_3d
from jepa_core.pretrained import PretrainedError


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(3, 4, generator=g),
        "b": torch.randn(5, generator=g).to(torch.bfloat16),
        "c": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "d": torch.randn(2, 2, generator=g).half(),
        "empty": torch.zeros(0, 3),
    }


def test_safetensors_round_trip_is_exact(tmp_path):
    t = _tensors()
    P.write_safetensors(t, tmp_path / "x.safetensors", {"format": "jepa-weights", "arch": json.dumps({"a": 1})})
    back, meta = P.read_safetensors(tmp_path / "x.safetensors")
    assert set(back) == set(t)
    assert all(back[k].dtype == t[k].dtype and torch.equal(back[k], t[k]) for k in t)
    assert meta == {"format": "jepa-weights", "arch": '{"a": 1}'}
    head = (tmp_path / "x.safetensors").read_bytes()
    assert (8 + struct.unpack("<Q", head[:8])[0]) % 8 == 0  # header padded to 8 bytes, as the spec says


def test_our_safetensors_match_the_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    t = _tensors()
    P.write_safetensors(t, tmp_path / "ours.safetensors", {"k": "v"})
    theirs = st.load_file(str(tmp_path / "ours.safetensors"))
    assert all(torch.equal(theirs[k], t[k]) for k in t)
    st.save_file({k: v.contiguous() for k, v in t.items()}, str(tmp_path / "pkg.safetensors"), metadata={"k": "v"})
    back, meta = P.read_safetensors(tmp_path / "pkg.safetensors")
    assert all(torch.equal(back[k], t[k]) for k in t) and meta == {"k": "v"}


def test_truncated_and_garbage_safetensors(tmp_path):
    P.write_safetensors(_tensors(), tmp_path / "x.safetensors")
    data = (tmp_path / "x.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-10])
    with pytest.raises(PretrainedError, match="truncated"):
        P.read_checkpoint(tmp_path / "cut.safetensors")
    (tmp_path / "head.safetensors").write_bytes(data[:20])
    with pytest.raises(PretrainedError, match="truncated"):
        P.read_checkpoint(tmp_path / "head.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(struct.pack("<Q", 4) + b"{abc")
    with pytest.raises(PretrainedError, match="bad JSON header"):
        P.read_checkpoint(tmp_path / "junk.safetensors")


def test_format_is_read_from_the_contents_not_the_name(tmp_path):
    sd = {"patch_embed.proj.weight": torch.zeros(4, 3, 2, 2)}
    P.write_safetensors(sd, tmp_path / "weights.pt")  # safetensors behind a .pt name
    raw = P.read_checkpoint(tmp_path / "weights.pt")
    assert raw.container == "safetensors" and P.detect_format(raw) == "state_dict"
    torch.save({"encoder": {"module.patch_embed.proj.weight": torch.zeros(1)}}, tmp_path / "w.safetensors")
    raw = P.read_checkpoint(tmp_path / "w.safetensors")  # a torch zip behind a .safetensors name
    assert raw.container == "torch" and P.detect_format(raw) == "official"
    (tmp_path / "x.yaml").write_text("a: 1\n")
    with pytest.raises(PretrainedError, match="not a checkpoint.*neither a torch file"):
        P.read_checkpoint(tmp_path / "x.yaml")
    with pytest.raises(PretrainedError, match="does not exist"):
        P.read_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "d").mkdir()
    with pytest.raises(PretrainedError, match="folder without model.safetensors"):
        P.read_checkpoint(tmp_path / "d")


@pytest.mark.parametrize("obj, fmt", [
    ({"encoder": {}, "predictor": {"module.x": torch.zeros(1)}, "epoch": 1}, "official"),
    ({"format": "jepa-run", "model": {}, "config": {}}, "jepa-run"),
    ({"model": {"encoder.x": torch.zeros(1)}, "config": {"method": "ijepa"}}, "jepa-run"),
    ({"format": "jepa-weights", "model": {}, "arch": {}}, "jepa-weights"),
    ({"encoder.layer.0.attention.attention.query.weight": torch.zeros(1)}, "hf"),
    ({"ijepa.layers.0.attention.q_proj.weight": torch.zeros(1)}, "hf"),
    ({"module.patch_embed.proj.weight": torch.zeros(1)}, "state_dict"),
])
def test_detect_format(obj, fmt):
    assert P.detect_format(P.RawCheckpoint("f", obj, {}, "torch")) == fmt


def test_detect_format_names_what_it_found():
    with pytest.raises(PretrainedError, match=r"holds no JEPA weights.*found \{epoch: int, lr: float\}"):
        P.detect_format(P.RawCheckpoint("f", {"epoch": 3, "lr": 0.1}, {}, "torch"))


def test_a_layout_no_converter_knows_keeps_the_format_error(tmp_path):
    """A file in none of the generic layouts is shown to the match functions as format "other";
    when none claims it, `convert` raises what the generic layouts need and how to pick one."""
    raw = P.RawCheckpoint("f", {"epoch": 3, "lr": 0.1}, {}, "torch")
    view = P.view_checkpoint(raw)
    assert view.format == "other" and view.parts == {} and view.encoder == {}
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "x.pt")
    with pytest.raises(PretrainedError, match=r"holds no JEPA weights.*--method NAME"):
        P.convert(tmp_path / "x.pt", tmp_path / "y.pt")


def test_prefixes_and_qkv():
    sd = {"module.backbone.blocks.0.attn.qkv.weight": torch.zeros(1), "backbone.module.norm.bias": torch.zeros(1),
          "norm.weight": torch.zeros(1)}
    assert set(P.strip_prefixes(sd)) == {"blocks.0.attn.qkv.weight", "norm.bias", "norm.weight"}
    w = torch.arange(12.0).reshape(6, 2)
    q, k, v = P.split_qkv(w)  # rows [0:D] Q, [D:2D] K, [2D:3D] V
    assert torch.equal(q, w[:2]) and torch.equal(k, w[2:4]) and torch.equal(v, w[4:])
    assert torch.equal(P.merge_qkv(q, k, v), w)
    fused = P.fuse_qkv({"b.0.attn.key.weight": k, "b.0.attn.query.weight": q, "b.0.attn.value.weight": v, "z": w},
                       r"(.*\.attn\.)(query|key|value)(\.weight|\.bias)", "{0}qkv{1}")
    assert set(fused) == {"b.0.attn.qkv.weight", "z"} and torch.equal(fused["b.0.attn.qkv.weight"], w)
    with pytest.raises(PretrainedError, match="expected query, key and value"):
        P.fuse_qkv({"b.0.attn.query.weight": q}, r"(.*\.attn\.)(query|key|value)(\.weight|\.bias)", "{0}qkv{1}")
    with pytest.raises(PretrainedError, match="3\\*D rows"):
        P.split_qkv(torch.zeros(4, 2))


def test_shape_helpers():
    assert P.block_count({"blocks.0.a": 1, "blocks.1.a": 1, "blocks.10x": 1}, "blocks.") == 2
    assert P.block_count({"mask_tokens.0": 1, "mask_tokens.1": 1}, "mask_tokens.") == 2
    with pytest.raises(PretrainedError, match="missing"):
        P.block_count({"blocks.0.a": 1, "blocks.2.a": 1}, "blocks.")
    assert P.heads_for(1280, None, "x") == 16 and P.heads_for(64, 4, "x") == 4
    with pytest.raises(PretrainedError, match="not divisible"):
        P.heads_for(64, 5, "x")
    for dim, hidden in [(1408, 6144), (1024, 4096), (100, 333)]:
        assert int(dim * P.mlp_ratio_for(dim, hidden)) == hidden
    assert P.mlp_ratio_for(1408, 6144) == 48 / 11


def test_table_resizing():
    t = sincos_2d(16, 4).unsqueeze(0)
    assert P.resize_table_2d(t, (4, 4), (4, 4)).shape == t.shape
    assert torch.allclose(P.resize_table_2d(t, (4, 4), (4, 4)), t, atol=1e-6)
    assert P.resize_table_2d(t, (4, 4), (6, 6)).shape == (1, 36, 16)
    t3 = sincos_3d(24, 2, 3, 3).unsqueeze(0)
    assert P.resize_table_3d(t3, (2, 3, 3), (4, 3, 3)).shape == (1, 36, 24)
    assert P.table_matches(t3, sincos_3d(24, 2, 3, 3)) and not P.table_matches(t3, sincos_3d(24, 2, 3, 3, False))


def test_check_state_dict_names_every_problem():
    with pytest.raises(PretrainedError) as err:
        P.check_state_dict({"a": (2,), "b": (3,)}, {"a": torch.zeros(4), "c": torch.zeros(1)}, "enc", "try X")
    msg = str(err.value)
    assert "missing keys: b" in msg and "unexpected keys: c" in msg and "a (4,) (expected (2,))" in msg
    assert msg.endswith("try X")


def test_load_into_a_meta_module_keeps_frozen_parameters_frozen():
    from jepa_core.nn import VisionTransformer

    src = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)
    with torch.device("meta"):
        dst = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)
    P.load_into(dst, src.state_dict(), "vit")
    assert not dst.pos_embed.requires_grad and dst.blocks[0].attn.qkv.weight.requires_grad
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))


def test_jepa_parts_and_patch_embedding_rank():
    parts = P.jepa_parts({"encoder.a": 1, "predictor.b": 2, "target_encoder.module.a": 3})
    assert parts == {"encoder": {"a": 1}, "predictor": {"b": 2}, "target_encoder": {"a": 3}}
    img = {"encoder": {"patch_embed.proj.weight": torch.zeros(4, 3, 2, 2)}}
    vid = {"target_encoder": {"patch_embed.proj.weight": torch.zeros(4, 3, 2, 2, 2)}}
    assert [P.patch_embedding_rank(p) for p in (img, vid, {"encoder": {"conv1.weight": torch.zeros(1)}})] == [4, 5, 0]


def test_core_names_no_method():
    # Which method a file belongs to is the converters' business (their match functions).
    import inspect

    for module in (P, __import__("jepa_core.sizes", fromlist=["x"])):
        src = inspect.getsource(module).lower()
        assert not any(name in src for name in ("ijepa", "vjepa")), module.__name__
    assert not hasattr(P, "guess_method") and not hasattr(P, "raw_method")


def test_infer_vit_reads_the_shared_opening():
    from jepa_core.nn import VisionTransformer

    enc = VisionTransformer(img_size=16, patch_size=8, embed_dim=64, depth=3, num_heads=4, mlp_ratio=3.0)
    sd = enc.state_dict()
    vit = P.infer_vit(sd, 4, "enc", num_heads=4)
    assert (vit.embed_dim, vit.in_chans, vit.kernel, vit.patch_size, vit.depth, vit.num_heads, vit.mlp_ratio) == (
        64, 3, (8, 8), 8, 3, 4, 3.0)
    with pytest.raises(PretrainedError, match="video file .5, 3, 2, 2, 2.; use the other loader"):
        P.infer_vit({"patch_embed.proj.weight": torch.zeros(5, 3, 2, 2, 2)}, 4, "enc",
                    wrong_rank={5: "video file {shape}; use the other loader"})
    with pytest.raises(PretrainedError, match="not a square Conv2d patch embedding"):
        P.infer_vit({"patch_embed.proj.weight": torch.zeros(5, 3, 2, 3)}, 4, "enc")
    with pytest.raises(PretrainedError, match="no blocks"):
        P.infer_vit({"patch_embed.proj.weight": torch.zeros(5, 3, 2, 2)}, 4, "enc")
    with pytest.raises(PretrainedError, match="width 64 is not an official ViT width"):
        P.infer_vit(sd, 4, "enc")
    with pytest.raises(PretrainedError, match="no encoder weights"):
        P.encoder_weights({"predictor": {"a": torch.zeros(1)}})


def test_vit_sizes_resolve_both_ways():
    from jepa_core.config import ConfigError
    from jepa_core.nn import VIT_SIZES
    from jepa_core.sizes import resolve_vit_size, vit_size_name

    assert resolve_vit_size("vit_huge") == VIT_SIZES["vit_huge"]
    assert resolve_vit_size("vit_huge", num_heads=8) == (1280, 32, 8, 4.0)
    assert resolve_vit_size("custom", 32, 1, 2) == (32, 1, 2, 4.0)
    with pytest.raises(ConfigError, match="custom needs model.embed_dim"):
        resolve_vit_size("custom", 32)
    with pytest.raises(ValueError, match="unknown model.encoder 'vit_x'; valid: vit_tiny"):
        resolve_vit_size("vit_x")
    assert vit_size_name(*VIT_SIZES["vit_giant"]) == "vit_giant" and vit_size_name(32, 1, 2, 4.0) is None
    from jepa_core.sizes import config_num_heads

    assert config_num_heads({"encoder": "vit_large"}) == 16 and config_num_heads({"encoder": "vit_large",
                                                                                  "num_heads": 8}) == 8
    assert config_num_heads({"encoder": "custom", "embed_dim": 32, "depth": 1, "num_heads": 2}) == 2
    assert config_num_heads({"encoder": "unknown"}) is None


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"encoder": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        P.read_checkpoint(tmp_path / "evil.pt")


def test_convert_dispatches_through_the_converter_registry(tmp_path, capsys):
    seen = {}

    def fake(raw, out, to, method, **hints):
        seen.update(method=method, to=to, hints=hints, fmt=P.detect_format(raw))
        out.write_text("ok")
        return P.LoadInfo(raw.path, "official", method)

    torch.save({"encoder": {"module.patch_embed.proj.weight": torch.zeros(4, 3, 2, 2),
                            "module.pos_embed": torch.zeros(1, 1, 4)}}, tmp_path / "in.pth.tar")
    # a match of its own: with jepa-core alone installed no "ijepa" entry point lends one
    P.register_converter("ijepa", fake, match=lambda view: view.patch_rank == 4)
    try:
        rc = jepa_main(["convert", str(tmp_path / "in.pth.tar"), str(tmp_path / "out.st"), "--to", "safetensors",
                        "--num-heads", "2"])
    finally:
        P._LOCAL_CONVERTERS.pop("ijepa")
    assert rc == 0 and seen == dict(method="ijepa", to="safetensors", hints={"num_heads": 2}, fmt="official")
    assert (tmp_path / "out.st").read_text() == "ok"


def test_convert_of_a_non_checkpoint_fails_cleanly(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("not weights")
    assert jepa_main(["convert", str(tmp_path / "a.txt"), str(tmp_path / "b.pt")]) == 2
    assert "is not a checkpoint" in capsys.readouterr().err


def test_missing_converter_lists_the_installed_ones(toys):
    P.register_converter(P.Converter("toy-a", lambda v: False, _toy_convert, package="toy-pkg"))
    with pytest.raises(PretrainedError, match=r"no converter named 'toy' is installed \(installed: .*toy-a \(toy-pkg\)"
                                              r".*--method NAME"):
        P.get_converter("toy")


# ---------------------------------------------------------------------------------------------
# the converter registry: match functions decide


@pytest.fixture
def toys():
    saved = dict(P._LOCAL_CONVERTERS)
    yield
    P._LOCAL_CONVERTERS.clear()
    P._LOCAL_CONVERTERS.update(saved)


def _toy_convert(raw, out, to, method, **hints):
    out.write_text(method)
    return P.LoadInfo(raw.path, "official", method)


def _toy_file(tmp_path, key="toy_embed.weight"):
    torch.save({"encoder": {f"module.{key}": torch.zeros(4, 3)}, "epoch": 1}, tmp_path / "toy.pth.tar")
    return tmp_path / "toy.pth.tar"


def _has_toy(view: P.CheckpointView) -> bool:
    return "toy_embed.weight" in view.encoder


def test_an_in_process_converter_wins_for_its_own_layout(tmp_path, toys):
    P.register_converter(P.Converter("toy", _has_toy, _toy_convert, package="toy-pkg"))
    src = _toy_file(tmp_path)
    assert jepa_main(["convert", str(src), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out").read_text() == "toy"
    conv, raw = P.find_converter(src)
    assert conv.name == "toy" and conv.package == "toy-pkg" and raw.path == str(src)
    # the installed converters do not claim it
    view = P.view_checkpoint(raw)
    assert view.format == "official" and view.patch_rank == 0
    assert {n: s for n, s in P.match_converters(view).items() if s} == {"toy": 1.0}


def test_the_highest_score_wins_and_a_tie_is_an_ambiguity(tmp_path, toys):
    src = _toy_file(tmp_path)
    P.register_converter("toy-a", _toy_convert, match=lambda v: 2.0 * _has_toy(v))
    P.register_converter("toy-b", _toy_convert, match=_has_toy)
    assert P.find_converter(src)[0].name == "toy-a"
    P.register_converter("toy-b", _toy_convert, match=lambda v: 2.0 * _has_toy(v))
    with pytest.raises(PretrainedError, match="matches several converters: toy-a, toy-b; pick one with --method"):
        P.find_converter(src)
    assert jepa_main(["convert", str(src), str(tmp_path / "out")]) == 2
    assert jepa_main(["convert", str(src), str(tmp_path / "out"), "--method", "toy-b"]) == 0
    assert (tmp_path / "out").read_text() == "toy-b"


def test_no_matching_converter_lists_the_installed_ones(tmp_path, toys, capsys):
    P.register_converter(P.Converter("toy", _has_toy, _toy_convert, package="toy-pkg"))
    src = _toy_file(tmp_path, key="conv1.weight")
    assert jepa_main(["convert", str(src), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no installed converter recognises" in err and "toy (toy-pkg)" in err and "--method NAME" in err
    assert "patch_embed" in err  # what the file looks like


def test_a_match_function_that_raises_counts_as_no_match(tmp_path, toys):
    def broken(view):
        raise KeyError("boom")

    P.register_converter("toy-broken", _toy_convert, match=broken)
    P.register_converter("toy", _toy_convert, match=_has_toy)
    assert P.find_converter(_toy_file(tmp_path))[0].name == "toy"


def test_the_name_a_file_records_wins(tmp_path, toys):
    P.register_converter("toy-a", _toy_convert, match=_has_toy)
    P.register_converter("toy-b", _toy_convert)  # by name only
    torch.save({"format": "jepa-weights", "method": "toy-b", "model": {"encoder.toy_embed.weight": torch.zeros(1)}},
               tmp_path / "ours.pt")
    assert P.find_converter(tmp_path / "ours.pt")[0].name == "toy-b"
    torch.save({"format": "jepa-weights", "method": "gone", "model": {"encoder.toy_embed.weight": torch.zeros(1)}},
               tmp_path / "gone.pt")
    with pytest.raises(PretrainedError, match="written for 'gone', but no converter of that name is installed"):
        P.find_converter(tmp_path / "gone.pt")


def test_convert_method_is_checked_at_run_time(tmp_path, toys, capsys):
    P.register_converter("toy", _toy_convert, match=_has_toy)
    src = _toy_file(tmp_path)
    assert jepa_main(["convert", str(src), str(tmp_path / "out"), "--method", "nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "no converter named 'nonexistent' is installed" in err and "toy" in err and "--method NAME" in err
    assert not (tmp_path / "out").exists()


def test_entry_points_naming_a_function_resolve_through_the_module_table(monkeypatch, toys):
    import types

    mod = types.ModuleType("toy_plugin")
    conv = P.Converter("toy", _has_toy, _toy_convert)

    def convert(*a, **k):
        pass

    convert.__module__ = "toy_plugin"
    mod.convert, mod.CONVERTERS = convert, {"toy": conv}
    monkeypatch.setitem(__import__("sys").modules, "toy_plugin", mod)

    class EP:
        name, value, dist = "toy", "toy_plugin:convert", None

        def load(self):
            return convert

    assert P._from_entry_point(EP()).match is _has_toy
    EP.name = "other"  # not in the table: a by-name-only converter around the function
    legacy = P._from_entry_point(EP())
    assert legacy.convert is convert and legacy.match(None) is False


def test_pick_encoder_falls_back_and_says_so():
    notes: list[str] = []
    which, sd = P.pick_encoder({"encoder": {"a": torch.zeros(1)}}, "target_encoder", notes)
    assert which == "encoder" and notes == ["no target_encoder in the file; using encoder"]
    with pytest.raises(PretrainedError, match="which must be"):
        P.pick_encoder({"encoder": {}}, "context", [])
