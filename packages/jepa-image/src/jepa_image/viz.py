"""Pictures of what the model is asked to do: sample masks drawn over images."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


def plot_masks(cfg, dataset, path: Path, n: int = 6) -> Path | None:
    """Draw ``n`` training images with the context block (blue) and the 4 target blocks
    (one colour each) of one collated batch, as the model sees them after truncation."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed; no mask picture written")
        return None
    from jepa_core.data import CorruptSampleError

    from jepa_image.ijepa import train_collate

    collate = train_collate(cfg)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.train.seed)
        # Corrupt samples are skipped here too (the trainer skips and counts them).
        samples: list[Any] = []
        for i in range(min(len(dataset), 50 * n)):
            if len(samples) == n:
                break
            try:
                samples.append(dataset[i])
            except CorruptSampleError:
                continue
        if not samples:
            log.warning("no readable sample among the first %d; no mask picture written", 50 * n)
            return None
        batch = collate(samples)
    images = batch["images"]
    mean = torch.tensor(cfg.data.mean).view(-1, 1, 1)
    std = torch.tensor(cfg.data.std).view(-1, 1, 1)
    grid = cfg.data.image_size // cfg.model.patch_size
    p = cfg.model.patch_size
    colours = [(1.0, 0.2, 0.2), (1.0, 0.8, 0.1), (0.2, 0.9, 0.3), (0.9, 0.3, 0.9), (1.0, 0.5, 0.0), (0.5, 1.0, 1.0)]
    fig, axes = plt.subplots(2, len(images), figsize=(2.2 * len(images), 4.6))
    for j in range(len(images)):
        img = (images[j] * std + mean).clamp(0, 1)
        img = img.repeat(3, 1, 1) if img.shape[0] == 1 else img
        img = img.permute(1, 2, 0)
        for row, (masks, title) in enumerate(((batch["masks_enc"], "context"), (batch["masks_pred"], "targets"))):
            overlay = img.clone() * 0.45
            for k, m in enumerate(masks):
                colour = torch.tensor((0.2, 0.5, 1.0) if title == "context" else colours[k % len(colours)])
                for idx in m[j].tolist():
                    r, c = divmod(idx, grid)
                    overlay[r * p : (r + 1) * p, c * p : (c + 1) * p] = 0.5 * img[r * p : (r + 1) * p, c * p : (c + 1) * p] + 0.5 * colour
            ax = axes[row, j]
            ax.imshow(overlay.numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"{title}\n({masks[0].shape[1]} tokens each)")
    fig.suptitle(f"I-JEPA masks on a {grid}x{grid} token grid: context (blue) and {len(batch['masks_pred'])} targets")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
