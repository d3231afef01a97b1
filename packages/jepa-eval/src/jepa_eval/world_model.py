"""The ``world_model`` evaluator: how good is the world model (the predictor) of an Image World
Model (IWM; Garrido et al. 2024, "Learning and Leveraging World Models in Visual Representation
Learning", arXiv 2403.00504), beside the usual frozen-encoder probes.

Two measures from the paper:

* **MRR** (:func:`world_model_mrr`): for an image and a bank of candidate transformations (the
  paper: 256), the predictor, given the image and one transformation, should land closer to the
  target latent of the image transformed by *that* transformation than to those of the others;
  the mean reciprocal rank of the true candidate (:func:`mean_reciprocal_rank`) is 1 for a perfect
  world model and :func:`chance_mrr` for one that ignores the action. Which images the paper
  scores is not stated in the sources we could check; here: the first ``mrr_images`` of the
  held-out split of ``spec.build_eval_data``.
* **Predictor fine-tuning** (:func:`predictor_finetune`): the frozen teacher (EMA target) encoder,
  then the predictor asked for the untransformed image (null action), trained together with an
  attentive head; the pretrained predictor gets 1/10 of the learning rate used for a randomly
  initialised one (``predictor_lr_scale``).

The method supplies the model side through ``spec.extra["world_model"]``, a callable
``make(model, cfg) -> WorldModel`` (the :class:`WorldModel` protocol below is the contract).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from jepa_core.config import ConfigError
from jepa_core.schedules import WarmupCosine
from torch import Tensor, nn
from torch.utils.data import Subset

from jepa_eval.attentive import AttentiveClassifier, extract_tokens
from jepa_eval.features import CorruptSamples, iterate_samples
from jepa_eval.pretrain import DEFAULT_MAX_BAD_FRACTION, evaluate_encoders
from jepa_eval.pretrain import check_config as check_probes_config

log = logging.getLogger(__name__)

__all__ = ["WorldModel", "chance_mrr", "check_config", "evaluate_world_model", "mean_reciprocal_rank",
           "predictor_finetune", "world_model_markdown", "world_model_mrr"]

CACHE_FLOAT32_BYTES = 4 << 30  # token caches larger than this in float32 are kept in float16
# Images per MRR batch (each gives N candidates and N predictions) unless world_model_eval has mrr_batch_size.
MRR_BATCH_SIZE = 16


@runtime_checkable
class WorldModel(Protocol):
    """What the ``world_model`` evaluator needs of a method, built by ``spec.extra["world_model"]
    (model, cfg)``. Images are batches ``[B, C, H, W]`` of the eval datasets, already on the
    evaluation device. ``encode`` and ``world_model_batch`` run without gradients and in eval mode
    (the adapter puts its modules in eval mode and restores them). Actions are the adapter's
    business: the evaluator never sees them, only the predictions and targets they give."""

    def encode(self, images: Tensor) -> Tensor:
        """Frozen encoder tokens [B, T, D] of clean images (the EMA target encoder), no grad."""

    def finetune_predictor(self, pretrained: bool = True) -> nn.Module:
        """A fresh trainable copy of the predictor as a module tokens [B, T, D] -> tokens [B, T', D'] (asked
        for the untransformed image with the null action); pretrained=False: same architecture re-initialised
        (from the global RNG, which the evaluator seeds). Training it must not change the model."""

    def world_model_batch(self, images: Tensor, n_candidates: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(predictions [B, N, F], candidates [B, N, F]): for each image and each of N sampled actions, the
        predictor's output for that action and the target latent of the image transformed by it. Actions
        are drawn from ``generator`` only (a CPU generator), so that the result is reproducible."""


def mean_reciprocal_rank(predictions: Tensor, candidates: Tensor) -> float:
    """MRR of ``predictions [B, N, F]`` against ``candidates [B, N, F]``.

    For every image b and every candidate j taken as the true one, candidates[b, :] are ranked by
    L2 distance to predictions[b, j]; rank = 1 + the number of candidates *strictly* closer than
    candidates[b, j] (ties count in the prediction's favour). MRR = mean of 1 / rank over all
    (b, j). Distances: ``torch.cdist`` ``[B, N, N]`` in float32 computed directly (not through
    ``|x|^2 + |y|^2 - 2 x.y``, whose cancellation could break exact ties and zero distances)."""
    if predictions.shape != candidates.shape or predictions.ndim != 3:
        raise ValueError(f"predictions and candidates must both be [B, N, F], got {tuple(predictions.shape)} "
                         f"and {tuple(candidates.shape)}")
    d = torch.cdist(predictions.float(), candidates.float(), compute_mode="donot_use_mm_for_euclid_dist")
    true = d.diagonal(dim1=1, dim2=2).unsqueeze(-1)  # [B, N, 1]: distance to the true candidate
    rank = 1 + (d < true).sum(-1)
    return float((1.0 / rank.double()).mean())


def chance_mrr(n: int) -> float:
    """The MRR of a predictor that ignores the action: H_n / n (H_n = 1 + 1/2 + ... + 1/n).

    Proof: its prediction p_b is the same for every j, so the N true candidates of image b are
    ranked against the same distances |p_b - c_b,k|; without ties the ranks of c_b,1..c_b,N are a
    permutation of 1..N, and the mean of 1/rank is (1/N) sum_r 1/r = H_N / N, for any candidates.
    (With ties the favourable rule only raises it.) chance_mrr(256) = 0.0239."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return sum(1.0 / r for r in range(1, n + 1)) / n


@torch.no_grad()
def world_model_mrr(wm: WorldModel, dataset, n_candidates: int, n_images: int | None, batch_size: int, seed: int,
                    device: torch.device | str = "cpu",
                    max_bad_fraction: float | None = DEFAULT_MAX_BAD_FRACTION) -> float:
    """The mean over the first ``n_images`` of ``dataset`` ((image, label) pairs; None: all) of the
    per-image MRR over ``n_candidates`` sampled transformations (:func:`mean_reciprocal_rank`).
    One CPU generator seeded with ``seed`` serves every batch, drawn in dataset order: the result
    is deterministic for a seed and a batch size. Corrupt samples are skipped (see
    :class:`jepa_eval.features.CorruptSamples`)."""
    generator = torch.Generator().manual_seed(seed)
    corrupt = CorruptSamples(dataset, n_images, max_bad_fraction, "held-out (world-model MRR)")
    total, count = 0.0, 0
    for (x, _), _ in iterate_samples(dataset, batch_size, corrupt):
        pred, cand = wm.world_model_batch(x.to(device), n_candidates, generator)
        total += mean_reciprocal_rank(pred, cand) * len(x)
        count += len(x)
    if not count:
        raise ValueError("no images to score the world model on (the dataset is empty or every sample is corrupt)")
    return total / count


# ------------------------------------------------------------------------------------------------
# Predictor fine-tuning


class _Frozen(nn.Module):
    """``wm.encode`` as a module, for :func:`jepa_eval.attentive.extract_tokens`."""

    def __init__(self, wm: WorldModel):
        super().__init__()
        self.wm = wm

    def forward(self, x: Tensor) -> Tensor:
        return self.wm.encode(x)


def _encode_all(wm: WorldModel, dataset, batch_size: int, device, max_bad_fraction, name: str) -> tuple[Tensor, Tensor]:
    corrupt = CorruptSamples(dataset, None, max_bad_fraction, name)
    tokens, labels = extract_tokens(_Frozen(wm), dataset, batch_size, device, corrupt=corrupt)
    return (tokens.half() if tokens.numel() * 4 > CACHE_FLOAT32_BYTES else tokens), labels


def _num_heads(dim: int, hint: int | None) -> int:
    """The predictor's head count when it has one that divides ``dim``, else heads of >= 64
    channels (12 for 768, 6 for 384) or one head."""
    if hint and dim % hint == 0:
        return int(hint)
    return next((h for h in (16, 12, 8, 6, 4, 2) if dim % h == 0 and dim // h >= 64), 1)


def predictor_finetune(wm: WorldModel, train_set, test_set, *, epochs: int, lr: float, predictor_lr_scale: float,
                       weight_decay: float, batch_size: int, pretrained: bool, seed: int,
                       device: torch.device | str = "cpu", num_classes: int | None = None,
                       max_bad_fraction: float | None = DEFAULT_MAX_BAD_FRACTION) -> float:
    """Test top-1 (%) of the paper's predictor fine-tuning: ``wm.encode`` (frozen teacher encoder)
    -> ``wm.finetune_predictor(pretrained)`` (null action; trained) -> an attentive head
    (:class:`jepa_eval.attentive.AttentiveClassifier`, V-JEPA form, depth 1: a learned query
    cross-attending to the predictor's output tokens, then a linear layer).

    The encoder is frozen and the inputs are not augmented, so its tokens are computed once per
    split and cached on CPU: float32, or float16 when the float32 cache would exceed 4 GiB (they
    are fed to the predictor as float32). AdamW (every parameter decayed by ``weight_decay``),
    per-step cosine from the LR to 0 without warm-up, cross-entropy, ``epochs`` passes in batches
    of ``batch_size``. LRs: the head ``lr``; the predictor ``lr * predictor_lr_scale`` when
    ``pretrained`` (the paper: 1/10 of a random predictor's LR), else ``lr``. The predictor's
    re-initialisation, the head's init and the batch order are seeded by ``seed`` (the global RNG
    state is restored): deterministic on CPU."""
    device = torch.device(device)
    tr_x, tr_y = _encode_all(wm, train_set, batch_size, device, max_bad_fraction, "training (predictor fine-tuning)")
    te_x, te_y = _encode_all(wm, test_set, batch_size, device, max_bad_fraction, "held-out (predictor fine-tuning)")
    if num_classes is None:
        num_classes = int(max(tr_y.max(), te_y.max())) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        predictor = wm.finetune_predictor(pretrained).to(device)
        with torch.no_grad():
            dim = predictor(tr_x[:1].to(device, torch.float32)).shape[-1]
        head = AttentiveClassifier(dim, _num_heads(dim, getattr(predictor, "num_heads", None)), num_classes,
                                   depth=1, form="vjepa").to(device)
    groups: list[dict[str, Any]] = [{"params": list(predictor.parameters()), "lr": lr * predictor_lr_scale if pretrained else lr},
              {"params": list(head.parameters()), "lr": lr}]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(tr_y) / batch_size)
    schedules = [WarmupCosine(g["lr"], g["lr"], 0.0, 0, epochs * steps_per_epoch) for g in groups]
    gen = torch.Generator().manual_seed(seed)
    predictor.train()
    head.train()
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(len(tr_y), generator=gen)
        for b in range(steps_per_epoch):
            idx = perm[b * batch_size:(b + 1) * batch_size]
            for g, s in zip(opt.param_groups, schedules):
                g["lr"] = s.value(step)
            loss = F.cross_entropy(head(predictor(tr_x[idx].to(device, torch.float32))), tr_y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    predictor.eval()
    head.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(te_y), batch_size):
            logits = head(predictor(te_x[i:i + batch_size].to(device, torch.float32)))
            correct += int((logits.argmax(1).cpu() == te_y[i:i + batch_size]).sum())
    return 100.0 * correct / len(te_y)


def _settings(cfg):
    s = getattr(cfg, "world_model_eval", None)
    if s is None:
        raise ConfigError("the world_model evaluator reads a `world_model_eval` section of the method's config "
                          "(mrr, mrr_candidates, mrr_images, predictor_finetune, finetune_epochs, finetune_lr, "
                          "predictor_lr_scale, finetune_weight_decay, finetune_batch_size, random_predictor); this "
                          "config has none: add it, or set the method's evaluator to 'probes'")
    return s


_CHECKS = (("mrr", "a bool", lambda v: isinstance(v, bool)),
           ("predictor_finetune", "a bool", lambda v: isinstance(v, bool)),
           ("random_predictor", "a bool", lambda v: isinstance(v, bool)),
           ("mrr_candidates", "an integer >= 2 (one candidate always ranks first)", lambda v: _int(v) and v >= 2),
           ("mrr_images", "an integer >= 1", lambda v: _int(v) and v >= 1),
           ("finetune_epochs", "an integer >= 1", lambda v: _int(v) and v >= 1),
           ("finetune_batch_size", "an integer >= 1", lambda v: _int(v) and v >= 1),
           ("finetune_lr", "a finite number > 0", lambda v: _num(v) and v > 0),
           ("predictor_lr_scale", "a finite number > 0", lambda v: _num(v) and v > 0),
           ("finetune_weight_decay", "a finite number >= 0", lambda v: _num(v) and v >= 0))


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v) -> bool:
    return _int(v) or isinstance(v, float) and math.isfinite(v)


def check_config(cfg) -> None:
    """Validate ``cfg.world_model_eval`` (and the probes' ``cfg.eval``); `jepa pretrain` calls it
    before training as ``evaluate_world_model.check_config``."""
    check_probes_config(cfg)
    s = _settings(cfg)
    for key, what, ok in _CHECKS:
        v = getattr(s, key, None)
        if not ok(v):
            raise ConfigError(f"world_model_eval.{key} must be {what}, got {v!r}")


def evaluate_world_model(spec, cfg, model, device: torch.device | str = "cpu", out_dir: str | Path | None = None,
                         run_dir: str | Path | None = None) -> dict | None:
    """The ``world_model`` evaluator (the call: :mod:`jepa_core.registry`): the ``probes`` evaluator's
    output (:func:`jepa_eval.pretrain.evaluate_encoders`, unchanged) plus ``results["world_model"]``
    and a markdown section "World model". Settings: ``cfg.world_model_eval``; data:
    ``spec.build_eval_data(cfg)`` (MRR: the held-out split; fine-tuning: the first
    ``eval.train_samples`` training samples, or all; labels as they are, ``eval_tasks`` are not applied); adapter:
    ``spec.extra["world_model"](model, cfg)`` (:class:`WorldModel`).

    Rows: the pretrained model (MRR and predictor fine-tuning); with ``cfg.eval.random_baseline``
    the randomly initialised model (``spec.build_model`` under seed ``train.seed + 1``, as the
    probes' random row; MRR only); with ``random_predictor`` the pretrained encoder with a
    re-initialised predictor (fine-tuning only, at ``finetune_lr``); chance (MRR of a predictor
    that ignores the action). MRR batches: ``world_model_eval.mrr_batch_size`` images if the section
    has it, else :data:`MRR_BATCH_SIZE`. ``results["world_model"] = {"rows": {row: {"mrr": float,
    "predictor_finetune": top-1 %}}, "settings": {...}, "seconds": float}``, also written to
    ``out_dir/world_model.json``."""
    check_config(cfg)
    make = (getattr(spec, "extra", None) or {}).get("world_model")
    if make is None:
        raise ConfigError(f"method {spec.name!r} has no world-model adapter: the world_model evaluator needs "
                          "MethodSpec.extra['world_model'] = make(model, cfg) -> jepa_eval.world_model.WorldModel; "
                          "set it, or set the method's evaluator to 'probes'")
    s = _settings(cfg)
    out = evaluate_encoders(spec, cfg, model, device, out_dir=out_dir, run_dir=run_dir)
    if spec.build_eval_data is None or not (s.mrr or s.predictor_finetune):
        log.info("no world-model evaluation (%s)", "no labelled eval data" if s.mrr or s.predictor_finetune
                 else "world_model_eval.mrr and predictor_finetune are off")
        return out
    assert out is not None  # evaluate_encoders returns None only when build_eval_data is None
    t0 = time.perf_counter()
    seed = cfg.train.seed
    bad = getattr(cfg.train, "max_bad_fraction", DEFAULT_MAX_BAD_FRACTION)
    train_set, test_set = spec.build_eval_data(cfg)
    if cfg.eval.train_samples is not None:  # the probes' cap on labelled training samples
        train_set = Subset(train_set, range(min(cfg.eval.train_samples, len(train_set))))
    name = "pretrained (EMA target)" if getattr(model, "target_modules", dict)() else "pretrained"
    rows: dict[str, dict] = {name: {}}
    wm = make(model, cfg)
    if s.mrr:
        mrr_batch = int(getattr(s, "mrr_batch_size", MRR_BATCH_SIZE))
        models = {name: wm}
        if cfg.eval.random_baseline:
            with torch.random.fork_rng():
                torch.manual_seed(seed + 1)
                models["random init"] = make(spec.build_model(cfg).to(device), cfg)
        for row, m in models.items():
            rows.setdefault(row, {})["mrr"] = round(world_model_mrr(
                m, test_set, s.mrr_candidates, s.mrr_images, mrr_batch, seed, device, bad), 4)
            log.info("world-model MRR of %s over %d candidates: %.4f", row, s.mrr_candidates, rows[row]["mrr"])
        del models
    if s.predictor_finetune:
        kinds = {name: True, **({"pretrained encoder, re-initialised predictor": False} if s.random_predictor else {})}
        for row, pretrained in kinds.items():
            acc = predictor_finetune(wm, train_set, test_set, epochs=s.finetune_epochs, lr=s.finetune_lr,
                                     predictor_lr_scale=s.predictor_lr_scale, weight_decay=s.finetune_weight_decay,
                                     batch_size=s.finetune_batch_size, pretrained=pretrained, seed=seed,
                                     device=device, max_bad_fraction=bad)
            rows.setdefault(row, {})["predictor_finetune"] = round(acc, 2)
            log.info("predictor fine-tuning of %s: top-1 %.2f%%", row, acc)
    if s.mrr:
        rows["chance (action ignored)"] = {"mrr": round(chance_mrr(s.mrr_candidates), 4)}
    settings = {k: getattr(s, k) for k, _, _ in _CHECKS}
    wm_results = {"rows": rows, "settings": settings, "seconds": round(time.perf_counter() - t0, 1)}
    section = world_model_markdown(wm_results)
    out["results"]["world_model"] = wm_results
    if out_dir is not None:  # beside the probes' files, and inside them: one results.json / results.md
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "world_model.json").write_text(json.dumps(wm_results, indent=2))
        (folder / "results.json").write_text(json.dumps(out["results"], indent=2))
        md = folder / "results.md"
        md.write_text((md.read_text().rstrip("\n") + "\n\n" if md.exists() else "# Evaluation\n\n") + section + "\n")
    out["markdown"] = "\n\n".join(p for p in (out["markdown"], section) if p)
    return out


evaluate_world_model.check_config = check_config  # type: ignore[attr-defined]


def world_model_markdown(wm_results: dict) -> str:
    """The "World model" section: one row per model, its MRR and predictor fine-tuning top-1."""
    s = wm_results["settings"]

    def cell(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = ["### World model", "", "| row | MRR | predictor fine-tuning top-1 (%) |", "|---|---:|---:|"]
    lines += [f"| {row} | {cell(r.get('mrr'), '.4f')} | {cell(r.get('predictor_finetune'), '.2f')} |"
              for row, r in wm_results["rows"].items()]
    notes = []
    if s["mrr"]:
        notes.append(f"MRR: rank of the target latent of the truly transformed image among {s['mrr_candidates']} "
                     f"candidate transformations, by L2 distance to the prediction, over the first {s['mrr_images']} "
                     "held-out images (1 = perfect world model).")
    if s["predictor_finetune"]:
        notes.append(f"Predictor fine-tuning: frozen target encoder, predictor (null action) + attentive head "
                     f"trained {s['finetune_epochs']} epochs at LR {s['finetune_lr']:g} (pretrained predictor: x "
                     f"{s['predictor_lr_scale']:g}); held-out top-1.")
    return "\n".join(lines) + "\n\n" + " ".join(notes)
