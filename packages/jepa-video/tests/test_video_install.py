"""Packaging: what jepa-video declares and what importing it pulls in."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

PKG = Path(__file__).resolve().parents[1]


def test_declared_dependencies():
    data = tomllib.loads((PKG / "pyproject.toml").read_text())
    deps = data["project"]["dependencies"]
    from packaging.requirements import Requirement

    names = {Requirement(d).name for d in deps}
    assert {"jepa-core", "torch", "numpy", "av", "decord"} <= names
    assert not names & {"jepa-image", "jepa-eval", "torchvision", "pytorchvideo", "torchcodec"}
    (decord,) = [d for d in deps if d.startswith("decord")]
    # Only where decord 0.6.0 has wheels: x86-64 Linux and Windows.
    from packaging.markers import Marker

    marker = Marker(decord.split(";", 1)[1])
    base = {"python_version": "3.11", "implementation_name": "cpython"}
    assert marker.evaluate({**base, "sys_platform": "linux", "platform_machine": "x86_64"})
    assert marker.evaluate({**base, "sys_platform": "win32", "platform_machine": "AMD64"})
    assert not marker.evaluate({**base, "sys_platform": "linux", "platform_machine": "aarch64"})
    assert not marker.evaluate({**base, "sys_platform": "darwin", "platform_machine": "arm64"})
    assert not marker.evaluate({**base, "sys_platform": "darwin", "platform_machine": "x86_64"})
    extras = data["project"]["optional-dependencies"]
    assert set(extras) == {"torchcodec", "pytorchvideo"}


def test_import_pulls_in_no_image_package_torchvision_or_optional_decoder():
    code = ("import sys, jepa_video, jepa_video.datasets, jepa_video.demo_data, jepa_video.pytorchvideo_adapter, jepa_video.vjepa; "
            "bad = [m for m in ('jepa_image', 'torchvision', 'pytorchvideo', 'torchcodec', 'decord') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_sprite_bundle_and_licence_ship_in_the_package():
    data = PKG / "src" / "jepa_video" / "demo_data"
    assert (data / "fashion_mnist_sprites.npz").stat().st_size < 300_000
    text = (data / "LICENSE").read_text()
    assert "Zalando SE" in text and "MIT" in text and "make_sprites.py" in text
