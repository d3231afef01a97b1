"""Timing and memory helpers for benchmarks, and the ``jepa bench`` runner.

Packages register :class:`BenchCase` lists under the ``jepa.bench`` entry-point group
(``name = "package.bench:CASES"``); ``jepa bench`` runs those of the installed packages.
Official-code comparisons live only in the repository (benchmarks/official.py, which fills
``Context.official``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata

import torch


@dataclass
class Row:
    """One line of the table: seconds per call, bytes; ``speedup`` is theirs / ours."""

    name: str
    ours: float
    theirs: float | None = None
    mem_ours: float | None = None
    mem_theirs: float | None = None
    note: str = ""
    speedup: float | None = None


@dataclass
class Context:
    """What a case runs with. ``official[repo]`` (keyed by upstream repository name), when given, offers
    ``mask_collator(img, patch=16, frames=16)`` and ``step(model, batch, ctx)`` (an object whose
    ``step()`` is the official training step, built from ``model``'s weights)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype | None = None  # autocast dtype of training steps (None: fp32)
    repeats: int = 3
    warmup: int = 1
    sizes: tuple[str, ...] = ("tiny",)
    methods: tuple[str, ...] = ()  # empty: all
    compile: bool = False
    official: dict = field(default_factory=dict)  # upstream repo name -> adapter (benchmarks/official.py)
    log: Callable[[str], None] = print

    def wants(self, method: str) -> bool:
        return not self.methods or method in self.methods


@dataclass(frozen=True)
class BenchCase:
    """``fn(ctx) -> rows``; several packages may add cases of one ``name`` (``--cases NAME``)."""

    name: str
    fn: Callable[[Context], list[Row]]
    default: bool = True


_LOCAL: list[BenchCase] = []


def register(*cases: BenchCase) -> None:
    """Register cases in this process (code that is not an installed package, tests)."""
    _LOCAL.extend(c for c in cases if c not in _LOCAL)


def cases() -> dict[str, list[BenchCase]]:
    """Cases of the installed packages (entry points, by name) and registered ones, by case name."""
    found = [c for ep in sorted(metadata.entry_points(group="jepa.bench"), key=lambda e: e.name)
             for c in ep.load()]
    out: dict[str, list[BenchCase]] = {}
    for c in dict.fromkeys(found + _LOCAL):
        out.setdefault(c.name, []).append(c)
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: list[Callable[[], object]], warmup: int, repeats: int, device=torch.device("cpu")):
    """``(median seconds per call of each function, speed-up or None)``, timed in turns (the first
    of each round alternating) so that load from other processes hits all alike. With two
    functions the speed-up of the first is the median over rounds of ``t_second / t_first``:
    drifts of the machine cancel in each round's ratio instead of landing on one side."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for r in range(repeats):
        for i in (range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))):
            sync(device)
            t = time.perf_counter()
            fns[i]()
            sync(device)
            times[i].append(time.perf_counter() - t)
    speedup = statistics.median(b / a for a, b in zip(*times)) if len(fns) == 2 else None
    return [statistics.median(t) for t in times], speedup


def peak_memory(fn: Callable[[], object], device: torch.device) -> float:
    """Peak bytes allocated by one call above what was allocated before: CUDA max allocated, or
    on CPU the ``torch.profiler`` allocation events summed in time order (tracemalloc does not
    see torch's allocator; RSS includes allocator caching)."""
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        return float(torch.cuda.max_memory_allocated(device) - base)
    import warnings

    from torch.profiler import ProfilerActivity, profile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    cur = peak = 0
    for e in events:
        cur += e.nbytes()
        peak = max(peak, cur)
    return float(peak)


@contextlib.contextmanager
def single_thread():
    """One torch thread, as in a DataLoader worker (collators)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# Peak dense bf16 tensor FLOP/s of common cards (model FLOP utilisation on CUDA).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12}


def train_step(model, batch: dict, ctx: Context, momentum: float = 0.996) -> Callable[[], torch.Tensor]:
    """One step of a :class:`~jepa_core.method.JEPAMethod` as the Trainer runs it: forward under
    autocast, backward, fused AdamW, foreach EMA, no host sync."""
    from jepa_core.optim import adamw_kwargs, param_groups

    kw = adamw_kwargs(next(model.parameters()).device)
    opt = torch.optim.AdamW(param_groups(model.trainable_modules()), lr=1e-4, weight_decay=0.04, **kw)
    net = torch.compile(model) if ctx.compile else model

    def step():
        with torch.autocast(ctx.device.type, dtype=ctx.dtype, enabled=ctx.dtype is not None):
            loss = net(batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.update_target(momentum)
        return loss

    return step


def step_row(ctx: Context, label: str, steps: list[Callable[[], object]], n_items: int) -> Row:
    """Time and peak memory of our step (and another one to compare), with samples/s and, on
    CUDA, FLOPs per step and model FLOP utilisation."""
    t, speedup = interleaved(steps, ctx.warmup, ctx.repeats, ctx.device)
    mem = [peak_memory(f, ctx.device) for f in steps] + [None]
    note = f"{n_items / t[0]:.1f} samples/s"
    if ctx.device.type == "cuda":
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc:
            steps[0]()
        flops, name = fc.get_total_flops(), torch.cuda.get_device_name(ctx.device)
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
        note += f", {flops / 1e9:.0f} GFLOP/step" + (f", MFU {flops / t[0] / peak:.1%}" if peak else "")
    return Row(label, t[0], t[1] if len(t) > 1 else None, mem[0], mem[1], note, speedup)


def _ms(s: float | None) -> str:
    return "" if s is None else f"{s * 1e3:.2f} ms" if s < 1 else f"{s * 1e3:.0f} ms"


def table(rows: list[Row]) -> str:
    lines = ["| benchmark | ours (median) | official (median) | ours / official | speed-up | "
             "peak mem ours | peak mem official | notes |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    mib = lambda b: "" if b is None else f"{b / 2**20:.0f} MiB"  # noqa: E731
    for r in rows:
        sp = r.speedup if r.speedup is not None else (r.theirs / r.ours if r.theirs else None)
        lines.append(f"| {r.name} | {_ms(r.ours)} | {_ms(r.theirs)} | {f'{1 / sp:.3f}' if sp else ''} | "
                     f"{f'**{sp:.2f}x**' if sp else ''} | {mib(r.mem_ours)} | {mib(r.mem_theirs)} | {r.note} |")
    return "\n".join(lines)


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        cpu = next((x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name")), cpu)
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({cpu})"
    return (f"{dev}, {os.cpu_count()} CPU cores visible, {torch.get_num_threads()} torch threads, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    names = cases()
    default = ",".join(n for n, cs in names.items() if any(c.default for c in cs))
    ap.add_argument("--cases", default=default, help=f"comma-separated subset of {','.join(names) or 'none'} "
                    f"(installed packages' cases; default {default})")
    ap.add_argument("--quick", action="store_true", help="fewer repeats, tiny models only")
    ap.add_argument("--repeats", type=int, help="timed repeats per case (default 7, quick 3)")
    ap.add_argument("--methods", default="", help="methods of the method cases (default: all)")
    ap.add_argument("--sizes", default="tiny,small", help="model sizes of the training steps")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="autocast dtype of the steps")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--compile", action="store_true", help="torch.compile our model in the training steps")


def run(args: argparse.Namespace, command: str = "jepa bench", official: dict | None = None) -> str:
    """Run the chosen cases; return (and print) the header and the markdown table."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available: running the CPU path (fp32)", file=sys.stderr)
        device, args.dtype = torch.device("cpu"), "fp32"
    if args.threads:
        torch.set_num_threads(args.threads)
    split = lambda s: tuple(x.strip() for x in s.split(",") if x.strip())  # noqa: E731
    ctx = Context(device, None if args.dtype == "fp32" else torch.bfloat16, args.repeats or (3 if args.quick else 7),
                  1 if args.quick else 2, ("tiny",) if args.quick else split(args.sizes), split(args.methods),
                  args.compile, official or {}, lambda s: print(s, file=sys.stderr, flush=True))
    known, rows = cases(), []
    if not known:
        ctx.log("no benchmark cases installed: they come with the method packages (jepa-image, jepa-video)")
    for name in split(args.cases):
        if name not in known:
            raise SystemExit(f"unknown case {name!r}; installed: {', '.join(known) or 'none'}")
        ctx.log(f"[bench] {name}")
        for case in known[name]:
            for r in case.fn(ctx):
                ctx.log(f"  {r.name}: {_ms(r.ours)}" + (f" vs {_ms(r.theirs)}" if r.theirs else ""))
                rows.append(r)
    text = (f"Machine: {machine(device)}.\nCommand: `{command}` ({' '.join(sys.argv[1:]) or 'no arguments'}). "
            f"Medians of {ctx.repeats} repeats after warm-up; ours and official interleaved in one process; "
            f"ratios are medians of per-round ratios.\n\n{table(rows)}\n")
    print(text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="jepa bench", description="Speed and memory of the installed methods' cases.")
    add_arguments(ap)
    run(ap.parse_args(argv))
    return 0
