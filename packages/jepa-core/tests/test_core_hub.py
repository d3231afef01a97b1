"""Released weights by name (jepa_core.hub): the table, the cache layout, offline use, and the
errors for a string that is no path, no known name and no reachable Hugging Face id."""

from __future__ import annotations

import pytest
import torch
from jepa_core import hub
from jepa_core import pretrained as P


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    for k in ("JEPA_CACHE", "JEPA_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(k, raising=False)


def test_the_table_names_every_released_model_once():
    names = hub.list_pretrained()
    assert names == sorted(set(names)) and len(names) == 11
    assert hub.list_pretrained("ijepa") == ["ijepa_vitg16_in22k", "ijepa_vith14_in1k", "ijepa_vith14_in22k",
                                            "ijepa_vith16_448_in1k"]
    assert len(hub.list_pretrained("vjepa")) == 3 and len(hub.list_pretrained("vjepa2")) == 4
    w = hub.get_weights("ijepa_vith14_in1k")
    assert w.filename == "IN1K-vit.h.14-300e.pth.tar" and w.url.startswith("https://dl.fbaipublicfiles.com/ijepa/")
    assert hub.get_weights("facebook/ijepa_vith14_1k") is w is hub.get_weights("hf://facebook/ijepa_vith14_1k")
    with pytest.raises(hub.HubError, match="not a known weights name; known: ijepa_vitg16_in22k"):
        hub.get_weights("ijepa_vit_tiny")


def test_an_existing_path_is_returned_as_is(tmp_path):
    f = tmp_path / "w.pt"
    f.write_bytes(b"x")
    assert hub.resolve(f) == f and hub.resolve(str(f)) == f


def _official_file(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"encoder": {"module.patch_embed.proj.weight": torch.ones(8, 3, 4, 4)}}, path)
    return path


def test_a_known_name_reads_the_cached_file_offline(tmp_path, monkeypatch):
    cached = _official_file(tmp_path / "ijepa_vith14_in1k" / "IN1K-vit.h.14-300e.pth.tar")
    assert hub.resolve("ijepa_vith14_in1k", tmp_path, offline=True) == cached
    monkeypatch.setenv("JEPA_CACHE", str(tmp_path))
    monkeypatch.setenv("JEPA_OFFLINE", "1")
    raw = P.read_checkpoint("ijepa_vith14_in1k")  # what every from_pretrained and `jepa convert` call
    assert raw.path == str(cached) and P.detect_format(raw) == "official"


def test_a_known_name_not_in_the_cache_is_a_clear_offline_error(tmp_path):
    with pytest.raises(hub.HubError, match=r"known name but is not in the cache \(.*vjepa2_vitl16/vitl.pt\)"):
        hub.resolve("vjepa2_vitl16", tmp_path, offline=True)


def _hf_cache(root, repo_id: str, files: dict[str, bytes]):
    """huggingface_hub's cache layout: models--org--name/{refs/main, snapshots/<rev>/...}."""
    base = root / "hf" / ("models--" + repo_id.replace("/", "--"))
    rev = "0123456789abcdef0123456789abcdef01234567"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(rev)
    snap = base / "snapshots" / rev
    snap.mkdir(parents=True)
    for name, data in files.items():
        (snap / name).write_bytes(data)
    return snap


def test_a_hugging_face_id_reads_its_cached_snapshot_offline_and_hf_scheme_keeps_its_slashes(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    P.write_safetensors({"embeddings.patch_embeddings.projection.weight": torch.ones(8, 3, 4, 4)},
                        tmp_path / "m.safetensors")
    snap = _hf_cache(tmp_path, "facebook/ijepa_vith14_1k",
                     {"config.json": b'{"model_type": "ijepa"}', "model.safetensors": (tmp_path / "m.safetensors").read_bytes()})
    for name in ("hf://facebook/ijepa_vith14_1k", "facebook/ijepa_vith14_1k"):
        assert hub.resolve(name, tmp_path, offline=True) == snap
    assert hub.resolve("ijepa_vith14_in1k", tmp_path, offline=True, prefer="hf") == snap
    monkeypatch.setenv("JEPA_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    raw = P.read_checkpoint("hf://facebook/ijepa_vith14_1k")
    assert raw.container == "hf-folder" and raw.meta["hf_config"]["model_type"] == "ijepa"


def test_a_fake_id_offline_says_not_a_path_not_a_known_name_not_cached(tmp_path):
    pytest.importorskip("huggingface_hub")
    with pytest.raises(hub.HubError, match=r"'nobody/no-such-jepa' does not exist as a local path, is not a known "
                                           r"weights name, and as a Hugging Face id it is not in the cache"):
        hub.resolve("nobody/no-such-jepa", tmp_path, offline=True)
    with pytest.raises(P.PretrainedError, match="does not exist as a local path"):
        P.read_checkpoint(str(tmp_path / "nobody/no-such-jepa").replace(str(tmp_path) + "/", ""))


def test_anything_else_is_not_a_path_not_a_name(tmp_path):
    with pytest.raises(hub.HubError, match=r"'runs/a/b.pt' does not exist \(looked at .*\), is not a known weights name"):
        hub.resolve("runs/a/b.pt", tmp_path, offline=True)
    with pytest.raises(P.PretrainedError, match="does not exist"):
        P.read_checkpoint(tmp_path / "missing.pt")


def test_without_huggingface_hub_an_id_names_the_extra(tmp_path, monkeypatch):
    import sys

    from jepa_core.extras import MissingExtraError

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"needs huggingface_hub, which is not installed: pip install 'jepa-core\[hub\]'"):
        hub.resolve("facebook/vjepa2-vitl-fpc64-256", tmp_path, offline=True)
