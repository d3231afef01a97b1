"""I-JEPA's `jepa bench` cases (jepa_image.bench) and their entry point."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import torch
from jepa_core import benchmark
from jepa_image import bench


def _ctx(**kw) -> benchmark.Context:
    return benchmark.Context(repeats=1, warmup=0, log=lambda s: None, **kw)


def test_entry_point_names_the_cases():
    eps = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["entry-points"]
    value = eps["jepa.bench"]["ijepa"]
    assert metadata.EntryPoint("ijepa", value, "jepa.bench").load() is bench.CASES
    installed = [ep for ep in metadata.entry_points(group="jepa.bench") if ep.name == "ijepa"]
    if installed:  # an environment synced since the entry point was added
        assert installed[0].load() is bench.CASES
    names = [c.name for c in bench.CASES]
    assert names == ["masks", "steps", "ema", "data", "ckpt"]
    assert [c.name for c in bench.CASES if not c.default] == ["ckpt"]


def test_masks_ema_and_data_cases():
    ctx = _ctx()
    (row,) = bench.case_masks(ctx)
    assert row.name.startswith("I-JEPA multi-block masks") and row.ours > 0 and row.theirs is None
    (row,) = bench.case_ema(ctx)
    assert row.theirs > 0 and row.speedup > 0  # the official loop is inline: always compared
    (row,) = bench.case_data(ctx)
    assert row.note.endswith("images/s")
    from dataclasses import replace

    assert bench.case_data(replace(ctx, methods=("vjepa",))) == []  # I-JEPA's loader, not asked for


def test_model_and_batch_of_a_size():
    model, cfg = bench.build_model("tiny")
    batch = bench.make_batch("tiny", _ctx())
    assert cfg.model.encoder == "vit_tiny" and batch["images"].shape == (16, 3, 224, 224)
    assert len(batch["masks_enc"]) == 1 and len(batch["masks_pred"]) == 4
    with torch.no_grad():
        assert torch.isfinite(model(batch)["loss"])


@pytest.mark.slow
def test_steps_case_tiny():
    (row,) = bench.case_steps(_ctx(sizes=("tiny",)))
    assert row.name.startswith("I-JEPA train step, vit_tiny") and row.mem_ours > 0 and row.theirs is None
    assert bench.case_steps(_ctx(methods=("vjepa",))) == []


def test_jepa_bench_runs_the_registered_cases(monkeypatch, capsys):
    from jepa_core.cli import main

    monkeypatch.setattr(benchmark, "_LOCAL", [])
    benchmark.register(*bench.CASES)
    assert main(["bench", "--cases", "masks", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("I-JEPA multi-block masks") == 1 and "Command: `jepa bench`" in out
