"""Training curves: the method's own metrics columns (e.g. DMT-JEPA's target std) are plotted."""

from __future__ import annotations

import csv

import pytest

pytest.importorskip("matplotlib")

from jepa_core.plots import plot_metrics  # noqa: E402


def _write(path, fields, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def test_method_columns_get_an_extras_plot(tmp_path):
    fields = ["step", "epoch", "loss", "lr", "wd", "momentum", "samples_per_s", "target_std", "note"]
    rows = [{"step": s, "epoch": s / 10, "loss": 1 / s, "lr": 1e-3, "wd": 0.04, "momentum": 0.996,
             "samples_per_s": 100, "target_std": 0.3 - s / 100, "note": "text"} for s in range(1, 6)]
    _write(tmp_path / "metrics.csv", fields, rows)
    written = {p.name for p in plot_metrics(tmp_path / "metrics.csv", tmp_path / "plots")}
    assert written == {"loss.png", "schedules.png", "extras.png"}
    assert (tmp_path / "plots" / "extras.png").stat().st_size > 1000


def test_no_extras_plot_for_trainer_columns_only(tmp_path):
    fields = ["step", "epoch", "loss", "lr", "samples_per_s", "peak_mem_mb"]
    _write(tmp_path / "metrics.csv", fields, [{"step": s, "epoch": 0, "loss": 1.0, "lr": 1e-3, "samples_per_s": 1,
                                               "peak_mem_mb": 10} for s in (1, 2)])
    written = {p.name for p in plot_metrics(tmp_path / "metrics.csv", tmp_path / "plots")}
    assert written == {"loss.png", "schedules.png"}
