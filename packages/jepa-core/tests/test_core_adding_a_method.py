"""docs/adding-a-method.md runs: its ```python blocks, in order, in a fresh interpreter with
jepa-core alone (no jepa-image, jepa-video or jepa-eval module may be imported)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[3] / "docs" / "adding-a-method.md"
OTHER_PACKAGES = ("jepa_image", "jepa_video", "jepa_eval")


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


@pytest.mark.skipif(not DOC.is_file(), reason=f"{DOC} is not here (an installed wheel has no docs/ folder)")
def test_the_worked_example_runs_with_jepa_core_alone(tmp_path):
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 3, "the page lost its python blocks"
    # the example method itself stays short
    assert len([line for line in blocks[0].splitlines() if line.strip()]) < 100
    check = (
        "\nimport sys as _sys\n"
        f"_other = sorted(m for m in _sys.modules if m.split('.')[0] in {OTHER_PACKAGES!r})\n"
        "assert not _other, f'the example imported {_other}'\n"
        "print('DOC OK')\n"
    )
    script = tmp_path / "adding_a_method.py"
    script.write_text("\n".join(blocks) + check)
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", TMPDIR=str(tmp_path))  # the run folder too
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "DOC OK" in proc.stdout
