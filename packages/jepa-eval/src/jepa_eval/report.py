"""Evaluation reports: results.json, results.md and PNGs (accuracy per protocol, confusion
matrix, a 2-D projection of the features coloured by class, monitors over training, and for the
dense protocol the predicted vs true masks of a few held-out scenes)."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def write_report(results: dict, extras: dict, markdown: str, out_dir: Path, run_dir=None, plots: bool = True) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    (out_dir / "results.md").write_text("# Evaluation\n\n" + markdown + "\n")
    if not plots:
        return []
    import matplotlib

    matplotlib.use("Agg")
    written = [plot_accuracy(results, out_dir / "accuracy.png")] if any(map(_metrics, results.values())) else []
    # The confusion matrix of the first encoder's linear probe; without one, of its fine-tuning.
    first = next((n for n, x in extras.items() if n != "raw pixels" and "linear_predictions" in x), None)
    tuned = next((n for n, x in extras.items() if x.get("finetune_predictions") is not None), None)
    if first is not None:
        x = extras[first]
        written.append(plot_confusion(x["test_labels"], x["linear_predictions"], first, out_dir / "confusion.png"))
    elif tuned is not None:
        x = extras[tuned]
        written.append(plot_confusion(x["finetune_labels"], x["finetune_predictions"], tuned, out_dir / "confusion.png",
                                      protocol="Fine-tuning"))
    shown = {n: x for n, x in extras.items() if n != "raw pixels" and "test_features" in x}
    if shown:
        written.append(plot_projection(shown, out_dir / "projection.png"))
    if run_dir is not None:
        p = plot_training(Path(run_dir), out_dir / "training.png")
        if p is not None:
            written.append(p)
    return written


def _metrics(r: dict) -> dict[str, float]:
    out = {}
    if "linear_probe" in r:
        out["linear"] = r["linear_probe"]
    if "knn" in r:
        k = "20" if "20" in r["knn"] else next(iter(r["knn"]))
        out[f"k-NN (k={k})"] = r["knn"][k]
    for f, v in r.get("lowshot", {}).items():
        out[f"low-shot {float(f) * 100:g} %"] = v["mean"]
    if "attentive_probe" in r:
        out["attentive"] = r["attentive_probe"]
    if "finetune" in r:
        out["fine-tune"] = r["finetune"]
    for k, v in r.items():  # semi-supervised fine-tuning: finetune_1% (jepa_eval.pretrain.finetune_key)
        if k.startswith("finetune_") and k.endswith("%"):
            out[f"fine-tune {k[len('finetune_'):-1]} %"] = v
    return out


def plot_accuracy(results: dict, path: Path) -> Path:
    import matplotlib.pyplot as plt

    per = {name: _metrics(r) for name, r in results.items()}
    protocols = list(dict.fromkeys(k for m in per.values() for k in m))
    fig, ax = plt.subplots(figsize=(1.6 + 1.6 * len(protocols), 4))
    width = 0.8 / max(1, len(per))
    for i, (name, m) in enumerate(per.items()):
        xs = [j + i * width for j, p in enumerate(protocols) if p in m]
        ys = [m[p] for p in protocols if p in m]
        bars = ax.bar(xs, ys, width, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks([j + width * (len(per) - 1) / 2 for j in range(len(protocols))], protocols)
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Accuracy per protocol (held-out split)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_confusion(labels: torch.Tensor, preds: torch.Tensor, name: str, path: Path,
                   protocol: str = "Linear probe") -> Path:
    import matplotlib.pyplot as plt

    n = int(max(labels.max(), preds.max())) + 1
    cm = torch.zeros(n, n, dtype=torch.long)
    cm.index_put_((labels.long(), preds.long()), torch.ones_like(labels, dtype=torch.long), accumulate=True)
    rates = cm.float() / cm.sum(1, keepdim=True).clamp_min(1)
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    im = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if n <= 20:
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=6,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{protocol} confusion matrix: {name}")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_projection(extras: dict, path: Path, max_points: int = 3000) -> Path:
    """PCA of the standardised test features onto their first two components, per encoder."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(extras), figsize=(4.8 * len(extras) + 1, 4.6), squeeze=False,
                             constrained_layout=True)
    for ax, (name, x) in zip(axes[0], extras.items()):
        f, y = x["test_features"][:max_points].double(), x["test_labels"][:max_points]
        f = (f - f.mean(0)) / f.std(0).clamp_min(1e-8)
        _, _, v = torch.linalg.svd(f, full_matrices=False)
        xy = (f @ v[:2].T).numpy()
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=y.numpy(), cmap="tab10", s=4, alpha=0.7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    fig.colorbar(sc, ax=axes[0].tolist(), label="class")
    fig.suptitle("Test features projected on their first two principal components, coloured by class")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot_training(run_dir: Path, path: Path) -> Path | None:
    """Loss (metrics.csv) and the collapse monitors (monitors.csv) over training steps."""
    import matplotlib.pyplot as plt

    metrics, monitors = _read_csv(run_dir / "metrics.csv"), _read_csv(run_dir / "monitors.csv")
    if not metrics and not monitors:
        return None
    panels = [("loss", metrics, "training loss")]
    for key, title in (("rankme", "RankMe (effective rank)"), ("feature_std_ratio", "feature std x sqrt(D)"),
                       ("online_probe_acc", "online linear probe (%)")):
        if monitors and key in monitors[0]:
            panels.append((key, monitors, title))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.3), squeeze=False)
    for ax, (key, rows, title) in zip(axes[0], panels):
        pts = [(int(float(r["step"])), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        if pts:
            ax.plot(*zip(*pts), marker="." if len(pts) < 30 else None)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if key == "loss":
            ax.set_yscale("log")
    fig.suptitle("Monitors over training")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _frame(x: torch.Tensor):
    """An input ``[C, H, W]`` (or ``[C, T, H, W]``: the middle frame) as an image in [0, 1]."""
    x = x.detach().float().cpu()
    if x.ndim == 4:
        x = x[:, x.shape[1] // 2]
    x = x[:3] if x.shape[0] >= 3 else x[:1]
    x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-8)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def plot_dense_masks(dense_extras: dict, path: Path) -> Path:
    """Held-out scenes (rows): the input, the true class map, then each encoder's linear-probe
    and k-NN prediction (``dense_extras``: ``{encoder: jepa_eval.dense.dense_probe extras}``).
    Unlabeled pixels are white."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    first = next(iter(dense_extras.values()))
    names = first["classes"]
    n_cls = len(names)
    palette = plt.get_cmap("tab10" if n_cls <= 11 else "tab20")
    base = [(0.0, 0.0, 0.0)] + [palette(i % palette.N)[:3] for i in range(n_cls - 1)]  # background black
    cmap = ListedColormap(base[:n_cls]).with_extremes(bad=(1.0, 1.0, 1.0))
    images = first["images"]
    cols = [("input", None), ("true", first["true"])]
    for enc, x in dense_extras.items():
        cols += [(f"{enc}\nlinear", x["linear"]), (f"{enc}\nk-NN", x["knn"])]
    rows = len(first["true"])
    height = 1.75 * rows + 0.9
    fig, axes = plt.subplots(rows, len(cols), figsize=(1.7 * len(cols), height), squeeze=False)

    def show_map(ax, m):
        m = m.numpy()
        if m.ndim == 3:  # a clip's map: its middle frame
            m = m[m.shape[0] // 2]
        ax.imshow(np.ma.masked_where((m < 0) | (m >= n_cls), m), cmap=cmap, vmin=-0.5, vmax=n_cls - 0.5,
                  interpolation="nearest")

    for i in range(rows):
        for j, (title, maps) in enumerate(cols):
            ax = axes[i, j]
            if maps is None:
                ax.imshow(_frame(images[i]), cmap="gray", interpolation="nearest")
            else:
                show_map(ax, maps[i])
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=7)
    handles = [Patch(color=cmap(c), label=names[c]) for c in range(n_cls)]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, n_cls), fontsize=7, frameon=False)
    fig.suptitle("Dense probes on held-out scenes: predicted vs true class maps", fontsize=9)
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1 - 0.3 / height))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
