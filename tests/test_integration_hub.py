"""Named weights end to end, offline: `from_pretrained("<name>")` of jepa-image / jepa-video and
`torch.hub.load(<checkout>, "<name>", source="local")` read the jepa cache (here a temporary
folder holding the tiny official-layout fixtures under the released files' names)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from jepa_core.hub import get_weights

ROOT = Path(__file__).resolve().parents[1]
IMAGE_FIX = ROOT / "packages/jepa-image/tests/fixtures"
VIDEO_FIX = ROOT / "packages/jepa-video/tests/fixtures"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JEPA_CACHE", str(tmp_path))
    monkeypatch.setenv("JEPA_OFFLINE", "1")
    for name, fixture in (("ijepa_vith14_in1k", IMAGE_FIX / "ijepa_tiny.pth.tar"),
                          ("vjepa2_vitl16", VIDEO_FIX / "vjepa2_tiny.pt")):
        dst = tmp_path / name / get_weights(name).filename
        dst.parent.mkdir(parents=True)
        shutil.copy(fixture, dst)
    return tmp_path


def test_from_pretrained_by_name_equals_the_file(cache):
    from jepa_image import from_pretrained as image_weights
    from jepa_video import from_pretrained as video_weights

    x = torch.load(IMAGE_FIX / "ijepa_tiny_io.pt", weights_only=True)["x"]
    by_name, by_file = image_weights("ijepa_vith14_in1k", num_heads=4), image_weights(IMAGE_FIX / "ijepa_tiny.pth.tar", num_heads=4)
    torch.testing.assert_close(by_name(x), by_file(x), rtol=0, atol=0)
    v = video_weights("vjepa2_vitl16", num_heads=4)
    assert v.pretrained_info.method == "vjepa2"


def test_torch_hub_lists_and_loads_the_names_from_a_checkout(cache):
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # torch.hub.list's rule: the public callables of hubconf.py
    names = [n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_")]
    assert "ijepa_vith14_in1k" in names and "vjepa2_vitg16_384" in names
    assert not [n for n in names if n.startswith("_") or n in ("dependencies",)]
    enc = torch.hub.load(str(ROOT), "ijepa_vith14_in1k", source="local", num_heads=4)
    x = torch.load(IMAGE_FIX / "ijepa_tiny_io.pt", weights_only=True)["x"]
    from jepa_image import from_pretrained

    torch.testing.assert_close(enc(x), from_pretrained(IMAGE_FIX / "ijepa_tiny.pth.tar", num_heads=4)(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="only pretrained=True"):
        torch.hub.load(str(ROOT), "ijepa_vith14_in1k", source="local", pretrained=False)


def test_a_fake_name_is_a_clear_error(cache):
    from jepa_core.pretrained import PretrainedError
    from jepa_image import from_pretrained

    with pytest.raises(PretrainedError, match="'ijepa_vith99' does not exist .* is not a known weights name"):
        from_pretrained("ijepa_vith99")
