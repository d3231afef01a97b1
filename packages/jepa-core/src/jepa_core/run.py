"""`jepa pretrain`: build a method from the registry, train it, evaluate it, write the run folder.

```
runs/<method>-<preset>-<time>/
  config.yaml  checkpoints/  metrics.csv  plots/  report.md  (eval/results.json)
  (config-history.jsonl  config-effective.yaml: after a resume with a changed config)
```
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from jepa_core import checkpoint as ckpt
from jepa_core import registry
from jepa_core.config import (
    ConfigError,
    config_changes,
    describe_changes,
    drop_retired_keys,
    dump_yaml,
    from_dict,
    is_architecture_key,
    load_yaml,
    to_dict,
)
from jepa_core.distributed import init_distributed, resolve_device, shutdown_distributed
from jepa_core.plots import plot_metrics
from jepa_core.trainer import Preempted, Trainer

log = logging.getLogger(__name__)


def _default_run_dir(cfg, root: Path = Path("runs")) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return root / f"{cfg.method}-{cfg.preset or 'custom'}-{stamp}"


def _newest_run(method: str, preset: str, root: Path = Path("runs")) -> Path | None:
    runs = sorted(p for p in root.glob(f"{method}-{preset}-*") if (p / "checkpoints").is_dir())
    return runs[-1] if runs else None


def resolve_run_dir(cfg, run_dir: str | Path | None, resume: bool, restart: bool = False) -> Path:
    """The run folder: ``run_dir``, else ``train.run_dir``, else (``resume``) the newest run of
    this method and preset under runs/, else a new ``runs/<method>-<preset>-<time>``. A folder
    that already holds checkpoints needs ``resume`` (or ``restart``, see :func:`pretrain`). With
    ``resume``, checkpoint files none of which loads raise a :class:`CheckpointError` here,
    before anything in the folder is touched."""
    if resume and restart:
        raise ConfigError("--resume and --restart exclude each other: --resume continues the run, "
                          "--restart starts it over (moving the old checkpoints aside)")
    if run_dir is None:
        run_dir = cfg.train.run_dir
    if run_dir is None and resume:
        run_dir = _newest_run(cfg.method, cfg.preset)
        if run_dir is None:
            raise ConfigError(f"--resume: no earlier run of {cfg.method}-{cfg.preset} under runs/; give --run-dir")
    run_dir = Path(run_dir) if run_dir is not None else _default_run_dir(cfg)
    if not resume and not restart and (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()):
        raise ConfigError(f"{run_dir} already holds checkpoints; pass --resume to continue it, --restart to start "
                          "it over (the old checkpoints and metrics.csv are moved into previous-<time>/), or "
                          "another --run-dir")
    if resume:
        # Fail before config.yaml, metrics.csv or the checkpoints are touched; mmap: a cheap check.
        ckpt.latest_valid(run_dir / "checkpoints", required=ckpt.RUN_KEYS, strict=True, mmap=True)
    return run_dir


def _env_rank() -> int:
    """This process's rank before the process group exists (torchrun, SLURM), else 0."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


#: The run's config as it started (never rewritten by a resume), the record of each resume that
#: changed settings (one JSON object a line), and the config in force since the last such resume.
#: Runs shorter than this many steps get a hint that the final evaluation may take longer than them.
SHORT_RUN_STEPS = 50
CONFIG_FILE, CONFIG_HISTORY_FILE, CONFIG_EFFECTIVE_FILE = "config.yaml", "config-history.jsonl", "config-effective.yaml"


@dataclass
class ResumePoint:
    """What ``--resume`` continues from: the checkpoint, its step, and the settings that differ
    from the config its weights were trained with (``{key: (old, new)}``; none is architectural)."""

    checkpoint: Path
    step: int
    changes: dict
    shapes: dict  # the checkpoint's model tensor shapes, by name


def _saved_config(run_dir: Path, obj: dict) -> tuple[dict | None, str]:
    """The config a run's newest checkpoint was trained with: the one it carries, else the
    run folder's config-effective.yaml or config.yaml (a checkpoint of an older version)."""
    if isinstance(obj.get("config"), dict) and obj["config"]:
        return obj["config"], "its checkpoint"
    for name in (CONFIG_EFFECTIVE_FILE, CONFIG_FILE):
        if (run_dir / name).is_file():
            try:
                return load_yaml(run_dir / name), name
            except ConfigError as e:
                log.warning("cannot compare the config with the run's %s: %s", name, e)
    return None, ""


def check_resume_config(spec: registry.MethodSpec, cfg, run_dir: Path) -> ResumePoint | None:
    """``--resume``: compare ``cfg`` with the config the run's newest valid checkpoint was
    trained with. A change of an architecture key (``cfg.ARCHITECTURE_KEYS``, e.g. ``model.*``
    and the data sizes that set the token grid) raises a :class:`ConfigError` naming every such
    key, old -> new, and the way out; other changes are returned (:func:`record_config` logs
    and records them). None when there is no checkpoint to resume from."""
    found = ckpt.latest_valid(run_dir / "checkpoints", required=ckpt.RUN_KEYS, strict=True, mmap=True)
    if found is None:
        return None
    path, obj = found
    saved, source = _saved_config(run_dir, obj)
    changes: dict = {}
    if saved is not None:
        saved = drop_retired_keys(saved)
        try:  # fill the keys a newer version added with their defaults, as the new config has them
            saved = to_dict(from_dict(spec.config_cls, saved))
        except ConfigError:
            pass  # a config this version cannot build: compare it as written
        changes = config_changes(saved, to_dict(cfg))
    arch = {k: v for k, v in changes.items() if is_architecture_key(type(cfg), k)}
    if arch:
        raise ConfigError(
            f"--resume of {run_dir}: the architecture differs from the run's ({describe_changes(arch)}; "
            f"compared with {source}), so its checkpoints cannot continue with this config. Resume with the "
            "run's values, or start over with --restart (the old checkpoints are moved into previous-<time>/), "
            "or give another --run-dir"
        )
    shapes = {k: v.shape for k, v in obj["model"].items() if hasattr(v, "shape")}
    return ResumePoint(path, int(obj.get("step", 0)), changes, shapes)


def record_config(run_dir: Path, cfg, resume: ResumePoint | None) -> None:
    """Write the run's config files (rank 0). A new run: ``config.yaml``. A resume leaves
    ``config.yaml`` as the run started; when settings changed it logs a warning listing them,
    appends ``{"time", "step", "checkpoint", "changes": {key: [old, new]}}`` to
    ``config-history.jsonl`` and writes the config now in force to ``config-effective.yaml``
    (rewritten on every later resume once it exists, so it always holds the current one)."""
    config_path = run_dir / CONFIG_FILE
    current = config_path  # the file being written, for the message of a full disk
    try:
        if resume is None or not config_path.is_file():
            dump_yaml(cfg, config_path)
        if resume is None:
            return
        effective = run_dir / CONFIG_EFFECTIVE_FILE
        if resume.changes:
            log.warning("--resume at step %d with %d changed setting(s): %s (recorded in %s; the config in force is "
                        "%s)", resume.step, len(resume.changes), describe_changes(resume.changes),
                        CONFIG_HISTORY_FILE, CONFIG_EFFECTIVE_FILE)
            entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "step": resume.step,
                     "checkpoint": resume.checkpoint.name,
                     "changes": {k: [a, b] for k, (a, b) in resume.changes.items()}}
            current = run_dir / CONFIG_HISTORY_FILE
            with open(current, "a") as f:  # one line per resume: a torn last line loses only that entry
                f.write(json.dumps(entry, default=str) + "\n")
                f.flush()
                os.fsync(f.fileno())
        if resume.changes or effective.is_file():
            current = effective
            dump_yaml(cfg, effective)
    except OSError as e:
        ckpt.raise_storage_error(e, current, "config file")
        raise


def move_aside(run_dir: Path) -> Path | None:
    """``--restart``: move ``checkpoints/``, ``metrics.csv`` (and the per-rank metrics) and the
    config files of ``run_dir`` into ``run_dir/previous-<time>/``, kept rather than deleted; None
    when there is nothing to move."""
    old = [run_dir / "checkpoints", *sorted(run_dir.glob("metrics*.csv")),
           *(run_dir / n for n in (CONFIG_FILE, CONFIG_HISTORY_FILE, CONFIG_EFFECTIVE_FILE))]
    old = [p for p in old if p.exists()]
    if not old:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = run_dir / f"previous-{stamp}"
    n = 1
    while dest.exists():
        dest, n = run_dir / f"previous-{stamp}-{n}", n + 1
    dest.mkdir()
    for p in old:
        os.replace(p, dest / p.name)
    log.warning("--restart: moved %s of %s into %s", ", ".join(p.name for p in old), run_dir, dest)
    return dest


def pretrain(
    method: str,
    preset: str | None = None,
    config_file: str | None = None,
    overrides: list[str] | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    restart: bool = False,
) -> dict[str, Any]:
    """Run a method's pretraining end to end and return a summary (also written to report.md).

    ``resume`` continues from the newest valid checkpoint in ``run_dir`` (an error, before
    anything is touched, when the folder holds checkpoint files none of which loads);
    ``restart`` starts over in a folder that holds checkpoints, moving the old ``checkpoints/``,
    ``metrics.csv`` and config files into ``run_dir/previous-<time>/``. A resume compares the
    config with the run's (:func:`check_resume_config`: architecture changes are refused, others
    recorded by :func:`record_config`)."""
    spec = registry.get_method(method)
    cfg = spec.load_config(preset, config_file, overrides)
    run_dir = resolve_run_dir(cfg, run_dir, resume, restart)
    resume_point = check_resume_config(spec, cfg, run_dir) if resume else None  # before anything is written
    if restart and _env_rank() == 0:
        move_aside(run_dir)

    try:
        device = resolve_device(cfg.train.device)
    except RuntimeError as e:  # e.g. train.device=cuda on a machine without CUDA
        raise ConfigError(str(e)) from e
    dist = init_distributed(device, cfg.train.dist_timeout_s)
    evaluator = _find_evaluator(spec, cfg, warn=dist.is_main)  # before training: fail or warn early
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    torch.manual_seed(cfg.train.seed)
    try:
        model = spec.build_model(cfg)
    except ValueError as e:  # a combination of model settings the modules refuse (e.g. odd widths)
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"the model cannot be built from this config: {e}; check the model.* settings") from e
    if resume_point is not None:  # before the config files record the resume
        ckpt.check_fits(model.state_dict(), resume_point.shapes, resume_point.checkpoint, run_dir,
                        getattr(model, "explain_checkpoint_mismatch", None))
    dataset, collate = spec.build_train_data(cfg, dist.rank, dist.world_size)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        record_config(run_dir, cfg, resume_point)
        log.info("run folder: %s", run_dir)
        if spec.on_run_start is not None:
            spec.on_run_start(cfg, run_dir, dataset)
    data_cfg = getattr(cfg, "data", None)
    callbacks = []
    sharded = cfg.train.strategy == "fsdp" and dist.initialized
    monitors = cfg.eval.monitor_every > 0 and cfg.eval.enabled  # eval.enabled=false: no evaluation at all
    if cfg.eval.monitor_every > 0 and not cfg.eval.enabled:
        log.info("eval.enabled=false: no monitors (eval.monitor_every=%d ignored)", cfg.eval.monitor_every)
    if monitors and sharded:
        # The monitors run the encoder on rank 0 alone, which a sharded model cannot do.
        log.warning("eval.monitor_every is not supported with train.strategy=fsdp; no monitors")
    elif monitors and spec.build_eval_data is not None:
        make_monitor = registry.get_evaluator("monitor")
        if make_monitor is None:
            log.warning("eval.monitor_every is set but jepa-eval is not installed; no monitors")
        else:
            # Missing evaluation data fails here, before training, not after it.
            callbacks.append(make_monitor(spec.build_eval_data(cfg)[0], cfg.eval))
    trainer = Trainer(
        model, dataset, collate, cfg.optim, cfg.train, run_dir,
        batch_size=getattr(data_cfg, "batch_size", 32),
        num_workers=getattr(data_cfg, "num_workers", 0),
        pin_memory=getattr(data_cfg, "pin_memory", False),
        config_dict=to_dict(cfg),
        callbacks=callbacks,
    )
    try:
        fit = trainer.fit(resume=resume)
    except Preempted:
        # Every rank stopped after the same step (a clean stop, not an error path): release the
        # process group, then `jepa pretrain` exits with Preempted.exit_code.
        shutdown_distributed(dist)
        raise
    summary: dict[str, Any] = {
        "run_dir": str(run_dir), "steps": fit.steps, "steps_this_run": fit.steps - fit.start_step,
        "final_loss": fit.final_loss,
        "train_seconds": round(fit.seconds, 1), "samples_per_second": round(fit.samples_per_second, 1),
        "bad_samples": fit.bad_samples, "skipped_nonfinite": fit.skipped_nonfinite,
        "strategy": trainer.strategy, "world_size": dist.world_size, "global_batch": trainer.global_batch,
    }
    if trainer.strategy == "fsdp":
        # The trained model is sharded over the ranks: gather it (a collective) and evaluate a
        # plain copy on rank 0.
        full, _ = trainer.full_state_dicts()
        model = None
        if dist.is_main:
            model = spec.build_model(cfg)
            model.load_state_dict(full)
            model.to(trainer.device)
        trainer.model = None  # type: ignore[assignment]  # rank 0 evaluates the gathered copy
    # Training is over on every rank: end the process group now (rank 0 evaluates alone), after
    # dropping the engine that holds it.
    trainer.net = None  # type: ignore[assignment]
    shutdown_distributed(dist)
    if not dist.is_main:
        return summary
    plot_metrics(run_dir / "metrics.csv", run_dir / "plots")
    evaluation = None
    if evaluator is not None:
        if fit.steps - fit.start_step < SHORT_RUN_STEPS:
            log.warning("a %d-step run: the final evaluation (%s) still fits its probes on the whole evaluation "
                        "set and can take minutes; for a quick check pass eval.enabled=false, and evaluate "
                        "later with `jepa eval %s`", fit.steps - fit.start_step, spec.evaluator, run_dir)
        evaluation = evaluator(spec, cfg, model, trainer.device, out_dir=run_dir / "eval", run_dir=run_dir)
        if evaluation is not None:
            summary["evaluation"] = evaluation["results"]
            summary["evaluation_markdown"] = evaluation["markdown"]
    write_report(run_dir, cfg, summary, evaluation)
    return summary


def _find_evaluator(spec: registry.MethodSpec, cfg, warn: bool = True):
    """The evaluator to run after pretraining: None with ``eval.enabled=false`` or
    ``spec.evaluator=None``, and (with a warning naming the fix) when it is not installed; its
    ``check_config(cfg)``, when it has one, runs now, before training."""
    if not cfg.eval.enabled or spec.evaluator is None:
        return None
    try:
        evaluate = registry.require_evaluator(spec.evaluator, spec.name)
    except ConfigError as e:
        if warn:
            log.warning("%s; training without the evaluation at the end", e)
        return None
    check = getattr(evaluate, "check_config", None)
    if callable(check):
        check(cfg)
    return evaluate


def evaluate_model(
    spec: registry.MethodSpec, cfg, model, device: torch.device, out_dir: Path | None = None, run_dir: Path | None = None
) -> dict | None:
    """Evaluate a trained ``model`` with the evaluator ``spec.evaluator`` names (see
    :mod:`jepa_core.registry` for the call): ``{"results", "markdown"}``, or None when the
    method has no evaluator or the evaluator had nothing to evaluate. With ``out_dir`` the
    evaluator writes its files there. Raises :class:`ConfigError` when the evaluator is not
    installed."""
    if spec.evaluator is None:
        return None
    evaluate = registry.require_evaluator(spec.evaluator, spec.name)
    return evaluate(spec, cfg, model, device, out_dir=out_dir, run_dir=run_dir)


def write_report(run_dir: Path, cfg, summary: dict, evaluation: dict | None) -> Path:
    if summary.get("steps_this_run", 1) == 0:  # resumed after the last step: nothing was timed
        timing = f"- training time: none in this process (resumed at step {summary['steps']}, nothing left to train)"
    else:
        timing = f"- training time: {summary['train_seconds']} s ({summary['samples_per_second']} samples/s)"
    lines = [
        f"# {cfg.method} / {cfg.preset or 'custom'}",
        "",
        f"- run folder: `{run_dir}`",
        f"- machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        f"- steps: {summary['steps']}, final loss {summary['final_loss']:.5f}",
        timing,
        f"- corrupt samples skipped: {summary['bad_samples']}; non-finite steps skipped: "
        f"{summary.get('skipped_nonfinite', 0)}",
        f"- {summary.get('world_size', 1)} process(es), strategy {summary.get('strategy', 'none')}, "
        f"global batch {summary.get('global_batch', '?')}",
        "",
        "Resolved config: `config.yaml`. Per-step metrics: `metrics.csv`; curves in `plots/`.",
        "",
    ]
    if evaluation is not None:
        lines += [f"## {evaluation.get('title', 'Evaluation')}", "", evaluation["markdown"], ""]
    path = run_dir / "report.md"
    try:
        path.write_text("\n".join(lines))
    except OSError as e:
        ckpt.raise_storage_error(e, path, "report")
        raise
    return path


def load_run(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """The model of a `jepa pretrain` run folder (its newest readable checkpoint) or of one of
    our checkpoint files (it carries its config), built and loaded on CPU. Returns
    ``{"spec", "cfg", "model", "checkpoint", "step", "run_dir"}``."""
    from jepa_core.config import deep_merge, parse_overrides

    path = Path(path)
    if path.is_file():
        obj = ckpt.load(path)
        if "model" not in obj:
            raise ConfigError(f"{path} is not a jepa run checkpoint (no model entry; keys: {', '.join(map(str, obj))[:200]}); "
                              "released weights load with the method package's from_pretrained or `jepa convert`")
        data, found = obj.get("config") or {}, (path, obj)
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        if not data.get("method") and (run_dir / "config.yaml").is_file():
            data = load_yaml(run_dir / "config.yaml")  # a Trainer checkpoint beside its run's config
    elif path.is_dir() and ((path / "config.yaml").is_file() or (path / "checkpoints").is_dir()):
        run_dir = path
        latest = ckpt.latest_valid(path / "checkpoints")
        if latest is None:
            raise ConfigError(f"no readable checkpoint in {path / 'checkpoints'}")
        found = latest
        data = load_yaml(path / "config.yaml") if (path / "config.yaml").is_file() else found[1].get("config") or {}
    else:
        raise ConfigError(f"{path} is neither a run folder (no config.yaml or checkpoints/ in it) nor a checkpoint file")
    if not data.get("method"):
        cls = found[1].get("model_class", "the model")
        raise ConfigError(
            f"{found[0]} holds {cls}'s weights but no config (a Trainer started without config=): the method and "
            f"architecture are unknown. Train with Trainer(..., config=cfg), or write the run's config to "
            f"{run_dir / 'config.yaml'} (`jepa config <method> [--preset P] > {run_dir / 'config.yaml'}`, with the "
            "settings you trained with)")
    data = drop_retired_keys(data)  # a run of an older version
    if overrides:
        data = deep_merge(data, parse_overrides(overrides))
    spec = registry.get_method(data.get("method", ""))
    cfg = from_dict(spec.config_cls, data)
    torch.manual_seed(cfg.train.seed)
    model = spec.build_model(cfg)
    saved, expected = found[1]["model"], model.state_dict()
    mismatch = ckpt.state_dict_mismatch(expected, saved)
    explain = getattr(model, "explain_checkpoint_mismatch", None)
    reason = explain([k for k in expected if k not in saved], [k for k in saved if k not in expected]) if (
        mismatch and explain is not None) else None
    if reason:
        raise ckpt.CheckpointError(f"{found[0]} does not fit the model: {reason}")
    if mismatch:
        raise ckpt.CheckpointError(f"{found[0]} does not fit the model this config builds ({'; '.join(mismatch)}); "
                                   "drop the model.* / data size overrides, or use the run's own config")
    model.load_state_dict(found[1]["model"])
    return {"spec": spec, "cfg": cfg, "model": model, "checkpoint": found[0], "step": found[1].get("step"),
            "run_dir": run_dir}


def evaluate_run(
    path: str | Path, overrides: list[str] | None = None, protocols: list[str] | None = None,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """``jepa eval``: evaluate the newest readable checkpoint of a `jepa pretrain` run folder, or
    one checkpoint file (ours: it carries its config), with the method's evaluator. Results go to
    ``out_dir``, by default ``<run>/eval/``; an earlier evaluation found there is kept, moved to
    ``<run>/eval-<time of its results>/`` (:func:`archive_eval_dir`), so nothing is overwritten."""
    if protocols:
        overrides = list(overrides or []) + [f"eval.protocols=[{','.join(protocols)}]"]
    run = load_run(path, overrides)
    spec, cfg, run_dir = run["spec"], run["cfg"], run["run_dir"]
    device = resolve_device(cfg.train.device)
    model = run["model"].to(device)
    if spec.evaluator is None:
        raise ConfigError(f"method {spec.name!r} has no evaluator (its MethodSpec.evaluator is None)")
    if out_dir is None:
        out_dir = Path(run_dir) / "eval"
        archived = archive_eval_dir(out_dir)
        if archived is not None:
            log.info("the earlier evaluation in %s was moved to %s", out_dir, archived)
    evaluation = evaluate_model(spec, cfg, model, device, out_dir=Path(out_dir), run_dir=run_dir)
    if evaluation is None:
        raise ConfigError(f"evaluator {spec.evaluator!r} found nothing to evaluate for method {spec.name!r}")
    return {"run_dir": str(run_dir), "checkpoint": str(run["checkpoint"]), "step": run["step"],
            "out_dir": str(out_dir), "evaluation": evaluation["results"],
            "evaluation_markdown": evaluation["markdown"]}


def archive_eval_dir(eval_dir: Path) -> Path | None:
    """Move a non-empty evaluation folder aside, to ``<parent>/eval-<YYYYmmdd-HHMMSS>`` named after
    the time its newest file was written (a counter is appended if that name is taken), so a new
    `jepa eval` never overwrites an earlier one. Returns the new path, or None if there was
    nothing to keep."""
    eval_dir = Path(eval_dir)
    files = [f for f in eval_dir.rglob("*") if f.is_file()] if eval_dir.is_dir() else []
    if not files:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(max(f.stat().st_mtime for f in files)))
    target, n = eval_dir.with_name(f"{eval_dir.name}-{stamp}"), 1
    while target.exists():
        n += 1
        target = eval_dir.with_name(f"{eval_dir.name}-{stamp}-{n}")
    eval_dir.rename(target)
    return target
