"""Speed and memory benchmarks (`nox -s bench`): medians over repeats after warm-up.

The cases are those of `jepa bench` (jepa_image.bench, jepa_video.bench, run by
jepa_core.benchmark); this script adds the comparison with official checkouts
(benchmarks/official.py, never in a wheel) and writes its table into BENCHMARKS.md with the
machine, torch version and command. Examples:

    python benchmarks/run.py                      # CPU suite, fp32
    python benchmarks/run.py --quick --cases masks --no-write
    python benchmarks/run.py --threads 1 --official-ijepa .official/ijepa \\
        --official-jepa .official/jepa --official-vjepa2 .official/vjepa2
    python benchmarks/run.py --device cuda --dtype bf16   # see benchmarks/gpu_suite.sh
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import torch
from jepa_core import benchmark

sys.path.insert(0, str(Path(__file__).resolve().parent))
import official  # noqa: E402  (benchmarks/official.py)

ROOT = Path(__file__).resolve().parents[1]
WORKSPACE_CASES = ("jepa_image.bench", "jepa_video.bench")


def register_workspace_cases() -> None:
    """The workspace packages' cases, whether or not the installed metadata lists their
    ``jepa.bench`` entry points (a venv synced before they were added, sources on PYTHONPATH)."""
    for name in WORKSPACE_CASES:
        try:
            benchmark.register(*importlib.import_module(name).CASES)
        except ImportError:
            print(f"{name.split('.')[0]} not installed: its cases are skipped", file=sys.stderr)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchmark.add_arguments(ap)
    official.add_arguments(ap)
    ap.add_argument("--output", help="markdown file to write (default: BENCHMARKS.md of the repository)")
    ap.add_argument("--no-write", action="store_true", help="only print the table")
    return ap


def write_report(args: argparse.Namespace, text: str) -> Path | None:
    """Replace the section of the report between this run's markers (tag: device, dtype,
    compile, official) with ``text``."""
    if args.no_write:
        return None
    path = Path(args.output) if args.output else ROOT / "BENCHMARKS.md"
    dev = "cuda" if args.device.startswith("cuda") and torch.cuda.is_available() else "cpu"
    tag = f"{dev}-{args.dtype}" + ("-compile" if args.compile else "") + (
        "-official" if any((args.official_ijepa, args.official_jepa, args.official_vjepa2)) else "")
    start, end = f"<!-- bench:{tag}:start -->", f"<!-- bench:{tag}:end -->"
    block = f"{start}\n{text}{end}"
    old = path.read_text() if path.is_file() else "# Benchmarks\n"
    if start in old and end in old:
        new = old[: old.index(start)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + f"\n\n## Suite results: {tag}\n\n{block}\n"
    path.write_text(new)
    print(f"wrote {path}", file=sys.stderr)
    return path


def main(argv: list[str] | None = None) -> int:
    register_workspace_cases()
    args = parser().parse_args(argv)
    text = benchmark.run(args, command="nox -s bench --", official=official.adapters(args))
    write_report(args, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
