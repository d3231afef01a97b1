"""V-JEPA and V-JEPA 2 `jepa bench` cases (jepa_video.bench) and their entry point."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from jepa_core import benchmark
from jepa_video import bench


def _ctx(**kw) -> benchmark.Context:
    return benchmark.Context(repeats=1, warmup=0, log=lambda s: None, **kw)


def test_entry_point_names_the_cases():
    eps = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["entry-points"]
    ((name, value),) = eps["jepa.bench"].items()
    assert metadata.EntryPoint(name, value, "jepa.bench").load() is bench.CASES
    installed = [ep for ep in metadata.entry_points(group="jepa.bench") if ep.name == name]
    if installed:  # an environment synced since the entry point was added
        assert installed[0].load() is bench.CASES
    assert [c.name for c in bench.CASES] == ["masks", "steps", "data", "accuracy", "ckpt", "mcjepa"]
    assert [c.name for c in bench.CASES if not c.default] == ["accuracy", "ckpt"]
    # `jepa video check` comes through the same mechanism (group jepa.commands)
    ((name, value),) = eps["jepa.commands"].items()
    from jepa_video.check import main

    assert name == "video" and metadata.EntryPoint(name, value, "jepa.commands").load() is main


def test_accuracy_case_finds_pyav_exact_on_every_generated_case():
    rows = {r.name.split(":")[0]: r for r in bench.case_accuracy(_ctx())}
    assert "exact on 9 of 9" in rows["frame accuracy, pyav"].name


def test_masks_and_data_cases():
    ctx = _ctx()
    rows = bench.case_masks(ctx)
    assert [r.name.split(" 3-D")[0] for r in rows] == ["V-JEPA", "V-JEPA 2"]
    assert all(r.ours > 0 and r.theirs is None for r in rows)
    rows = bench.case_data(ctx)
    assert rows and all(r.note.endswith("clips/s") for r in rows)
    from dataclasses import replace

    assert bench.case_data(replace(ctx, methods=("iwm",))) == []  # --methods iwm: no video rows


@pytest.mark.parametrize("method", ["vjepa", "vjepa2"])
def test_model_and_batch_of_a_size(method):
    import torch

    model, cfg = bench.build_model(method, "tiny")
    batch = bench.make_batch("tiny", _ctx())
    assert cfg.model.encoder == "vit_tiny" and batch["videos"].shape == (4, 3, 16, 112, 112)
    with torch.no_grad():
        assert torch.isfinite(model(batch)["loss"])


@pytest.mark.slow
def test_steps_case_tiny():
    rows = bench.case_steps(_ctx(sizes=("tiny",), methods=("vjepa2",)))
    assert [r.name.split(" train")[0] for r in rows] == ["V-JEPA 2"] and rows[0].mem_ours > 0


def test_mcjepa_case_is_listed_and_runs(monkeypatch):
    assert "mcjepa" in benchmark.cases() and bench.case_mcjepa in [c.fn for c in benchmark.cases()["mcjepa"]]
    assert set(bench.MCJEPA_SIZES["tiny"]) == {"demo", "convnext_t"}  # both presets, each size
    assert bench.case_mcjepa(_ctx(methods=("vjepa",))) == []  # --methods without mcjepa
    model, batch, cfg = bench.build_mcjepa("convnext_t", "tiny", _ctx())
    assert cfg.model.encoder == "convnext_t" and batch["pairs"].shape == (2, 2, 3, 64, 64)
    assert batch["epoch"] >= cfg.loss.flow_start_epoch  # the step times the flow losses too
    monkeypatch.setitem(bench.MCJEPA_SIZES, "tiny", {"demo": (32, 2)})  # a smaller demo step, for the test
    (row,) = bench.case_mcjepa(_ctx())
    assert row.name.startswith("MC-JEPA train step (demo), conv 4 levels, expander 256x256x256, 2 pairs")
    assert row.ours > 0 and row.mem_ours > 0 and row.note.endswith("samples/s")
