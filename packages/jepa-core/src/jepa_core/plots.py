"""Training curves from metrics.csv (matplotlib, imported only when plotting)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def plot_metrics(metrics_csv: str | Path, out_dir: str | Path) -> list[Path]:
    """Write ``loss.png`` (loss per step, log scale) and ``schedules.png`` (lr, wd, EMA momentum)."""
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
    return written
