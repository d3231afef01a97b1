"""The `jepa` command: pretrain, eval, list, config."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from jepa_core import registry
from jepa_core.checkpoint import CheckpointError
from jepa_core.config import ConfigError, to_dict


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jepa", description="Joint-Embedding Predictive Architectures.")
    sub = p.add_subparsers(dest="command", required=True)

    pt = sub.add_parser("pretrain", help="pretrain a method (default preset: demo)")
    pt.add_argument("method", help="method name, e.g. ijepa (see `jepa list`)")
    pt.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=5e-4 data.batch_size=64")
    pt.add_argument("--preset", help="preset name (see `jepa list`)")
    pt.add_argument("--config", help="YAML file merged over the preset")
    pt.add_argument("--run-dir", help="run folder (default runs/<method>-<preset>-<time>)")
    pt.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint")

    ev = sub.add_parser("eval", help="evaluate the frozen encoder of a run folder or checkpoint")
    ev.add_argument("run_dir", help="a `jepa pretrain` run folder, or one of its checkpoint files")
    ev.add_argument("overrides", nargs="*", help="dotted overrides, e.g. eval.train_samples=5000")
    ev.add_argument("--protocol", help="comma-separated: linear,knn,attentive,lowshot,finetune")

    sub.add_parser("list", help="installed methods, presets and evaluators")

    cf = sub.add_parser("config", help="print the resolved config of a method and preset")
    cf.add_argument("method")
    cf.add_argument("overrides", nargs="*")
    cf.add_argument("--preset")
    cf.add_argument("--config")

    cv = sub.add_parser("convert", help="convert a checkpoint: official <-> ours <-> safetensors (<-> hf)")
    cv.add_argument("input", help="official .pth.tar / .pt, Hugging Face folder or file, jepa checkpoint")
    cv.add_argument("output", help="file to write (a folder for --to hf)")
    cv.add_argument("--to", default="ours", choices=["ours", "safetensors", "official", "hf"])
    cv.add_argument("--method", choices=["ijepa", "vjepa", "vjepa2"], help="default: read from the file")
    cv.add_argument("--num-heads", type=int, help="encoder heads (needed for non-official widths)")
    cv.add_argument("--pred-num-heads", type=int, help="predictor heads (needed for non-official widths)")
    cv.add_argument("--img-size", type=int, help="resolution, for files that do not store it (RoPE)")
    cv.add_argument("--num-frames", type=int, help="clip length, for files that do not store it (RoPE)")
    bn = sub.add_parser("bench", help="speed and memory benchmarks (optionally against official checkouts)")
    from jepa_core.bench import add_arguments as _bench_arguments

    _bench_arguments(bn)
    return p


def main(argv: list[str] | None = None) -> int:
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
    try:
        if args.command == "pretrain":
            from jepa_core.run import pretrain

            summary = pretrain(args.method, args.preset, args.config, args.overrides, args.run_dir, args.resume)
            _print_summary(summary)
        elif args.command == "eval":
            from jepa_core.run import evaluate_run

            protocols = [p.strip() for p in args.protocol.split(",") if p.strip()] if args.protocol else None
            summary = evaluate_run(args.run_dir, args.overrides, protocols)
            _print_summary(summary)
        elif args.command == "list":
            for name in registry.methods():
                spec = registry.get_method(name)
                presets = ", ".join(spec.preset_paths()) or "-"
                print(f"{name:10s} {spec.description}\n{'':10s} presets: {presets} (default {spec.default_preset})")
            print(f"evaluators: {', '.join(registry.evaluators()) or 'none (pip install jepa-eval)'}")
        elif args.command == "config":
            import yaml

            spec = registry.get_method(args.method)
            cfg = spec.load_config(args.preset, args.config, args.overrides)
            print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        elif args.command == "convert":
            from jepa_core.pretrained import convert

            hints = {"num_heads": args.num_heads, "pred_num_heads": args.pred_num_heads,
                     "img_size": args.img_size, "num_frames": args.num_frames}
            info = convert(args.input, args.output, to=args.to, method=args.method,
                           **{k: v for k, v in hints.items() if v})
            print(info.summary())
            print(f"wrote {args.output} ({args.to})")
        elif args.command == "bench":
            from jepa_core import bench

            bench.write_report(args, bench.run(args, "jepa bench"))
    except (ConfigError, FileNotFoundError, CheckpointError) as e:
        print(f"jepa: error: {e}", file=sys.stderr)
        return 2
    return 0


def _print_summary(summary: dict) -> None:
    ev = summary.pop("evaluation_markdown", None)
    print(json.dumps({k: v for k, v in summary.items() if k != "evaluation"}, indent=2))
    if ev:
        print(ev)
    elif "evaluation" in summary:
        print(json.dumps(summary["evaluation"], indent=2))


if __name__ == "__main__":
    raise SystemExit(main())
