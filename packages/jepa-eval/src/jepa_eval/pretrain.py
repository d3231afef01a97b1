"""The evaluators `jepa pretrain` and `jepa eval` call through jepa-core's registry (entry points
``jepa.evaluators``): ``probes`` (:func:`evaluate_encoders`) builds the table of frozen encoders
of a trained method (its ``eval_encoder()``, a randomly initialised one, the method's own
baselines) and runs the configured protocols on them (:func:`probe_encoders`); ``monitor``
builds the collapse-monitor callback for pretraining."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from jepa_core.config import ConfigError
from jepa_core.nn.interfaces import Encoder
from torch import nn

from jepa_eval.features import CorruptSamples, extract_features
from jepa_eval.probes import knn_probe, linear_probe

log = logging.getLogger(__name__)

PROTOCOLS = ("linear", "knn", "attentive", "lowshot", "finetune", "dense")
NEEDS_TOKENS = {"attentive", "finetune"}  # not meaningful for the raw-input baseline
DEFAULT_MAX_BAD_FRACTION = 0.01  # as jepa_core's train.max_bad_fraction


def evaluate_encoders(spec, cfg, model, device: torch.device | str = "cpu", out_dir: str | Path | None = None,
                      run_dir: str | Path | None = None) -> dict | None:
    """The ``probes`` evaluator (``MethodSpec.evaluator = "probes"``, the default; the call is
    documented in :mod:`jepa_core.registry`): probe the frozen encoders of a trained method.

    Rows: ``model.eval_encoder()`` ("pretrained (EMA target)" for a method with target modules,
    else "pretrained"); with ``cfg.eval.random_baseline`` the same encoder freshly built
    (``spec.build_model`` under seed ``train.seed + 1``); ``spec.eval_baselines(cfg, device,
    run_dir)``; with ``cfg.eval.raw_baseline`` the raw inputs. Data: ``spec.build_eval_data(cfg)``;
    labelings: ``spec.eval_tasks(cfg)``. Settings: ``cfg.eval``. Corrupt samples are skipped up to
    ``cfg.train.max_bad_fraction`` of each split (see :func:`probe_encoders`). The ``dense``
    protocol reads ``spec.build_dense_eval_data(cfg)`` (``(input, label map)`` pairs); without
    it, ``dense`` alone is a :class:`ConfigError` and ``dense`` beside other protocols is skipped
    with a warning. Returns None (nothing to probe) when the method has neither
    ``build_eval_data`` nor dense data."""
    check_config(cfg)
    dense_data = None
    if "dense" in cfg.eval.protocols:
        hook = getattr(spec, "build_dense_eval_data", None)
        dense_data = hook(cfg) if hook is not None else None
        if dense_data is None:
            why = (f"method {spec.name!r} has no dense evaluation data (MethodSpec.build_dense_eval_data"
                   f"{' returned None for this config' if hook is not None else ' is not set'})")
            if all(p == "dense" for p in cfg.eval.protocols):
                raise ConfigError(f"eval protocol 'dense' cannot run: {why}; pick another protocol "
                                  f"({', '.join(p for p in PROTOCOLS if p != 'dense')})")
            log.warning("skipping the dense protocol: %s", why)
    if spec.build_eval_data is None and dense_data is None:
        log.info("method %r has no labeled evaluation data (MethodSpec.build_eval_data); no probes", spec.name)
        return None
    ev = cfg.eval
    if spec.build_eval_data is None:  # dense data only: the other protocols have nothing to read
        others = [p for p in ev.protocols if p != "dense"]
        if others:
            log.warning("method %r has no labeled evaluation data (MethodSpec.build_eval_data); skipping %s",
                        spec.name, ", ".join(others))
        ev = dataclasses.replace(ev, protocols=("dense",))
    train_set, test_set = spec.build_eval_data(cfg) if spec.build_eval_data is not None else (None, None)
    has_targets = bool(getattr(model, "target_modules", dict)())
    encoders = {"pretrained (EMA target)" if has_targets else "pretrained": model.eval_encoder()}
    if cfg.eval.random_baseline:
        with torch.random.fork_rng():
            torch.manual_seed(cfg.train.seed + 1)
            encoders["random init"] = spec.build_model(cfg).eval_encoder().to(device)
    if spec.eval_baselines is not None:
        encoders.update(spec.eval_baselines(cfg, device, run_dir))
    tasks = spec.eval_tasks(cfg) if spec.eval_tasks is not None else None
    out = probe_encoders(encoders, train_set, test_set, ev, device=device, seed=cfg.train.seed,
                         out_dir=out_dir, run_dir=run_dir, tasks=tasks or None,
                         max_bad_fraction=getattr(cfg.train, "max_bad_fraction", DEFAULT_MAX_BAD_FRACTION),
                         dense_data=dense_data, progress=getattr(cfg.train, "progress", True))
    out["title"] = "Evaluation (frozen encoders)"
    return out


def check_config(cfg) -> None:
    """Validate the run's ``eval`` section for the probes (called by `jepa pretrain` before
    training, as ``evaluate_encoders.check_config``): known protocols, attentive form, dense settings."""
    _check_eval(cfg.eval)


evaluate_encoders.check_config = check_config  # type: ignore[attr-defined]


def _check_eval(ev) -> None:
    from jepa_eval.attentive import DEFAULT_DEPTH

    unknown = [p for p in ev.protocols if p not in PROTOCOLS]
    if unknown:
        raise ConfigError(f"unknown evaluation protocol {unknown[0]!r}; valid: {', '.join(PROTOCOLS)}")
    if ev.attentive_form is not None and ev.attentive_form not in DEFAULT_DEPTH:
        raise ConfigError(
            f"eval.attentive_form must be one of {', '.join(DEFAULT_DEPTH)} (the V-JEPA or the V-JEPA 2 "
            f"attentive probe), got {ev.attentive_form!r}"
        )
    for key, ok, what in (("dense_epochs", lambda v: v >= 1, ">= 1"), ("dense_batch_size", lambda v: v >= 1, ">= 1"),
                          ("dense_knn_k", lambda v: v >= 1, ">= 1"), ("dense_lr", lambda v: v > 0, "> 0")):
        v = getattr(ev, key, None)
        if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(v):
            raise ConfigError(f"eval.{key} must be a finite number {what} (the dense protocol's setting), got {v!r}")


def probe_encoders(
    encoders: dict[str, nn.Module],
    train_set,
    test_set,
    cfg,
    device: torch.device | str = "cpu",
    seed: int = 0,
    out_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
    tasks: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    max_bad_fraction: float | None = DEFAULT_MAX_BAD_FRACTION,
    dense_data: tuple | None = None,
    progress: bool = True,
) -> dict:
    """Run ``cfg.protocols`` (a :class:`jepa_core.config.EvalConfig`) on every encoder and, when
    ``cfg.raw_baseline``, on the raw inputs. Features are extracted once per encoder and split.
    With ``out_dir``, writes results.json, results.md and PNGs there (``run_dir``: a pretraining
    run whose metrics.csv / monitors.csv give the curves over training).

    ``tasks``: several labelings of the same samples, ``{task name: labels -> task labels}``
    (e.g. a video's motion direction and its object class). Each encoder is still run once; the
    probes are trained per task. Then ``results`` is ``{task: {encoder: metrics}}``, the markdown
    has a section per task, and each task's files go to ``out_dir/<task>/``.

    Corrupt samples (the dataset raises :class:`jepa_core.data.CorruptSampleError`) are skipped
    and left out for every encoder, so the rows compare the same samples (a
    :class:`jepa_eval.features.CorruptSamples` per split); more than ``max_bad_fraction`` of a
    split raises :class:`jepa_eval.features.TooManyCorruptSamplesError` (None: no limit). When
    any was skipped, the count is in each row (``skipped_corrupt``, ``skipped_corrupt_train``,
    ``skipped_corrupt_test``), in the returned ``skipped_corrupt`` (``{"train", "test",
    "total"}``) and in a line of the markdown (absent when none was).

    ``dense_data``: ``(train_set, test_set)`` of ``(input, label map)`` pairs for the ``dense``
    protocol (:mod:`jepa_eval.dense`: linear segmentation probe and patch k-NN on the patch
    tokens; the raw-pixel row cuts the inputs into the first encoder's token grid). Its results
    are each row's ``"dense"`` entry (the same in every task's rows), its tables a section of the
    markdown, its PNG ``dense_masks.png``. ``train_set`` / ``test_set`` may be None when
    ``dense`` is the only protocol.

    ``progress``: feature-extraction progress bars (``evaluate_encoders`` passes
    ``train.progress``, so ``train.progress=false`` silences the probes' bars too).

    Returns ``{"results": {encoder: {metric: value}}, "markdown": table}`` (without tasks)."""
    _check_eval(cfg)
    protocols = list(cfg.protocols)
    dense = "dense" in protocols
    if dense and dense_data is None:
        log.warning("the dense protocol needs dense_data ((input, label map) pairs); skipping it")
        dense = False
    classify = any(p != "dense" for p in protocols)
    if classify and train_set is None:
        raise ValueError(f"protocols {[p for p in protocols if p != 'dense']} need train_set and test_set")
    candidates: dict[str, nn.Module | None] = dict(encoders)
    if cfg.raw_baseline:
        candidates["raw pixels"] = None
    relabel: dict[str | None, Callable | None] = {t: fn for t, fn in tasks.items()} if tasks else {None: None}
    results: dict = {t: {} for t in relabel}
    extras: dict = {t: {} for t in relabel}
    dense_extras: dict = {}
    dense_grid = None
    if dense:
        assert dense_data is not None  # dense is False without dense_data
        dense_train, dense_test = dense_data
        dense_bad = (CorruptSamples(dense_train, None, max_bad_fraction, "training (dense evaluation)"),
                     CorruptSamples(dense_test, None, max_bad_fraction, "held-out (dense evaluation)"))
    if classify:
        bad = {"train": CorruptSamples(train_set, cfg.train_samples, max_bad_fraction, "training (evaluation)"),
               "test": CorruptSamples(test_set, None, max_bad_fraction, "held-out (evaluation)")}
    else:
        bad = {}  # no classification protocol: nothing read, no sample found corrupt
    for name, enc in candidates.items():
        r_dense = None
        if dense and (enc is not None or dense_grid is not None):
            from jepa_eval.dense import dense_probe

            r_dense, dense_extras[name] = dense_probe(enc, dense_train, dense_test, cfg, device, seed, dense_bad, dense_grid)
            dense_grid = dense_grid or tuple(r_dense["token_grid"])
            log.info("dense probes of %s in %.0f s: linear mIoU %.2f%%, k-NN mIoU %.2f%%", name, r_dense["seconds"],
                     r_dense["linear"]["miou"], r_dense["knn"]["miou"])
        if not classify:
            for task in relabel:
                results[task][name] = {} if r_dense is None else {"dense": r_dense}
            continue
        t0 = time.perf_counter()
        layers = cfg.last_layers if enc is not None else 1
        tokens: dict[str, tuple[torch.Tensor, ...]] | None = None
        feats: dict[str, tuple[torch.Tensor, ...]] | None = None
        if enc is not None and "attentive" in protocols:
            # The attentive probe needs all tokens; with one layer the others use their mean (one pass).
            from jepa_eval.attentive import extract_tokens

            tokens = {s: extract_tokens(enc, d, cfg.batch_size, device, corrupt=bad[s], return_indices=True)
                      for s, d in (("train", train_set), ("test", test_set))}
            if layers == 1:
                feats = {s: (t.mean(1), y, i) for s, (t, y, i) in tokens.items()}
        if feats is None:
            feats = {s: extract_features(enc, d, cfg.batch_size, device, None, layers, corrupt=bad[s],
                                         return_indices=True, progress=progress)
                     for s, d in (("train", train_set), ("test", test_set))}
        # A sample found bad by a later pass of this encoder is dropped from its earlier ones too.
        kept = {s: _drop_bad(v, bad[s]) for s, v in feats.items()}
        (tr_x, tr_y), (te_x, te_y) = kept["train"], kept["test"]
        kept_tokens = None if tokens is None else tuple(_drop_bad(tokens[s], bad[s]) for s in ("train", "test"))
        clean = (bad["train"].clean(all_samples=True), bad["test"].clean(all_samples=True))
        extract_seconds = time.perf_counter() - t0
        for task, fn in relabel.items():
            t1 = time.perf_counter()
            ytr, yte = (tr_y, te_y) if fn is None else (fn(tr_y).long(), fn(te_y).long())
            task_tokens = None if kept_tokens is None else ((kept_tokens[0][0], ytr), (kept_tokens[1][0], yte))
            sets: tuple[torch.utils.data.Dataset, torch.utils.data.Dataset] = clean if fn is None else (_Relabeled(clean[0], fn), _Relabeled(clean[1], fn))
            r, x = _score(enc, tr_x, ytr, te_x, yte, task_tokens, *sets, cfg, device, seed)
            if layers > 1:  # only then, so the keys of a last-layer evaluation stay as they were
                r["last_layers"] = layers
            r["seconds"] = round(extract_seconds + time.perf_counter() - t1, 1)
            if r_dense is not None:
                r["dense"] = r_dense
            results[task][name], extras[task][name] = r, x
            log.info("evaluated %s%s in %.0f s: %s", name, f" on {task}" if task else "", r["seconds"], _headline(r))
    skipped = {s: len(bad[s]) if s in bad else 0 for s in ("train", "test")}
    skipped["total"] = skipped["train"] + skipped["test"]
    extra = {"skipped_corrupt": skipped} if skipped["total"] else {}
    if skipped["total"]:  # only then, so the keys of a clean evaluation stay as they were
        for per_task in results.values():
            for r in per_task.values():
                r["skipped_corrupt"] = skipped["total"]
                r["skipped_corrupt_train"], r["skipped_corrupt_test"] = skipped["train"], skipped["test"]
        log.warning("the evaluation skipped %d corrupt samples (%d training, %d held-out)", skipped["total"],
                    skipped["train"], skipped["test"])
    if dense and (len(dense_bad[0]) or len(dense_bad[1])):
        for d in {id(r["dense"]): r["dense"] for per in results.values() for r in per.values() if "dense" in r}.values():
            d["skipped_corrupt_train"], d["skipped_corrupt_test"] = len(dense_bad[0]), len(dense_bad[1])
    # The dense section: one for all tasks; its PNG link relative to report.md (run_dir) and to results.md.
    png = None
    if dense and dense_extras and out_dir is not None and cfg.plots:
        png = Path(out_dir) / "dense_masks.png"
    link_report = None if png is None else (os.path.relpath(png, run_dir) if run_dir is not None else png.name)

    def with_dense(md: str, link: str | None) -> str:
        section = dense_markdown(results[next(iter(relabel))], link) if dense else ""
        return "\n\n".join(p for p in (md, section) if p)

    if not tasks:  # None or {}: relabel is {None: None}, one untitled table
        md = markdown_table(results[None]) if classify else ""
        if out_dir is not None:
            from jepa_eval.report import write_report

            write_report(results[None], extras[None], with_dense(md, None if png is None else png.name), Path(out_dir),
                         run_dir=run_dir, plots=cfg.plots)
        _plot_dense(dense_extras, png)
        return {"results": results[None], "markdown": with_dense(md, link_report), **extra}
    md = "\n\n".join(f"### {task}\n\n{markdown_table(results[task])}" for task in relabel) if classify else ""
    if out_dir is not None:
        import json

        from jepa_eval.report import write_report

        if classify:
            for task in tasks:
                write_report(results[task], extras[task], markdown_table(results[task]),
                             Path(out_dir) / _slug(task), run_dir=run_dir, plots=cfg.plots)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "results.json").write_text(json.dumps(results, indent=2))
        (Path(out_dir) / "results.md").write_text(
            "# Evaluation\n\n" + with_dense(md, None if png is None else png.name) + "\n")
    _plot_dense(dense_extras, png)
    return {"results": results, "markdown": with_dense(md, link_report), **extra}


def _plot_dense(dense_extras: dict, path: Path | None) -> None:
    if path is None:
        return
    import matplotlib

    from jepa_eval.report import plot_dense_masks

    matplotlib.use("Agg")
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_dense_masks(dense_extras, path)


def dense_markdown(results: dict, image_link: str | None = None) -> str:
    """The dense section of the markdown (:func:`jepa_eval.dense.dense_markdown`)."""
    from jepa_eval.dense import dense_markdown as md

    return md(results, image_link)


def _drop_bad(extracted: tuple, corrupt: CorruptSamples) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of an extraction ``(x, y, dataset indices)`` without the samples now known bad."""
    x, y, idx = extracted
    if not len(corrupt):
        return x, y
    keep = corrupt.keep(idx)
    return x[keep], y[keep]


class _Relabeled(torch.utils.data.Dataset):
    """``(input, fn(label))`` of a labeled dataset (fine-tuning on one task of several)."""

    def __init__(self, dataset, fn: Callable):
        self.dataset, self.fn = dataset, fn

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        x, y = self.dataset[i]
        return x, int(self.fn(torch.as_tensor(y)))


def _slug(task: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in task.lower()).strip("_")


def _score(enc, tr_x, tr_y, te_x, te_y, tokens, train_set, test_set, cfg, device, seed) -> tuple[dict, dict]:
    """The configured protocols on one encoder's features for one labeling."""
    protocols = cfg.protocols
    r: dict = {"feature_dim": int(tr_x.shape[1]), "train_samples": int(len(tr_y)), "test_samples": int(len(te_y))}
    x: dict = {"test_features": te_x, "test_labels": te_y}
    if "linear" in protocols:
        lin = linear_probe(tr_x, tr_y, te_x, te_y, seed=seed)
        r.update(linear_probe=round(lin.accuracy, 2), linear_probe_val=round(lin.val_accuracy, 2),
                 linear_probe_l2=lin.weight_decay)
        x["linear_predictions"] = lin.predictions
    if "knn" in protocols:
        knn = knn_probe(tr_x, tr_y, te_x, te_y, tuple(cfg.knn_k), cfg.knn_temperature)
        r["knn"] = {str(k): round(v, 2) for k, v in knn.items()}
    if "lowshot" in protocols:
        from jepa_eval.lowshot import low_shot

        ls = low_shot(tr_x, tr_y, te_x, te_y, tuple(cfg.lowshot_fractions), tuple(cfg.lowshot_seeds))
        r["lowshot"] = {f"{f:g}": {"mean": round(v.mean, 2), "std": round(v.std, 2)} for f, v in ls.items()}
    if enc is not None and "attentive" in protocols:
        r["attentive_probe"], r["attentive_grid"] = _attentive(enc, train_set, test_set, cfg, device, seed, tokens)
    if enc is not None and "finetune" in protocols:
        from jepa_eval.finetune import finetune

        num_classes = int(max(tr_y.max(), te_y.max())) + 1
        ft = finetune(enc, train_set, test_set, num_classes,
                      last_blocks=cfg.finetune_last_blocks, epochs=cfg.finetune_epochs, lr=cfg.finetune_lr,
                      batch_size=min(cfg.batch_size, 128), device=device, seed=seed)
        r["finetune"] = round(ft.accuracy, 2)
        x["finetune_predictions"], x["finetune_labels"] = ft.predictions, ft.test_labels
        for frac in getattr(cfg, "finetune_fractions", ()):
            ft_frac, n = finetune_fraction(enc, train_set, test_set, _split_labels(tr_y, train_set), frac, num_classes,
                                           cfg, device, seed)
            r[finetune_key(frac)] = round(ft_frac.accuracy, 2)
            r[finetune_key(frac) + "_samples"] = n
    r["feature_std_mean"] = round(float(tr_x.std(0).mean()), 5)
    return r, x


def finetune_key(fraction: float) -> str:
    """The result key of fine-tuning on ``fraction`` of the training labels: ``finetune_1%``."""
    return f"finetune_{fraction * 100:g}%"


def _split_labels(extracted_labels: torch.Tensor, train_set) -> torch.Tensor:
    """The labels of every sample of ``train_set`` (the clean training split fine-tuning reads),
    in order: the extracted labels when they cover the split (the features are extracted in
    dataset order), else read from the samples (``eval.train_samples`` probed only the first)."""
    if len(extracted_labels) == len(train_set):
        return extracted_labels.long()
    return torch.tensor([int(torch.as_tensor(train_set[i][1])) for i in range(len(train_set))], dtype=torch.long)


def finetune_fraction(enc, train_set, test_set, labels: torch.Tensor, fraction: float, num_classes: int, cfg,
                      device, seed):
    """Semi-supervised fine-tuning: :func:`jepa_eval.finetune.finetune` on a class-balanced
    subset of the training split, ``max(1, round(fraction * n_c))`` samples of every class c
    drawn with the seed (:func:`jepa_eval.lowshot.stratified_subset`, the low-shot probe's
    subsets), scored on the whole test split; the settings of the full fine-tuning
    (``eval.finetune_*``, the same epochs: fewer steps on fewer labels). The 1 % / 10 % label
    protocol of MAMP and S-JEPA (MAMP:script_semi.sh and feeder_ntu_semi.py: the fine-tuning
    recipe on a ``data_ratio`` of the training list, five draws there; one draw here, seeded by
    ``seed``). Returns ``(FinetuneResult, subset size)``."""
    from torch.utils.data import Subset

    from jepa_eval.finetune import finetune
    from jepa_eval.lowshot import stratified_subset

    idx = stratified_subset(labels, fraction, seed)
    ft = finetune(enc, Subset(train_set, idx.tolist()), test_set, num_classes,
                  last_blocks=cfg.finetune_last_blocks, epochs=cfg.finetune_epochs, lr=cfg.finetune_lr,
                  batch_size=min(cfg.batch_size, 128), device=device, seed=seed)
    return ft, len(idx)


def _attentive(enc, train_set, test_set, cfg, device, seed, tokens=None) -> tuple[float, dict]:
    from jepa_eval.attentive import DEFAULT_FORM, extract_tokens, train_attentive_probes

    if tokens is None:
        tokens = (extract_tokens(enc, train_set, cfg.batch_size, device, cfg.train_samples),
                  extract_tokens(enc, test_set, cfg.batch_size, device))
    (tok_tr, y_tr), (tok_te, y_te) = tokens
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y_tr), generator=g)
    n_val = max(1, len(perm) // 10)
    val, fit = perm[:n_val], perm[n_val:]
    heads = enc.num_heads if isinstance(enc, Encoder) and enc.num_heads else 1  # the probe reuses the encoder's heads
    res = train_attentive_probes(
        tok_tr[fit], y_tr[fit], tok_tr[val], y_tr[val], cfg.attentive_lrs, cfg.attentive_wds,
        tokens_test=tok_te, y_test=y_te, num_classes=int(max(y_tr.max(), y_te.max())) + 1, num_heads=heads,
        depth=cfg.attentive_depth, form=cfg.attentive_form or DEFAULT_FORM, epochs=cfg.attentive_epochs,
        batch_size=cfg.attentive_batch_size, seed=seed, device=device,
    )
    grid = {f"lr={lr:g},wd={wd:g}": round(v, 2) for (lr, wd), v in res.val_grid.items()}
    assert res.test_accuracy is not None  # tokens_test was given
    return round(res.test_accuracy, 2), grid


def _headline(r: dict) -> str:
    keys = [k for k in ("linear_probe", "attentive_probe", "finetune") if k in r] + \
        [k for k in r if _is_fraction_key(k)]
    parts = [f"{k} {r[k]:.2f}%" for k in keys]
    if "knn" in r:
        parts.append("k-NN " + ", ".join(f"k={k}: {v:.2f}%" for k, v in r["knn"].items()))
    return "; ".join(parts)


def _is_fraction_key(key: str) -> bool:
    """``finetune_1%`` and the like (:func:`finetune_key`), not their ``_samples`` counts."""
    return key.startswith("finetune_") and key.endswith("%")


def markdown_table(results: dict) -> str:
    """One row per encoder, one column per metric that any encoder has ('-' where not run)."""
    if not results:
        return "| encoder |\n|---|\n"
    first = next(iter(results.values()))
    cols: list[tuple[str, str]] = []
    if any("linear_probe" in r for r in results.values()):
        cols.append(("linear probe (%)", "linear_probe"))
    ks: Iterable[str] = next((r["knn"].keys() for r in results.values() if "knn" in r), [])
    cols += [(f"k-NN k={k} (%)", f"knn.{k}") for k in ks]
    fracs: Iterable[str] = next((r["lowshot"].keys() for r in results.values() if "lowshot" in r), [])
    cols += [(f"low-shot {float(f) * 100:g} % labels (%)", f"lowshot.{f}") for f in fracs]
    if any("attentive_probe" in r for r in results.values()):
        cols.append(("attentive probe (%)", "attentive_probe"))
    if any("finetune" in r for r in results.values()):
        cols.append(("fine-tune (%)", "finetune"))
    fracs_ft = list(dict.fromkeys(k for r in results.values() for k in r if _is_fraction_key(k)))
    cols += [(f"fine-tune {k[len('finetune_'):-1]} % labels (%)", k) for k in fracs_ft]
    cols.append(("features", "feature_dim"))

    def cell(r: dict, key: str) -> str:
        if key.startswith("knn."):
            v = r.get("knn", {}).get(key[4:])
            return "-" if v is None else f"{v:.2f}"
        if key.startswith("lowshot."):
            v = r.get("lowshot", {}).get(key[8:])
            return "-" if v is None else f"{v['mean']:.2f} ± {v['std']:.2f}"
        v = r.get(key)
        return "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))

    head = "| encoder | " + " | ".join(c for c, _ in cols) + " |"
    sep = "|---|" + "---:|" * len(cols)
    rows = [f"| {name} | " + " | ".join(cell(r, k) for _, k in cols) + " |" for name, r in results.items()]
    ran = {k for r in results.values() for k in r}
    k = max((r.get("last_layers", 1) for r in results.values()), default=1)
    pooled = "mean-pooled last-layer features" if k == 1 else \
        f"mean-pooled features of each of the last {k} layers, concatenated (raw pixels: the inputs)"
    parts = [f"Frozen encoders, {pooled}; {first['train_samples']} training samples."]
    if "linear_probe" in ran:
        parts.append("Linear probe: logistic regression on standardised features (L-BFGS to convergence), L2 "
                     "strength chosen on a 10 % validation split of the training samples.")
    if "knn" in ran:
        parts.append("k-NN: cosine similarity, votes weighted by exp(sim / T).")
    if "lowshot" in ran:
        parts.append("Low-shot: the linear probe on a stratified fraction of the labels, mean ± std over seeds.")
    if "attentive_probe" in ran:
        parts.append("Attentive: the best of a grid of cross-attention probes on all tokens, chosen on validation.")
    if "finetune" in ran:
        parts.append("Fine-tune: mean-pool + linear head, encoder trained.")
    if fracs_ft:
        sizes = ", ".join(f"{k[len('finetune_'):]}: {first.get(k + '_samples', '?')}" for k in fracs_ft)
        parts.append(f"Fine-tune on x % labels: the same on a seeded class-balanced subset of the training labels "
                     f"({sizes} samples).")
    parts.append(f"Scored on {first['test_samples']} held-out samples.")
    if first.get("skipped_corrupt"):
        parts.append(f"Skipped {first['skipped_corrupt']} corrupt samples ({first.get('skipped_corrupt_train', 0)} "
                     f"training, {first.get('skipped_corrupt_test', 0)} held-out), left out for every encoder.")
    note = "\n" + " ".join(parts)
    return "\n".join([head, sep, *rows]) + "\n" + note


def make_monitor(dataset, cfg):
    """The ``monitor`` evaluator: a :class:`jepa_eval.monitors.CollapseMonitor` for the Trainer."""
    from jepa_eval.monitors import CollapseMonitor

    return CollapseMonitor(dataset, every_n_steps=cfg.monitor_every, num_samples=cfg.monitor_samples, labels=True,
                           batch_size=cfg.batch_size)
