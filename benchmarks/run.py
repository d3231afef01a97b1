"""Speed and memory benchmarks (`nox -s bench`): medians over repeats after warm-up.

A thin wrapper around :mod:`jepa_core.bench` (also `jepa bench`), which writes its table into
BENCHMARKS.md with the machine, torch version and command. Examples:

    python benchmarks/run.py                      # CPU suite, fp32
    python benchmarks/run.py --threads 1 --official-ijepa /tmp/official/ijepa \\
        --official-jepa /tmp/official/jepa --official-vjepa2 /tmp/official/vjepa2
    python benchmarks/run.py --device cuda --dtype bf16   # see benchmarks/gpu_suite.sh
"""

from __future__ import annotations

import sys
from pathlib import Path

from jepa_core import bench


def main(argv: list[str] | None = None) -> int:
    args = bench.parser().parse_args(argv)
    if not args.output and not args.no_write:
        args.output = str(Path(__file__).resolve().parents[1] / "BENCHMARKS.md")
    text = bench.run(args, command="nox -s bench --")
    bench.write_report(args, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
