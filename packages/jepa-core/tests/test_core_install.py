"""jepa-core stands alone: its modules import no modality package, no jepa-eval and no torchvision,
even where those are installed (a subprocess, so other tests' imports do not count)."""

from __future__ import annotations

import json
import subprocess
import sys

MODULES = ["jepa_core", "jepa_core.nn", "jepa_core.nn.interfaces", "jepa_core.masks", "jepa_core.method",
           "jepa_core.trainer", "jepa_core.run", "jepa_core.registry", "jepa_core.pretrained", "jepa_core.cli",
           "jepa_core.testing", "jepa_core.sizes"]
FORBIDDEN = ("jepa_image", "jepa_video", "jepa_eval", "jepa_skeleton", "torchvision")


def test_import_pulls_in_no_other_package():
    code = ("import importlib, json, sys\n"
            f"for name in {MODULES!r}:\n"
            "    before = set(sys.modules)\n"
            "    importlib.import_module(name)\n"
            "    print(json.dumps([name, sorted(set(sys.modules) - before)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    for line in out.stdout.strip().splitlines():
        name, loaded = json.loads(line)
        bad = [m for m in loaded if m.split(".")[0] in FORBIDDEN]
        assert not bad, f"import {name} pulled in {bad}"


def test_cli_list_and_help_load_no_modality_code_until_asked():
    """`jepa --help` builds the parser without importing any method package."""
    code = ("import sys, json, contextlib, io\nfrom jepa_core.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert not [m for m in loaded if m.split(".")[0] in FORBIDDEN]
