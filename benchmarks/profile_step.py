"""Where a training step's time goes: torch.profiler tables of our step and the official one.

    python benchmarks/profile_step.py --device cuda --dtype bf16 --sizes tiny,base \\
        --official-ijepa PATH --official-jepa PATH --official-vjepa2 PATH > profile.txt

Prints, per method and size: wall time per step, CUDA kernels launched per step, and the top
operators by self CPU time and by device time. A diagnostic, not part of the suite's table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from jepa_core import benchmark

sys.path.insert(0, str(Path(__file__).resolve().parent))
import official  # noqa: E402  (benchmarks/official.py)


def profile(name: str, fn, device: torch.device, steps: int = 5) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    for _ in range(3):
        fn()
    benchmark.sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    benchmark.sync(device)
    wall = (time.perf_counter() - t) / steps
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with prof(activities=acts) as p:
        for _ in range(steps):
            fn()
        benchmark.sync(device)
    ka = p.key_averages()
    kernels = sum(e.count for e in ka if e.device_type == torch.autograd.DeviceType.CUDA) / steps
    print(f"\n=== {name}: {wall * 1e3:.2f} ms/step, {kernels:.0f} device kernels/step")
    print(ka.table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=60))
    if device.type == "cuda":
        print(ka.table(sort_by="self_cuda_time_total", row_limit=12, max_name_column_width=60))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="tiny", help="model sizes (tiny, small, base, large)")
    ap.add_argument("--methods", default="ijepa,vjepa,vjepa2")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="autocast dtype")
    ap.add_argument("--compile", action="store_true", help="torch.compile our model")
    ap.add_argument("--steps", type=int, default=5, help="profiled steps per side")
    official.add_arguments(ap)
    args = ap.parse_args(argv)
    device = torch.device(args.device if torch.cuda.is_available() or args.device == "cpu" else "cpu")
    ctx = benchmark.Context(device=device, dtype=None if args.dtype == "fp32" else torch.bfloat16, repeats=1,
                            warmup=1, sizes=tuple(args.sizes.split(",")), compile=args.compile,
                            official=official.adapters(args), log=lambda s: print(s, file=sys.stderr))
    for size in ctx.sizes:
        for method in args.methods.split(","):
            if method == "ijepa":
                from jepa_image import bench

                model, _ = bench.build_model(size)
                key = "ijepa"
            else:
                from jepa_video import bench

                model, _ = bench.build_model(method, size)
                key = bench.METHODS[method][1]
            batch = bench.make_batch(size, ctx)
            model.to(device).train()
            theirs = ctx.official[key].step(model, batch, ctx) if key in ctx.official else None
            profile(f"ours {method} {size}", benchmark.train_step(model, batch, ctx), device, args.steps)
            if theirs is not None:
                profile(f"official {method} {size}", theirs.step, device, args.steps)
            del model, theirs
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
