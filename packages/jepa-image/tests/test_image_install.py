"""Packaging: jepa-image installs only what it needs, jepa-core installs without torchvision.

Resolves the real install sets with `uv pip install --dry-run` into an empty venv (needs the
package index, so it is marked slow), and checks the declared dependencies directly.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _deps(pkg: str) -> list[str]:
    data = tomllib.loads((ROOT / "packages" / pkg / "pyproject.toml").read_text())
    return [re.split(r"[ <>=!~\[;]", d, maxsplit=1)[0].lower() for d in data["project"]["dependencies"]]


def test_declared_dependencies_follow_the_dependency_rule():
    core, image, ev = _deps("jepa-core"), _deps("jepa-image"), _deps("jepa-eval")
    assert "torchvision" not in core and "torch" in core and "einops" in core
    assert not any(d.startswith("jepa-") for d in core)
    assert "jepa-core" in image and "jepa-eval" not in image and "matplotlib" not in image
    assert "jepa-core" in ev and not any(d in ev for d in ("jepa-image", "jepa-video", "torchvision"))


def _dry_run(tmp_path: Path, *paths: str) -> set[str]:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed")
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", str(venv)], check=True)
    out = subprocess.run(
        [uv, "pip", "install", "--dry-run", "-p", str(venv), *[str(ROOT / p) for p in paths]],
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        pytest.skip(f"could not resolve (no package index?): {out.stderr[-300:]}")
    return {m.group(1).lower() for m in re.finditer(r"^ \+ ([A-Za-z0-9_.\-]+)(?:==| @ )", out.stderr + out.stdout, re.M)}


@pytest.mark.slow
def test_jepa_core_resolves_without_torchvision(tmp_path):
    names = _dry_run(tmp_path, "packages/jepa-core")
    assert {"jepa-core", "torch", "einops", "pyyaml", "tqdm"} <= names
    assert "torchvision" not in names and "matplotlib" not in names


@pytest.mark.slow
def test_jepa_image_resolves_to_only_what_it_needs(tmp_path):
    names = _dry_run(tmp_path, "packages/jepa-core", "packages/jepa-image")
    assert {"jepa-core", "jepa-image", "torch", "torchvision", "pillow", "numpy"} <= names
    assert not names & {"jepa-eval", "matplotlib", "av", "decord"}
