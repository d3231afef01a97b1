"""The ``probes`` evaluator that `jepa pretrain` calls at the end of a run (entry point
``jepa.evaluators:probes``): linear and k-NN probes of frozen encoders, with baselines."""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

from jepa_eval.features import extract_features
from jepa_eval.probes import knn_probe, linear_probe

log = logging.getLogger(__name__)


def evaluate_encoders(
    encoders: dict[str, nn.Module],
    train_set,
    test_set,
    cfg,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> dict:
    """Probe each encoder (and the raw inputs when ``cfg.raw_baseline``) on ``train_set`` and
    score on ``test_set``. ``cfg`` is a :class:`jepa_core.config.EvalConfig`.
    Returns ``{"results": {name: {...}}, "markdown": table}``."""
    candidates: dict[str, nn.Module | None] = dict(encoders)
    if cfg.raw_baseline:
        candidates["raw pixels"] = None
    results = {}
    for name, enc in candidates.items():
        t0 = time.perf_counter()
        tr_x, tr_y = extract_features(enc, train_set, cfg.batch_size, device, cfg.train_samples)
        te_x, te_y = extract_features(enc, test_set, cfg.batch_size, device)
        lin = linear_probe(tr_x, tr_y, te_x, te_y, seed=seed)
        knn = knn_probe(tr_x, tr_y, te_x, te_y, tuple(cfg.knn_k), cfg.knn_temperature)
        feat_std = tr_x.std(0)
        results[name] = {
            "linear_probe": round(lin.accuracy, 2),
            "linear_probe_val": round(lin.val_accuracy, 2),
            "linear_probe_l2": lin.weight_decay,
            "knn": {str(k): round(v, 2) for k, v in knn.items()},
            "feature_dim": int(tr_x.shape[1]),
            "feature_std_mean": round(float(feat_std.mean()), 5),
            "train_samples": int(len(tr_y)),
            "test_samples": int(len(te_y)),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        log.info("probed %s: linear %.2f%%, k-NN %s", name, lin.accuracy, results[name]["knn"])
    return {"results": results, "markdown": markdown_table(results)}


def markdown_table(results: dict) -> str:
    ks = next(iter(results.values()))["knn"].keys() if results else []
    head = "| encoder | linear probe (%) | " + " | ".join(f"k-NN k={k} (%)" for k in ks) + " | features |"
    sep = "|---|---:|" + "---:|" * len(ks) + "---:|"
    rows = [
        f"| {name} | {r['linear_probe']:.2f} | " + " | ".join(f"{r['knn'][k]:.2f}" for k in ks) + f" | {r['feature_dim']} |"
        for name, r in results.items()
    ]
    n_tr = next(iter(results.values()))["train_samples"] if results else 0
    n_te = next(iter(results.values()))["test_samples"] if results else 0
    note = (
        f"\nMean-pooled last-layer features; logistic regression on standardised features with the L2 "
        f"strength chosen on a 10 % validation split of the {n_tr} training samples; cosine k-NN with "
        f"temperature-weighted votes. Scored on {n_te} held-out samples."
    )
    return "\n".join([head, sep, *rows]) + "\n" + note
