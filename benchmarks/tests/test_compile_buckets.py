"""The prepared GPU script for compiled, bucketed steps (benchmarks/compile_buckets.py) runs its
CPU path: official masks give several lengths, buckets one shape per bucket."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parents[1]


def test_quick_cpu_run_prints_one_row_per_mode(capsys):
    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("compile_buckets", HERE / "compile_buckets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--quick", "--no-write", "--device", "cpu", "--modes", "eager,eager-buckets"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| eager")]
    assert [r.split("|")[1].strip() for r in rows] == ["eager", "eager-buckets"]
    lengths = [eval(r.split("|")[10]) for r in rows]  # noqa: S307  (our own table)
    assert len(lengths[0]) > 1 and len(lengths[1]) == 1  # official: varying; bucketed: one shape here
