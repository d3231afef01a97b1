"""Packaging and release rules (issue: release-ready packages): one version source per
package, LICENSE / py.typed / CHANGELOG in every package, compatible-release bounds on
jepa-core, and the checks `nox -s release` and `nox -s build` run (scripts/release.py)."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import io
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
release = importlib.import_module("release")


@pytest.mark.parametrize("package", release.PACKAGES)
def test_one_version_source_and_release_files(package):
    module = importlib.import_module(release.module_name(package))
    assert module.__version__ == release.current_version(package) == md.version(package)
    pkg_dir = ROOT / "packages" / package
    assert 'dynamic = ["version"]' in (pkg_dir / "pyproject.toml").read_text()
    assert (pkg_dir / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
    assert (pkg_dir / "src" / release.module_name(package) / "py.typed").is_file()
    assert release.changelog_section(package, module.__version__)  # a non-empty section
    meta = md.metadata(package)
    assert meta["License-Expression"] == "MIT" and meta.get_all("Classifier")


def test_every_package_admits_the_current_core_with_a_compatible_release_bound():
    bounds = release.core_bounds()
    assert set(bounds) == set(release.PACKAGES[1:])
    assert all(spec.startswith("~=") for spec in bounds.values())
    release.check_bounds(release.current_version("jepa-core"))
    major, minor, _ = release.current_version("jepa-core").split(".")[:3]
    with pytest.raises(release.ReleaseError, match=rf"excludes jepa-core {major}\.{int(minor) + 1}\.0"):
        release.check_bounds(f"{major}.{int(minor) + 1}.0")


@pytest.fixture
def fake_root(tmp_path):
    """A copy of the files release.py reads (pyprojects, __init__ files, changelogs)."""
    for pkg in release.PACKAGES:
        src, dst = ROOT / "packages" / pkg, tmp_path / "packages" / pkg
        (dst / "src" / release.module_name(pkg)).mkdir(parents=True)
        for name in ("pyproject.toml", "CHANGELOG.md"):
            shutil.copy(src / name, dst / name)
        shutil.copy(release.init_file(pkg), release.init_file(pkg, tmp_path))
    return tmp_path


def test_prepare_checks_the_version_and_changelog_then_bumps(fake_root):
    old = release.current_version("jepa-skeleton", fake_root)
    with pytest.raises(release.ReleaseError, match="must be above the current"):
        release.prepare("jepa-skeleton", old, fake_root)
    with pytest.raises(release.ReleaseError, match="no section `## 9.9.9`"):
        release.prepare("jepa-skeleton", "9.9.9", fake_root)
    changelog = fake_root / "packages/jepa-skeleton/CHANGELOG.md"
    changelog.write_text(changelog.read_text() + "\n## 9.9.9\n\n")
    with pytest.raises(release.ReleaseError, match="is empty"):
        release.prepare("jepa-skeleton", "9.9.9", fake_root)
    changelog.write_text(changelog.read_text() + "- a fix\n")
    assert release.prepare("jepa-skeleton", "9.9.9", fake_root) == old
    assert release.current_version("jepa-skeleton", fake_root) == "9.9.9"
    assert release.current_version("jepa-image", fake_root) == release.current_version("jepa-image")
    with pytest.raises(release.ReleaseError, match="unknown package 'jepa-audio'"):
        release.prepare("jepa-audio", "1.0.0", fake_root)
    with pytest.raises(release.ReleaseError, match="not of the form"):
        release.prepare("jepa-image", "1.0", fake_root)


def test_a_new_core_minor_is_refused_until_the_dependents_bounds_move(fake_root):
    major, minor = release.current_version("jepa-core").split(".")[:2]
    new = f"{major}.{int(minor) + 1}.0"
    changelog = fake_root / "packages/jepa-core/CHANGELOG.md"
    changelog.write_text(changelog.read_text() + f"\n## {new}\n\n- new\n")
    with pytest.raises(release.ReleaseError, match=rf"raise it to `jepa-core~={major}\.{int(minor) + 1}\.0`"):
        release.prepare("jepa-core", new, fake_root)
    for pkg in release.PACKAGES[1:]:
        p = fake_root / "packages" / pkg / "pyproject.toml"
        p.write_text(p.read_text().replace(f'"jepa-core~={major}.{minor}.0"', f'"jepa-core~={new}"'))
    release.prepare("jepa-core", new, fake_root)
    assert release.current_version("jepa-core", fake_root) == new


def _fake_dist(dist: Path, drop: str | None = None) -> None:
    """A wheel and sdist of jepa-skeleton as `uv build` lays them out, minus ``drop``."""
    pkg, mod = "jepa-skeleton", "jepa_skeleton"
    version = release.current_version(pkg)
    src = ROOT / "packages" / pkg / "src" / mod
    files = {f"{mod}/{p.relative_to(src).as_posix()}": p.read_bytes() for p in src.rglob("*")
             if p.is_file() and "__pycache__" not in p.parts}
    info = f"{mod}-{version}.dist-info"
    files[f"{info}/licenses/LICENSE"] = b"MIT"
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.4\nName: {pkg}\nVersion: {version}\nLicense-Expression: MIT\n\n".encode()
    files.pop(drop, None)
    with zipfile.ZipFile(dist / f"{mod}-{version}-py3-none-any.whl", "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    with tarfile.open(dist / f"{mod}-{version}.tar.gz", "w:gz") as t:
        for name in ("LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", f"src/{mod}/__init__.py"):
            data = b"x"
            info_ = tarfile.TarInfo(f"{mod}-{version}/{name}")
            info_.size = len(data)
            t.addfile(info_, io.BytesIO(data))


def test_check_dist_accepts_a_complete_dist_and_names_what_is_missing(tmp_path):
    (tmp_path / "good").mkdir()
    _fake_dist(tmp_path / "good")
    assert len(release.check_dist(tmp_path / "good", ("jepa-skeleton",))) == 2
    (tmp_path / "bad").mkdir()
    _fake_dist(tmp_path / "bad", drop="jepa_skeleton/py.typed")
    with pytest.raises(release.ReleaseError, match="no jepa_skeleton/py.typed"):
        release.check_dist(tmp_path / "bad", ("jepa-skeleton",))
    (tmp_path / "preset").mkdir()
    _fake_dist(tmp_path / "preset", drop="jepa_skeleton/presets/sjepa_demo.yaml")
    with pytest.raises(release.ReleaseError, match="missing .*sjepa_demo.yaml"):
        release.check_dist(tmp_path / "preset", ("jepa-skeleton",))
    with pytest.raises(release.ReleaseError, match="expected one wheel and one sdist"):
        release.check_dist(tmp_path / "good", ("jepa-eval",))


def test_jepa_version_lists_each_installed_package_on_its_own_line():
    out = subprocess.run([sys.executable, "-m", "jepa_core.cli", "--version"], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    for pkg in release.PACKAGES:
        assert f"{pkg} {md.version(pkg)}" in out
