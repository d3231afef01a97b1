"""scripts/check_layering.py: the real tree is clean, and a deliberate bad import is caught."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check_layering.py"


def _checker():
    spec = importlib.util.spec_from_file_location("check_layering", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_layering"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _run(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root)],
                          capture_output=True, text=True, timeout=120)


def test_real_tree_has_no_layering_violation():
    result = _run(ROOT)
    assert result.returncode == 0, "layering violations:\n" + result.stdout


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


def _package(root: Path, name: str, deps: list[str]) -> Path:
    module = name.replace("-", "_")
    _write(root / "packages" / name / "pyproject.toml", f"""
        [project]
        name = "{name}"
        version = "0"
        dependencies = {json.dumps(deps)}

        [tool.hatch.build.targets.wheel]
        packages = ["src/{module}"]
    """)
    _write(root / "packages" / name / "src" / module / "__init__.py", "")
    return root / "packages" / name


def _fake_tree(root: Path) -> None:
    _write(root / "pyproject.toml", """
        [tool.layering]
        shared = ["jepa-core"]
        third-party = ["torch"]
    """)
    core = _package(root, "jepa-core", ["torch>=2.4"])
    image = _package(root, "jepa-image", ["jepa-core>=0.1.0"])
    _package(root, "jepa-video", ["jepa-core>=0.1.0"])
    evals = _package(root, "jepa-eval", ["jepa-core>=0.1.0"])
    _write(core / "src" / "jepa_core" / "x.py", """
        import torch
        from jepa_image import y
    """)
    _write(image / "src" / "jepa_image" / "y.py", """
        from jepa_core import x


        def late():
            import jepa_video.masks
            return jepa_video.masks
    """)
    _write(evals / "tests" / "test_e.py", """
        import pytest

        helper = pytest.importorskip("jepa_image.y")
    """)


def test_checker_reports_deliberate_bad_imports(tmp_path):
    _fake_tree(tmp_path)
    result = _run(tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert "packages/jepa-core/src/jepa_core/x.py:2: jepa_core imports jepa_image " \
           "(allowed: no other workspace package)" in lines
    assert "packages/jepa-image/src/jepa_image/y.py:5: jepa_image imports jepa_video " \
           "(allowed: jepa_core)" in lines
    # pytest is not in this fake tree's third-party list, so it is reported as well
    assert any(line.startswith("packages/jepa-eval/tests/test_e.py:3: jepa_eval imports jepa_image")
               for line in lines)
    assert any("jepa_eval imports unknown module pytest" in line for line in lines)
    assert len(lines) == 4, result.stdout


def test_checker_reports_a_sibling_dependency_in_the_table(tmp_path):
    _fake_tree(tmp_path)
    _package(tmp_path, "jepa-image", ["jepa-core>=0.1.0", "jepa-video"])
    violations, _ = _checker().check(tmp_path)
    messages = [str(v) for v in violations]
    assert "packages/jepa-image/pyproject.toml:4: jepa-image depends on jepa-video " \
           "(allowed: jepa-core)" in messages
    # declaring the sibling does not make the import legal
    assert any("jepa_image imports jepa_video (allowed: jepa_core)" in m for m in messages)


def test_a_new_package_needs_no_edit_of_the_checker(tmp_path):
    _fake_tree(tmp_path)
    skeleton = _package(tmp_path, "jepa-skeleton", ["jepa-core>=0.1.0"])
    _write(skeleton / "src" / "jepa_skeleton" / "model.py", """
        import importlib

        import jepa_core.x
        video = importlib.import_module("jepa_video")
    """)
    violations, _ = _checker().check(tmp_path)
    messages = [str(v) for v in violations]
    assert not any("model.py:3" in m for m in messages)
    assert "packages/jepa-skeleton/src/jepa_skeleton/model.py:4: jepa_skeleton imports " \
           "jepa_video (allowed: jepa_core)" in messages


def test_imports_of_sees_function_level_and_string_imports():
    source = textwrap.dedent("""
        import os.path
        from . import sibling
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from jepa_video import vjepa

        def f():
            import importlib
            importlib.import_module("jepa_image.ijepa")
            importlib.import_module(".relative", __package__)
            __import__("jepa_eval")
    """)
    found = [name for _, name in _checker().imports_of(source)]
    assert found == ["os.path", "typing", "jepa_video", "importlib", "jepa_image.ijepa",
                     "jepa_eval"]
