"""The repository's benchmark script (benchmarks/run.py) and the official adapters' plumbing
(benchmarks/official.py; the comparisons themselves need checkouts: test_official_masks.py)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import official
import pytest
from jepa_core import benchmark

HERE = Path(__file__).resolve().parents[1]


def _load_run():
    spec = importlib.util.spec_from_file_location("benchmarks_run", HERE / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def run(monkeypatch):
    monkeypatch.setattr(benchmark, "_LOCAL", [])  # what the script registers stays in the test
    return _load_run()


def test_write_report_replaces_its_own_section(run, tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nintro\n")
    args = run.parser().parse_args(["--output", str(path)])
    run.write_report(args, "first\n")
    run.write_report(args, "second\n")
    text = path.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n")
    assert "second" in text and "first" not in text and text.count("bench:cpu-fp32:start") == 1
    args = run.parser().parse_args(["--output", str(path), "--official-ijepa", "x"])
    run.write_report(args, "theirs\n")
    assert "bench:cpu-fp32-official:start" in path.read_text()
    assert run.write_report(run.parser().parse_args(["--no-write"]), "x") is None


def test_script_runs_the_workspace_cases_without_writing(run, capsys):
    assert run.main(["--cases", "masks", "--repeats", "1", "--no-write"]) == 0
    out = capsys.readouterr().out
    assert "I-JEPA multi-block masks" in out and "V-JEPA 2 3-D multi-block masks" in out
    assert out.count("I-JEPA multi-block masks") == 1  # entry point and registration: one case
    assert "Command: `nox -s bench --`" in out


def test_adapters_from_the_options(run, tmp_path):
    args = run.parser().parse_args(["--official-ijepa", "a", "--official-vjepa2", "b"])
    ads = official.adapters(args)
    assert sorted(ads) == ["ijepa", "vjepa2"] and ads["vjepa2"].path == "b"
    with pytest.raises(FileNotFoundError, match="not an official JEPA checkout"):
        official.Official("ijepa", tmp_path).mask_collator(224)
    with pytest.raises(ValueError):
        official.Official("mae", tmp_path)


@pytest.mark.skipif(not os.environ.get("JEPA_OFFICIAL_IJEPA"), reason="set JEPA_OFFICIAL_IJEPA to a checkout")
def test_official_ijepa_step_has_our_loss():
    """The I-JEPA tiny step against the official one: same loss (checked by ``step``), both run."""
    from jepa_image import bench

    ctx = benchmark.Context(log=lambda s: None)
    model, _ = bench.build_model("tiny")
    model.train()
    theirs = official.Official("ijepa", os.environ["JEPA_OFFICIAL_IJEPA"]).step(model, bench.make_batch("tiny", ctx), ctx)
    assert float(theirs.step().detach()) > 0
