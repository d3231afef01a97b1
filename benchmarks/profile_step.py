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

import torch
from jepa_core import bench
from jepa_core import bench_official as O


def profile(name: str, fn, device: torch.device, steps: int = 5) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    for _ in range(3):
        fn()
    bench._sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    bench._sync(device)
    wall = (time.perf_counter() - t) / steps
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with prof(activities=acts) as p:
        for _ in range(steps):
            fn()
        bench._sync(device)
    ka = p.key_averages()
    kernels = sum(e.count for e in ka if e.device_type == torch.autograd.DeviceType.CUDA) / steps
    print(f"\n=== {name}: {wall * 1e3:.2f} ms/step, {kernels:.0f} device kernels/step")
    print(ka.table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=60))
    if device.type == "cuda":
        print(ka.table(sort_by="self_cuda_time_total", row_limit=12, max_name_column_width=60))


def main() -> int:
    ap = argparse.ArgumentParser()
    bench.add_arguments(ap)
    ap.add_argument("--methods", default="ijepa,vjepa,vjepa2")
    args = ap.parse_args()
    device = torch.device(args.device if torch.cuda.is_available() or args.device == "cpu" else "cpu")
    ctx = bench.Context(device=device, dtype=None if args.dtype == "fp32" else torch.bfloat16, repeats=1,
                        warmup=1, sizes=tuple(args.sizes.split(",")),
                        official={"ijepa": args.official_ijepa, "jepa": args.official_jepa,
                                  "vjepa2": args.official_vjepa2}, log=lambda s: print(s, file=sys.stderr))
    for size in ctx.sizes:
        for method in args.methods.split(","):
            if method == "ijepa":
                model, _ = bench.build_ijepa(size)
                batch = bench._image_batch(size, ctx)
                key = "ijepa"
                builder = O.ijepa_step_builder(ctx.official[key]) if ctx.official.get(key) else None
            else:
                model, _ = bench.build_vjepa(method, size)
                batch = bench._video_batch(size, ctx)
                key = "jepa" if method == "vjepa" else "vjepa2"
                builder = O.video_step_builder(key, ctx.official[key]) if ctx.official.get(key) else None
            model.to(device).train()
            step = bench.our_step(model, batch, bench._optimizer(model), ctx)
            profile(f"ours {method} {size}", step, device)
            if builder is not None:
                theirs = builder(model, batch, ctx)
                profile(f"official {method} {size}", theirs.step, device)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
