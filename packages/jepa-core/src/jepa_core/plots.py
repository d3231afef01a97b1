"""Training curves from metrics.csv (matplotlib, imported only when plotting)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

log = logging.getLogger(__name__)

# Columns every run logs (jepa_core.trainer); any other numeric column is a method's own
# extra (e.g. DMT-JEPA's target_std) and gets a panel in extras.png.
TRAINER_COLUMNS = frozenset({
    "step", "epoch", "loss", "lr", "wd", "momentum", "samples_per_s", "step_time_s", "elapsed_s",
    "bad_samples", "skipped_nonfinite", "peak_mem_mb", "rank",
})


def _floats(rows: list[dict], key: str) -> list[float] | None:
    try:
        return [float(r[key]) for r in rows]
    except (TypeError, ValueError):
        return None


def plot_metrics(metrics_csv: str | Path, out_dir: str | Path) -> list[Path]:
    """Write ``loss.png`` (loss per step, log scale), ``schedules.png`` (lr, wd, EMA momentum)
    and, when the method logs columns of its own, ``extras.png`` (one panel per column)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed (`pip install jepa-core[plots]`); no plots written")
        return []
    metrics_csv, out_dir = Path(metrics_csv), Path(out_dir)
    if not metrics_csv.exists():
        return []
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = [int(float(r["step"])) for r in rows]
    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, [float(r["loss"]) for r in rows])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "loss.png", dpi=120)
    plt.close(fig)
    written.append(out_dir / "loss.png")
    keys = [k for k in ("lr", "wd", "momentum") if k in rows[0]]
    if keys:
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3))
        for ax, k in zip(axes if len(keys) > 1 else [axes], keys):
            ax.plot(steps, [float(r[k]) for r in rows])
            ax.set_title({"lr": "learning rate", "wd": "weight decay", "momentum": "EMA momentum"}[k])
            ax.set_xlabel("optimizer step")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "schedules.png", dpi=120)
        plt.close(fig)
        written.append(out_dir / "schedules.png")
    extras = {k: v for k in rows[0] if k not in TRAINER_COLUMNS and (v := _floats(rows, k)) is not None}
    if extras:
        cols = min(len(extras), 3)
        n_rows = -(-len(extras) // cols)
        fig, axes = plt.subplots(n_rows, cols, figsize=(4 * cols, 3 * n_rows), squeeze=False)
        for ax, (k, values) in zip(axes.flat, extras.items()):
            ax.plot(steps, values)
            ax.set_title(k)
            ax.set_xlabel("optimizer step")
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(extras):]:
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(out_dir / "extras.png", dpi=120)
        plt.close(fig)
        written.append(out_dir / "extras.png")
    return written
