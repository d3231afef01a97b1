"""The `jepa` command: pretrain, eval, sample, list, config.

A user error prints one line, ``jepa: error: <what is wrong and the fix>``, on stderr and no
traceback (``--debug``, anywhere on the command line, or ``JEPA_DEBUG=1``: the full traceback).
Exit codes: 0 done; 2 a usage or config error, found before training starts
(:data:`USAGE_ERRORS`); 1 a run that failed while training or writing (``_run_errors()``: a
non-finite loss, too many corrupt samples, a hung rank, a full disk); 75 stopped by a signal
after saving a checkpoint (``--resume`` continues; the SLURM launcher requeues it); 130
interrupted before training started. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from jepa_core import registry
from jepa_core.checkpoint import CheckpointError, StorageError
from jepa_core.config import ConfigError, to_dict
from jepa_core.extras import MissingExtraError

#: Exit status 2: the command or config cannot run as given (nothing was trained or changed).
USAGE_ERRORS: tuple[type[BaseException], ...] = (ConfigError, FileNotFoundError, CheckpointError, MissingExtraError)
EXIT_USAGE, EXIT_RUN, EXIT_INTERRUPTED = 2, 1, 130


def _run_errors() -> tuple[type[BaseException], ...]:
    """Exit status 1: the run failed while training or writing; the message names the fix."""
    from jepa_core.trainer import (
        DistributedTimeoutError,
        NonFiniteLossError,
        TooManyBadSamplesError,
    )

    return (StorageError, NonFiniteLossError, TooManyBadSamplesError, DistributedTimeoutError)


def _error_line(e: BaseException) -> str:
    return "jepa: error: " + " ".join(str(e).split())


def _versions() -> str:
    """``jepa-core 0.1.0``, ``jepa-image 0.1.0``, ... one per line: the installed jepa distributions (each is
    versioned on its own) and torch."""
    from importlib import metadata

    names = sorted({(d.metadata["Name"] or "").lower().replace("_", "-") for d in metadata.distributions()})
    found = [f"{n} {metadata.version(n)}" for n in names if n == "jepa-core" or n.startswith("jepa-")]
    try:
        found.append(f"torch {metadata.version('torch')}")
    except metadata.PackageNotFoundError:
        pass
    return "\n".join(found)


class _VersionAction(argparse.Action):
    """``--version``: one line per distribution (argparse's own action would re-wrap them)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(_versions())
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    plugins = _plugin_names()
    p = argparse.ArgumentParser(
        prog="jepa", description="Joint-Embedding Predictive Architectures.",
        epilog=("commands of installed packages: " + ", ".join(plugins) + " (`jepa <command> --help`)") if plugins else None,
    )
    p.add_argument("--debug", action="store_true",
                   help="show the full traceback of an error instead of one line (also JEPA_DEBUG=1); "
                        "accepted anywhere on the command line")
    p.add_argument("--version", action=_VersionAction,
                   help="print the versions of the installed jepa packages (and torch) and exit")
    sub = p.add_subparsers(dest="command", required=True)

    pt = sub.add_parser("pretrain", help="pretrain a method (default preset: demo)")
    pt.add_argument("method", help="method name (`jepa list` shows the installed ones)")
    pt.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=5e-4 data.batch_size=64")
    pt.add_argument("--preset", help="preset name (see `jepa list`)")
    pt.add_argument("--config", help="YAML file merged over the preset")
    pt.add_argument("--run-dir", help="run folder (default runs/<method>-<preset>-<time>)")
    pt.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint "
                    "(an error, changing nothing, when the run's checkpoint files all fail to load)")
    pt.add_argument("--restart", action="store_true", help="start over in a run folder that holds checkpoints: "
                    "its checkpoints/ and metrics.csv are moved into <run>/previous-<time>/, not deleted")
    pt.add_argument("--launcher", choices=["none", "slurm", "local"], default="none",
                    help="slurm: submit with submitit (jepa-core[slurm]), requeued and resumed on "
                         "preemption or time-out; local: the same job through submitit on this machine")
    sl = pt.add_argument_group("SLURM (with --launcher slurm|local)")
    sl.add_argument("--nodes", type=int, default=1)
    sl.add_argument("--gpus-per-node", type=int, default=1)
    sl.add_argument("--tasks-per-node", type=int, help="default: --gpus-per-node (one process per GPU)")
    sl.add_argument("--cpus-per-task", type=int)
    sl.add_argument("--mem-gb", type=float)
    sl.add_argument("--time", type=int, default=24 * 60, help="time limit in minutes (default 1440)")
    sl.add_argument("--partition")
    sl.add_argument("--account")
    sl.add_argument("--qos")
    sl.add_argument("--constraint")
    sl.add_argument("--job-name", default="jepa")
    sl.add_argument("--signal-delay", type=int, default=120, help="seconds of warning before the time limit")
    sl.add_argument("--max-requeues", type=int, default=20, help="requeues after time-outs")
    sl.add_argument("--wait", action="store_true", help="wait for the job and print its summary")
    # the options only a launcher uses, with their defaults
    pt.set_defaults(launcher_defaults={a.dest: a.default for a in sl._group_actions})

    ev = sub.add_parser("eval", help="evaluate the frozen encoder of a run folder or checkpoint")
    ev.add_argument("run_dir", help="a `jepa pretrain` run folder, or one of its checkpoint files")
    ev.add_argument("overrides", nargs="*", help="dotted overrides, e.g. eval.train_samples=5000")
    ev.add_argument("--protocol", help="comma-separated: linear,knn,attentive,lowshot,finetune,dense")
    ev.add_argument("--out", help="folder for the results (default <run>/eval; an earlier evaluation "
                                  "there is moved to <run>/eval-<time>, never overwritten)")

    sp = sub.add_parser("sample", help="generate images from a run of a generative method (e.g. djepa)")
    sp.add_argument("run_dir", help="a `jepa pretrain` run folder, or one of its checkpoint files")
    sp.add_argument("overrides", nargs="*", help="dotted overrides of the run's config, e.g. model.sample_steps=50")
    sp.add_argument("--classes", help="class ids, e.g. 0,3,5-7 (default: every class)")
    sp.add_argument("--num", type=int, default=64, help="images per class (default 64)")
    sp.add_argument("--cfg", type=float, help="classifier-free guidance scale, >= 1 (1: none; default: the run's)")
    sp.add_argument("--temperature", type=float, help="sampling temperature, > 0 (default: the run's)")
    sp.add_argument("--steps", type=int, help="generation steps, >= 1 (default: the run's)")
    sp.add_argument("--seed", type=int, default=0, help="the same seed gives the same images (default 0)")
    sp.add_argument("--batch-size", type=int, help="images generated at once (default: the run's)")
    sp.add_argument("--device", help="cpu, cuda, cuda:N (default: the run's train.device)")
    sp.add_argument("--out", help="folder for the PNG grids and samples.npz (default <run>/samples)")

    sub.add_parser("list", help="installed methods, presets, evaluators and checkpoint converters")

    cf = sub.add_parser("config", help="print the resolved config of a method and preset")
    cf.add_argument("method")
    cf.add_argument("overrides", nargs="*")
    cf.add_argument("--preset")
    cf.add_argument("--config")
    cf.add_argument("--explain", nargs="?", const="", metavar="KEY",
                    help="one line per key: value and meaning (with its source); KEY: only keys starting with it")

    cv = sub.add_parser("convert", help="convert a checkpoint: official <-> ours <-> safetensors (<-> hf)")
    cv.add_argument("input", help="official .pth.tar / .pt, Hugging Face folder or file, jepa checkpoint")
    cv.add_argument("output", help="file to write (a folder for --to hf)")
    cv.add_argument("--to", default="ours", choices=["ours", "safetensors", "official", "hf"])
    cv.add_argument("--method", metavar="NAME",
                    help="converter to use (an installed method package's name; a wrong name lists them); "
                         "default: the one the file records, else the one whose layout matches")
    cv.add_argument("--num-heads", type=int, help="encoder heads (needed for non-official widths)")
    cv.add_argument("--pred-num-heads", type=int, help="predictor heads (needed for non-official widths)")
    cv.add_argument("--img-size", type=int, help="resolution, for files that do not store it (RoPE)")
    cv.add_argument("--num-frames", type=int, help="clip length, for files that do not store it (RoPE)")
    # `jepa bench ...` goes to jepa_core.benchmark before parsing (main): its options are those of
    # the installed packages' cases, so the bench machinery is imported only for that command.
    sub.add_parser("bench", add_help=False, help="speed and memory benchmarks of the installed methods "
                   "(`jepa bench --help`)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # --debug is global: taken wherever it is, so `jepa pretrain ... --debug` works too.
    debug = "--debug" in argv or os.environ.get("JEPA_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    try:
        return _main(argv)
    except KeyboardInterrupt:
        if debug:
            raise
        print("jepa: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USAGE_ERRORS as e:
        if debug:
            raise
        print(_error_line(e), file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:
        from jepa_core.trainer import Preempted

        if isinstance(e, Preempted):
            # stopped by SIGTERM/SIGINT/SIGUSR1 after saving a checkpoint: one line, no traceback
            print(f"jepa: {e}", file=sys.stderr)
            return e.exit_code
        if debug or not isinstance(e, _run_errors()):
            raise
        print(_error_line(e), file=sys.stderr)
        return EXIT_RUN


def _main(argv: list[str]) -> int:
    if argv[:1] == ["bench"]:
        from jepa_core.benchmark import main as bench

        return bench(argv[1:])
    plugin = _plugin_command(argv[0]) if argv and not argv[0].startswith("-") else None
    if plugin is not None:
        return plugin(argv[1:])
    parser = _parser()
    # Overrides may come before or after options (`--run-dir X a.b=1 --resume c.d=2`).
    args, extra = parser.parse_known_args(argv)
    unknown = [a for a in extra if "=" not in a or a.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        if not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides or []) + extra
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "pretrain":
        from jepa_core.run import pretrain

        if args.resume and args.restart:
            parser.error("--resume and --restart exclude each other: --resume continues the run, "
                         "--restart starts it over (moving the old checkpoints aside)")
        if args.launcher == "none":
            given = [f"--{k.replace('_', '-')}" for k, v in args.launcher_defaults.items() if getattr(args, k) != v]
            if given:
                parser.error(f"{', '.join(given)} apply to a launcher: add --launcher slurm (or local)")
            summary = pretrain(args.method, args.preset, args.config, args.overrides, args.run_dir, args.resume,
                               restart=args.restart)
            if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
                _print_summary(summary)
        else:
            if args.restart:
                parser.error("--restart is not supported with --launcher: move the run's checkpoints/ and "
                             "metrics.csv aside yourself, or submit with another --run-dir")
            from jepa_core.launch import SlurmOptions, submit_pretrain

            options = SlurmOptions(
                nodes=args.nodes, gpus_per_node=args.gpus_per_node, tasks_per_node=args.tasks_per_node,
                cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb, time_min=args.time,
                partition=args.partition, account=args.account, qos=args.qos, constraint=args.constraint,
                job_name=args.job_name, signal_delay_s=args.signal_delay, max_requeues=args.max_requeues,
            )
            job = submit_pretrain(args.method, args.preset, args.config, args.overrides, args.run_dir,
                                  args.resume, options, cluster=args.launcher)
            print(f"submitted job {job.job_id}; submitit logs: {job.paths.folder}")
            if args.wait:
                results = job.results()  # one summary per task
                _print_summary(results[0])
    elif args.command == "eval":
        from jepa_core.run import evaluate_run

        protocols = [p.strip() for p in args.protocol.split(",") if p.strip()] if args.protocol else None
        summary = evaluate_run(args.run_dir, args.overrides, protocols, out_dir=args.out)
        _print_summary(summary)
    elif args.command == "sample":
        _print_summary(_sample(args))
    elif args.command == "list":
        for name in registry.methods():
            spec = registry.get_method(name)
            presets = ", ".join(spec.preset_paths()) or "-"
            print(f"{name:10s} {spec.description}\n{'':10s} presets: {presets} (default {spec.default_preset})")
        print(f"evaluators: {', '.join(registry.evaluators()) or 'none (pip install jepa-eval)'}")
        from jepa_core.pretrained import converters

        print(f"checkpoint converters (jepa convert --method): {', '.join(converters()) or 'none'}")
    elif args.command == "config":
        import yaml

        spec = registry.get_method(args.method)
        cfg = spec.load_config(args.preset, args.config, args.overrides)
        if args.explain is not None:
            from jepa_core.config import explain

            rows = [r for r in explain(cfg) if r[0].startswith(args.explain)]
            if not rows:
                keys = sorted({r[0].split(".")[0] for r in explain(cfg)})
                raise ConfigError(f"no key starts with {args.explain!r}; the sections are: {', '.join(keys)}")
            for key, value, meaning in rows:
                print(f"{key} = {json.dumps(value)}\n    {meaning}")
        else:
            print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
    elif args.command == "convert":
        from jepa_core.pretrained import convert

        hints = {"num_heads": args.num_heads, "pred_num_heads": args.pred_num_heads,
                 "img_size": args.img_size, "num_frames": args.num_frames}
        info = convert(args.input, args.output, to=args.to, method=args.method,
                       **{k: v for k, v in hints.items() if v})
        print(info.summary())
        print(f"wrote {args.output} ({args.to})")
    return 0


def _sample(args) -> dict:
    """`jepa sample`: the options are checked before the run is loaded, then the method's
    ``MethodSpec.sample`` hook writes the images."""
    from pathlib import Path

    from jepa_core.run import load_run

    checks = [("--cfg", args.cfg, 1.0, ">= 1 (1: no guidance)"), ("--num", args.num, 1, ">= 1"),
              ("--steps", args.steps, 1, ">= 1"), ("--batch-size", args.batch_size, 1, ">= 1"),
              ("--seed", args.seed, 0, ">= 0")]
    for flag, value, low, what in checks:
        if value is not None and value < low:
            raise ConfigError(f"{flag} {value:g} is invalid: it must be {what}")
    if args.temperature is not None and not args.temperature > 0:
        raise ConfigError(f"--temperature {args.temperature:g} is invalid: it must be > 0")
    run = load_run(args.run_dir, args.overrides)
    spec = run["spec"]
    if spec.sample is None:
        able = [n for n in registry.methods() if registry.get_method(n).sample is not None]
        raise ConfigError(f"method {spec.name!r} does not generate samples (its MethodSpec has no sample hook); "
                          f"methods that do: {', '.join(able) or 'none installed'}")
    out = Path(args.out) if args.out else Path(run["run_dir"]) / "samples"
    return spec.sample(run, out_dir=out, classes=args.classes, num=args.num, cfg_scale=args.cfg,
                       temperature=args.temperature, steps=args.steps, seed=args.seed,
                       batch_size=args.batch_size, device=args.device)


def _plugin_names() -> list[str]:
    """The subcommands installed packages add (entry point group ``jepa.commands``)."""
    from importlib import metadata

    return sorted(ep.name for ep in metadata.entry_points(group="jepa.commands"))


def _plugin_command(name: str):
    """``main(argv) -> int`` of a command an installed package adds (entry point group
    ``jepa.commands``, e.g. ``video = "jepa_video.check:main"``), or None."""
    from importlib import metadata

    for ep in metadata.entry_points(group="jepa.commands"):
        if ep.name == name:
            return ep.load()
    return None


def _print_summary(summary: dict) -> None:
    ev = summary.pop("evaluation_markdown", None)
    print(json.dumps({k: v for k, v in summary.items() if k != "evaluation"}, indent=2))
    if ev:
        print(ev)
    elif "evaluation" in summary:
        print(json.dumps(summary["evaluation"], indent=2))


if __name__ == "__main__":
    raise SystemExit(main())
