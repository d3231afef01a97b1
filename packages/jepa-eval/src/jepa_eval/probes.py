"""Linear and k-NN probes on frozen features."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class LinearProbeResult:
    accuracy: float  # on the test features, in %
    val_accuracy: float  # best validation accuracy, in %
    weight_decay: float  # the L2 strength chosen on validation
    grid: dict[float, float]  # validation accuracy for every grid point
    predictions: torch.Tensor | None = field(default=None, compare=False)  # predicted class per test sample


def standardize(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Zero mean, unit variance per dimension, with statistics of ``train`` only."""
    mean = train.mean(0, keepdim=True)
    std = train.std(0, keepdim=True).clamp_min(1e-6)
    return [(t - mean) / std for t in (train, *others)]


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int = 100) -> torch.Tensor:
    """Multinomial logistic regression, full-batch L-BFGS from zero, deterministic; returns [D+1, C]."""
    w = torch.zeros(x.shape[1] + 1, num_classes, dtype=torch.float32, requires_grad=True)
    xb = torch.cat([x.float(), torch.ones(len(x), 1)], 1)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xb @ w, y) + 0.5 * l2 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def _predict(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (torch.cat([x.float(), torch.ones(len(x), 1)], 1) @ w).argmax(1)


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    l2_grid: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
    val_fraction: float = 0.1,
    seed: int = 0,
) -> LinearProbeResult:
    """Logistic regression on standardised features. The L2 strength is chosen on a validation
    split held out of the training features (never on test), then the probe is refit on all
    training features and scored once on test."""
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(train_y), generator=g)
    n_val = max(1, int(len(perm) * val_fraction))
    val_idx, fit_idx = perm[:n_val], perm[n_val:]
    xf, xv = standardize(train_x[fit_idx], train_x[val_idx])
    grid = {}
    for l2 in l2_grid:
        w = _fit_logistic(xf, train_y[fit_idx], num_classes, l2)
        grid[l2] = 100.0 * (_predict(w, xv) == train_y[val_idx]).double().mean().item()
    best = max(grid, key=lambda k: (grid[k], -k))
    xtr, xte = standardize(train_x, test_x)
    w = _fit_logistic(xtr, train_y, num_classes, best)
    pred = _predict(w, xte)
    acc = 100.0 * (pred == test_y).double().mean().item()
    return LinearProbeResult(acc, grid[best], best, grid, pred)


@torch.no_grad()
def knn_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    ks: tuple[int, ...] = (10, 20, 200),
    temperature: float = 0.07,
    chunk: int = 1024,
) -> dict[int, float]:
    """Weighted k-NN on cosine similarity: each of the k nearest training samples votes for its
    class with weight ``exp(sim / T)`` (the DINO protocol). Returns accuracy in % per k."""
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    tr = F.normalize(train_x.float(), dim=1)
    te = F.normalize(test_x.float(), dim=1)
    kmax = min(max(ks), len(tr))
    correct = {k: 0 for k in ks}
    for i in range(0, len(te), chunk):
        sim = te[i : i + chunk] @ tr.T
        top_sim, top_idx = sim.topk(kmax, dim=1)
        top_lab = train_y[top_idx]
        weights = (top_sim / temperature).exp()
        for k in ks:
            kk = min(k, kmax)
            votes = torch.zeros(len(top_lab), num_classes)
            votes.scatter_add_(1, top_lab[:, :kk], weights[:, :kk])
            correct[k] += int((votes.argmax(1) == test_y[i : i + chunk]).sum())
    return {k: 100.0 * correct[k] / len(te) for k in ks}
