"""Low-shot linear probing: the linear probe on small class-balanced subsets of the labels.

I-JEPA reports ImageNet-1K 1 % low-shot (about 12-13 images per class; I-JEPA paper,
arXiv 2301.08243); here any fractions, over several random subsets, with mean and std.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from jepa_eval.probes import linear_probe


@dataclass
class LowShotResult:
    fraction: float
    mean: float  # mean test accuracy over the seeds, %
    std: float  # sample standard deviation over the seeds (0 with one seed), %
    accuracies: list[float]  # one per seed, in seed order
    samples: int  # training samples in each subset
    per_class: dict[int, int]  # training samples per class in each subset


def samples_per_class(labels: torch.Tensor, fraction: float) -> dict[int, int]:
    """``max(1, round(fraction * n_c))`` for every class c present in ``labels`` (halves round up)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    classes, counts = torch.unique(labels, return_counts=True)
    return {int(c): max(1, int(fraction * int(n) + 0.5)) for c, n in zip(classes, counts)}


def stratified_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Indices of a class-stratified random subset: ``max(1, round(fraction * n_c))`` samples of
    every class c, drawn without replacement with a generator seeded by ``seed``; sorted."""
    counts = samples_per_class(labels, fraction)
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c, k in counts.items():
        idx = (labels == c).nonzero().flatten()
        picked.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    return torch.cat(picked).sort().values


def low_shot(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    fractions: Sequence[float] = (0.01, 0.1),
    seeds: Sequence[int] = (0, 1, 2),
    **probe_kwargs,
) -> dict[float, LowShotResult]:
    """For each fraction and seed, a stratified subset of the training features
    (:func:`stratified_subset`), a linear probe on it (:func:`jepa_eval.probes.linear_probe`,
    L2 strength chosen on a split of the subset itself, never on test; ``probe_kwargs`` are
    passed on), scored on the full test set. Returns ``{fraction: LowShotResult}``.

    With very few samples per class the probe's validation split (10 %, at least one sample)
    is small and noisy; the probe is then refit on the whole subset.
    """
    train_y = train_y.long()
    out = {}
    for frac in fractions:
        accs = []
        for seed in seeds:
            idx = stratified_subset(train_y, frac, seed)
            res = linear_probe(train_x[idx], train_y[idx], test_x, test_y.long(), seed=seed, **probe_kwargs)
            accs.append(res.accuracy)
        per_class = samples_per_class(train_y, frac)
        out[frac] = LowShotResult(
            fraction=frac,
            mean=statistics.fmean(accs),
            std=statistics.stdev(accs) if len(accs) > 1 else 0.0,
            accuracies=accs,
            samples=sum(per_class.values()),
            per_class=per_class,
        )
    return out
