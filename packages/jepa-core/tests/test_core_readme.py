"""The python examples of jepa-core's README run as written (so they cannot fall out of date)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[str]:
    if not README.is_file():
        pytest.skip(f"{README} not found (an installed wheel has no README beside its tests)")
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(_blocks()) >= 2


@pytest.mark.parametrize("index", [0, 1])
def test_readme_example_runs(index, capsys):
    blocks = _blocks()
    exec(compile(blocks[index], f"{README.name}[python block {index}]", "exec"), {"__name__": "readme_example"})
    if index == 1:  # the model-of-your-own example prints the predictions' shape
        assert "torch.Size([8, 4, 64])" in capsys.readouterr().out
