"""Speed and memory benchmarks: ``jepa bench``, ``nox -s bench`` (``python benchmarks/run.py``).

Every case reports the median over repeats after warm-up. With official checkouts
(``--official-ijepa PATH --official-jepa PATH --official-vjepa2 PATH``; never bundled, CC-BY-NC)
each case also runs the official implementation's equivalent in the same process, *interleaved*
with ours (one repeat of each in turn, alternating which goes first), and reports ours / theirs
and the speed-up theirs / ours. Training steps first copy identical weights into both models,
feed the same inputs and masks and print the loss difference.

Method-specific cases import their packages lazily and are skipped when a package is missing;
the official adapters live in :mod:`jepa_core.bench_official`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

# Peak dense bf16 tensor FLOP/s of common cards (for model FLOP utilisation on CUDA).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12}


@dataclass
class Row:
    """One line of the table. Times in seconds, memory in bytes."""

    name: str
    ours: float
    theirs: float | None = None
    unit: str = "ms"  # "ms" (time per call) or "/s" (items per second, ``ours`` holds the rate)
    mem_ours: float | None = None
    mem_theirs: float | None = None
    note: str = ""
    speedup: float | None = None  # theirs / ours as the median of per-round ratios (see interleaved)


@dataclass
class Context:
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype (None: fp32)
    repeats: int
    warmup: int
    official: dict[str, str | None] = field(default_factory=dict)
    sizes: tuple[str, ...] = ("tiny", "small")
    compile: bool = False
    methods: tuple[str, ...] = ("ijepa", "vjepa", "vjepa2")
    log: Callable[[str], None] = print


# ---------------------------------------------------------------------------------------------
# timing and memory


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: list[Callable[[], object]], warmup: int, repeats: int, device=torch.device("cpu"),
                paired: bool = False):
    """Median seconds per call of each function, measured in turns (ABAB..., the first of each
    round alternating) so that load from other processes hits all of them alike.

    ``paired=True`` (two functions) also returns the speed-up of the first over the second as
    the median over rounds of ``t_second / t_first``: each round times both back to back, so
    slow drifts of the machine (seen here: the same step taking 0.9 to 1.6 s within a minute)
    cancel in each ratio instead of landing on whichever side they hit."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    _sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for r in range(repeats):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            _sync(device)
            t = time.perf_counter()
            fns[i]()
            _sync(device)
            times[i].append(time.perf_counter() - t)
    medians = [statistics.median(t) for t in times]
    if paired:
        return medians, statistics.median(b / a for a, b in zip(times[0], times[1]))
    return medians


def _timed(fns, warmup: int, repeats: int, device=torch.device("cpu")):
    """``interleaved`` medians, plus the paired speed-up when there are two functions."""
    if len(fns) == 2:
        return interleaved(fns, warmup, repeats, device, paired=True)
    return interleaved(fns, warmup, repeats, device), None


def peak_memory(fn: Callable[[], object], device: torch.device) -> float:
    """Peak bytes allocated by one call above what was allocated before it.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the allocation events of
    ``torch.profiler`` (``profile_memory``) summed in time order (tracemalloc does not see
    torch's allocator, and RSS includes allocator caching).
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - base)
    import warnings

    from torch.profiler import ProfilerActivity, profile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    cur = peak = 0
    for e in events:
        cur += e.nbytes()
        peak = max(peak, cur)
    return float(peak)


# ---------------------------------------------------------------------------------------------
# cases: masks


@contextlib.contextmanager
def single_thread():
    """Collators run in DataLoader workers, where torch uses one thread; so do we here (and
    small tensor ops do not stall on a loaded machine waiting for a second thread)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class _Dummy:
    """``n`` tiny samples: collation is then the mask sampling plus a trivial default_collate."""

    @staticmethod
    def images(n: int):
        return [(torch.zeros(1), 0) for _ in range(n)]

    @staticmethod
    def clips(n: int, fpc: int):
        return [(torch.zeros(1), 0, [list(range(fpc))]) for _ in range(n)]


def case_masks_2d(ctx: Context) -> list[Row]:
    from jepa_core.masks import MultiBlockMaskCollator, MultiBlockMaskConfig

    batch, img, patch = 128, 224, 16
    samples = _Dummy.images(batch)
    ours = MultiBlockMaskCollator(MultiBlockMaskConfig(), img, patch)
    fns = [lambda: ours(samples)]
    theirs = None
    if ctx.official.get("ijepa"):
        from jepa_core import bench_official as O

        theirs = O.ijepa_mask_collator(ctx.official["ijepa"], img, patch)
        fns.append(lambda: theirs(samples))
    with single_thread():
        t, speed = _timed(fns, ctx.warmup, ctx.repeats * 2)
    return [Row(f"I-JEPA multi-block masks (1 ctx + 4 targets), batch {batch}, 14x14 grid",
                t[0], t[1] if theirs else None, speedup=speed)]


def case_masks_3d(ctx: Context) -> list[Row]:
    from jepa_video.masks import VJEPA_MASK_CONFIGS, MultiBlock3DMaskCollator

    rows = []
    batch = 24
    for label, img, key in (("V-JEPA", 224, "jepa"), ("V-JEPA 2", 256, "vjepa2")):
        ours = MultiBlock3DMaskCollator(VJEPA_MASK_CONFIGS, img, 16, 16, 2)
        samples = _Dummy.images(batch)
        fns = [lambda ours=ours, samples=samples: ours(samples)]
        theirs = None
        if ctx.official.get(key):
            from jepa_core import bench_official as O

            theirs = O.video_mask_collator(key, ctx.official[key], img)
            tsamples = _Dummy.clips(batch, 16) if key == "vjepa2" else samples
            fns.append(lambda theirs=theirs, tsamples=tsamples: theirs(tsamples))
        with single_thread():
            t, speed = _timed(fns, ctx.warmup, ctx.repeats * 2)
        g = img // 16
        rows.append(Row(f"{label} 3-D multi-block masks (8x0.15 + 2x0.7), batch {batch}, 16 frames {img} px "
                        f"(8x{g}x{g})", t[0], t[1] if theirs else None, speedup=speed))
    return rows


# ---------------------------------------------------------------------------------------------
# cases: training steps

# size -> (encoder, image px, frames, batch, predictor width, predictor depth)
# (tiny and small fit a CPU run; base and large are for GPUs, benchmarks/gpu_suite.sh)
IMAGE_SIZES = {
    "tiny": ("vit_tiny", 224, 1, 16, 96, 6),
    "small": ("vit_small", 224, 1, 8, 192, 6),
    "base": ("vit_base", 224, 1, 64, 384, 6),
    "large": ("vit_large", 224, 1, 32, 384, 12),
}
VIDEO_SIZES = {
    "tiny": ("vit_tiny", 112, 16, 4, 96, 6),
    "small": ("vit_small", 112, 16, 2, 192, 6),
    "base": ("vit_base", 224, 16, 8, 384, 6),
    "large": ("vit_large", 224, 16, 8, 384, 12),
}


def _optimizer(model) -> torch.optim.Optimizer:
    from jepa_core.optim import adamw_kwargs, param_groups

    return torch.optim.AdamW(param_groups(model.trainable_modules()), lr=1e-4, weight_decay=0.04,
                             **adamw_kwargs(model_device(model)))


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def our_step(model, batch: dict, opt, ctx: Context, momentum: float = 0.996) -> Callable[[], torch.Tensor]:
    """One training step as the Trainer runs it: forward under autocast, backward, fused AdamW,
    EMA (foreach), no host sync."""
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


def _image_batch(size: str, ctx: Context, seed: int = 0):
    from jepa_core.masks import MultiBlockMaskCollator, MultiBlockMaskConfig

    enc, img, _, batch, _, _ = IMAGE_SIZES[size]
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, img, img, generator=g)
    out = MultiBlockMaskCollator(MultiBlockMaskConfig(), img, 16, seed=seed)([(x, 0) for x in images])
    return {"images": images.to(ctx.device), "masks_enc": [m.to(ctx.device) for m in out["masks_enc"]],
            "masks_pred": [m.to(ctx.device) for m in out["masks_pred"]]}


def _video_batch(size: str, ctx: Context, seed: int = 0):
    from jepa_video.masks import VJEPA_MASK_CONFIGS, MultiBlock3DMaskCollator

    enc, img, frames, batch, _, _ = VIDEO_SIZES[size]
    g = torch.Generator().manual_seed(seed)
    clips = torch.randn(batch, 3, frames, img, img, generator=g)
    out = MultiBlock3DMaskCollator(VJEPA_MASK_CONFIGS, img, frames, 16, 2, seed=seed)([(x, 0) for x in clips])
    return {"videos": clips.to(ctx.device), "masks_enc": [m.to(ctx.device) for m in out["masks_enc"]],
            "masks_pred": [m.to(ctx.device) for m in out["masks_pred"]]}


def build_ijepa(size: str):
    from jepa_image.ijepa import IJEPAConfig, build_model

    enc, img, _, batch, pdim, pdepth = IMAGE_SIZES[size]
    cfg = IJEPAConfig()
    cfg.model.encoder, cfg.model.patch_size, cfg.data.image_size = enc, 16, img
    cfg.model.pred_emb_dim, cfg.model.pred_depth = pdim, pdepth
    torch.manual_seed(0)
    return build_model(cfg), cfg


def build_vjepa(method: str, size: str, packed: bool = True):
    from jepa_video.vjepa import VJEPA2Config, VJEPAConfig, build_model

    enc, img, frames, batch, pdim, pdepth = VIDEO_SIZES[size]
    cfg = VJEPA2Config() if method == "vjepa2" else VJEPAConfig()
    m, d = cfg.model, cfg.data
    m.encoder, m.pred_emb_dim, m.pred_depth = enc, pdim, pdepth
    m.pred_num_heads = None  # the encoder's heads (head_dim 32 for RoPE at both sizes)
    m.activation_checkpointing = False  # off on both sides (a memory/speed trade, not a hot path)
    m.packed_context = packed
    d.crop_size, d.frames_per_clip = img, frames
    torch.manual_seed(0)
    return build_model(cfg), cfg


def _flops_per_step(step: Callable[[], object], device: torch.device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step()
    return float(fc.get_total_flops())


def _step_rows(ctx: Context, label: str, ours_model, batch: dict, official_builder, n_items: int) -> list[Row]:
    ours_model.to(ctx.device).train()
    opt = _optimizer(ours_model)
    theirs = None
    if official_builder is not None:
        # Identical weights: the official models are built, then loaded from ours.
        theirs = official_builder(ours_model, batch, ctx)
        with torch.autocast(ctx.device.type, dtype=ctx.dtype, enabled=ctx.dtype is not None):
            with torch.no_grad():
                l_ours = ours_model(batch)["loss"].float().item()
                l_theirs = theirs.loss().float().item()
        ctx.log(f"  {label}: loss ours {l_ours:.6f} official {l_theirs:.6f} difference {l_ours - l_theirs:+.2e}")
        if abs(l_ours - l_theirs) > 1e-4 * max(1.0, abs(l_theirs)):
            if ctx.dtype is None:  # fp32: the same computation must give the same loss
                raise AssertionError(f"{label}: losses differ (ours {l_ours}, official {l_theirs})")
            ctx.log(f"  WARNING {label}: losses differ beyond fp32 rounding under {ctx.dtype} autocast")
    step = our_step(ours_model, batch, opt, ctx)
    fns = [step] + ([theirs.step] if theirs else [])
    t, speed = _timed(fns, ctx.warmup, ctx.repeats, ctx.device)
    mem = [peak_memory(f, ctx.device) for f in fns]
    note = f"{n_items / t[0]:.1f} samples/s"
    if ctx.device.type == "cuda":
        flops = _flops_per_step(step, ctx.device)
        peak = _peak_flops(ctx.device)
        note += f", {flops / 1e9:.0f} GFLOP/step, MFU {flops / t[0] / peak:.1%}" if peak else ""
    return [Row(label, t[0], t[1] if theirs else None, mem_ours=mem[0], mem_theirs=mem[1] if theirs else None,
                note=note, speedup=speed)]


def _peak_flops(device: torch.device) -> float | None:
    name = torch.cuda.get_device_name(device)
    for k, v in PEAK_BF16_FLOPS.items():
        if k in name:
            return v
    return None


def case_steps(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    try:
        import jepa_image  # noqa: F401
        has_image = True
    except ImportError:
        ctx.log("  jepa-image not installed: I-JEPA steps skipped")
        has_image = False
    try:
        import jepa_video  # noqa: F401
        has_video = True
    except ImportError:
        ctx.log("  jepa-video not installed: V-JEPA steps skipped")
        has_video = False
    from jepa_core import bench_official as O

    prec = "fp32" if ctx.dtype is None else str(ctx.dtype).replace("torch.", "")
    for size in ctx.sizes:
        if has_image and "ijepa" in ctx.methods:
            enc, img, _, b, pdim, pdepth = IMAGE_SIZES[size]
            model, _ = build_ijepa(size)
            builder = O.ijepa_step_builder(ctx.official["ijepa"]) if ctx.official.get("ijepa") else None
            rows += _step_rows(ctx, f"I-JEPA train step, {enc} {img} px/16, pred {pdim}x{pdepth}, batch {b}, {prec}",
                               model, _image_batch(size, ctx), builder, b)
        if has_video:
            for method, key in (("vjepa", "jepa"), ("vjepa2", "vjepa2")):
                if method not in ctx.methods:
                    continue
                enc, img, frames, b, pdim, pdepth = VIDEO_SIZES[size]
                model, _ = build_vjepa(method, size)
                builder = O.video_step_builder(key, ctx.official[key]) if ctx.official.get(key) else None
                name = "V-JEPA" if method == "vjepa" else "V-JEPA 2"
                rows += _step_rows(ctx, f"{name} train step, {enc} {frames}f {img} px, pred {pdim}x{pdepth}, "
                                   f"batch {b}, {prec}", model, _video_batch(size, ctx), builder, b)
    return rows


def case_ckpt(ctx: Context) -> list[Row]:
    """Activation checkpointing (``model.activation_checkpointing``) against the plain step, ours
    only, at the largest size asked for: time and peak memory of both (the official I-JEPA and
    V-JEPA have no such option; V-JEPA 2's is the same per-block checkpoint)."""
    from jepa_core.nn import enable_activation_checkpointing

    size = ctx.sizes[-1]
    rows: list[Row] = []
    for method in ctx.methods:
        try:
            if method == "ijepa":
                model, _ = build_ijepa(size)
                batch, n = _image_batch(size, ctx), IMAGE_SIZES[size][3]
            else:
                model, _ = build_vjepa(method, size)
                batch, n = _video_batch(size, ctx), VIDEO_SIZES[size][3]
        except ImportError:
            ctx.log(f"  {method}: package not installed, skipped")
            continue
        model.to(ctx.device).train()
        plain = copy.deepcopy(model)
        enable_activation_checkpointing(model.encoder.blocks)
        enable_activation_checkpointing(model.predictor.predictor_blocks)
        steps = [our_step(m, batch, _optimizer(m), ctx) for m in (model, plain)]
        t, speed = _timed(steps, ctx.warmup, ctx.repeats, ctx.device)
        mem = [peak_memory(f, ctx.device) for f in steps]
        rows.append(Row(f"{method} {size}: activation checkpointing (ours) vs without (official column: ours "
                        f"plain)", t[0], t[1], mem_ours=mem[0], mem_theirs=mem[1], speedup=speed,
                        note=f"{n / t[0]:.1f} samples/s with, {n / t[1]:.1f} without"))
        del model, plain, steps
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------------------------
# cases: EMA and data loading


def case_ema(ctx: Context) -> list[Row]:
    from jepa_core.nn import vit
    from jepa_core.target import EMATarget

    enc = vit("vit_small").to(ctx.device)
    tgt = EMATarget(enc)
    ref = copy.deepcopy(enc)

    def official_loop():  # ijepa:src/train.py and jepa:app/vjepa/train.py, one pair at a time
        with torch.no_grad():
            for q, k in zip(enc.parameters(), ref.parameters()):
                k.data.mul_(0.996).add_((1.0 - 0.996) * q.detach().data)

    t, speed = _timed([lambda: tgt.update(enc, 0.996), official_loop], ctx.warmup, ctx.repeats * 4, ctx.device)
    n = sum(p.numel() for p in enc.parameters()) / 1e6
    return [Row(f"EMA update alone, ViT-Small encoder ({n:.1f} M params); theirs: the I-JEPA/V-JEPA loop",
                t[0], t[1], speedup=speed)]


def case_data(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    try:
        from jepa_image.ijepa import IJEPAConfig, build_train_data
    except ImportError:
        ctx.log("  jepa-image not installed: image loading skipped")
    else:
        cfg = IJEPAConfig()
        cfg.data.dataset, cfg.data.image_size, cfg.model.patch_size = "fashion_mnist_demo", 28, 4
        cfg.mask.min_keep = 4
        ds, collate = build_train_data(cfg)
        b = 128
        idx = iter(range(10**9))

        def load():
            return collate([ds[next(idx) % len(ds)] for _ in range(b)])

        t = interleaved([load], 1, ctx.repeats)[0]
        rows.append(Row(f"image batch: {b} Fashion-MNIST samples + batched crop + masks (28 px)", t,
                        note=f"{b / t:.0f} images/s"))
    try:
        from jepa_video.datasets import VideoIndex
        from jepa_video.decoders import available_backends
        from jepa_video.demo_data import make_demo_videos
        from jepa_video.sampling import ClipSampler
        from jepa_video.transforms import VideoTrainTransform
    except ImportError:
        ctx.log("  jepa-video not installed: video loading skipped")
        return rows
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        index = make_demo_videos(Path(tmp) / "clips", 16, frames=48, size=64, seed=0)
        index = index if index.is_file() else Path(tmp) / "clips" / "index.csv"
        for backend in available_backends():
            ds = VideoIndex(index, sampler=ClipSampler(frames_per_clip=16, frame_step=2), backend=backend,
                            transform=VideoTrainTransform(64))
            idx = iter(range(10**9))
            t = interleaved([lambda ds=ds, idx=idx: ds[next(idx) % len(ds)]], 2, ctx.repeats * 2)[0]
            rows.append(Row(f"video clip: 16 of 48 frames (step 2), 64 px mp4, crop + flip, {backend}", t,
                            note=f"{1 / t:.0f} clips/s"))
    return rows


CASES: dict[str, Callable[[Context], list[Row]]] = {
    "masks": lambda c: case_masks_2d(c) + case_masks_3d(c),
    "steps": case_steps,
    "ema": case_ema,
    "data": case_data,
    "ckpt": case_ckpt,
}
DEFAULT_CASES = ("masks", "steps", "ema", "data")


# ---------------------------------------------------------------------------------------------
# report


def _fmt_time(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s * 1e3:.0f} ms"


def _fmt_mem(b: float | None) -> str:
    return "" if b is None else f"{b / 2**20:.0f} MiB"


def table(rows: list[Row]) -> str:
    lines = ["| benchmark | ours (median) | official (median) | ours / official | speed-up | "
             "peak mem ours | peak mem official | notes |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        sp = r.speedup if r.speedup is not None else (r.theirs / r.ours if r.theirs else None)
        ratio = f"{1 / sp:.3f}" if sp else ""
        speed = f"**{sp:.2f}x**" if sp else ""
        lines.append(f"| {r.name} | {_fmt_time(r.ours)} | {_fmt_time(r.theirs) if r.theirs else ''} | {ratio} | "
                     f"{speed} | {_fmt_mem(r.mem_ours)} | {_fmt_mem(r.mem_theirs)} | {r.note} |")
    return "\n".join(lines)


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({cpu})"
    return (f"{dev}, {os.cpu_count()} CPU cores visible, {torch.get_num_threads()} torch threads, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="jepa bench", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return ap


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--quick", action="store_true", help="fewer repeats, tiny models only")
    ap.add_argument("--repeats", type=int, help="timed repeats per case (default 7, quick 3)")
    ap.add_argument("--cases", default=",".join(DEFAULT_CASES),
                    help=f"comma-separated subset of {','.join(CASES)} (default: {','.join(DEFAULT_CASES)})")
    ap.add_argument("--methods", default="ijepa,vjepa,vjepa2", help="methods of the steps and ckpt cases")
    ap.add_argument("--sizes", default="tiny,small", help="model sizes of the training steps")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="autocast dtype of the steps")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--compile", action="store_true", help="torch.compile our model in the training steps")
    ap.add_argument("--official-ijepa", metavar="PATH", help="a checkout of facebookresearch/ijepa")
    ap.add_argument("--official-jepa", metavar="PATH", help="a checkout of facebookresearch/jepa (V-JEPA)")
    ap.add_argument("--official-vjepa2", metavar="PATH", help="a checkout of facebookresearch/vjepa2")
    ap.add_argument("--output", help="markdown file to write (default: BENCHMARKS.md of the repository, "
                    "when run from one)")
    ap.add_argument("--no-write", action="store_true", help="only print the table")


def run(args: argparse.Namespace, command: str = "jepa bench") -> str:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available: running the CPU path (fp32)", file=sys.stderr)
        device, args.dtype = torch.device("cpu"), "fp32"
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 7)
    sizes = ("tiny",) if args.quick else tuple(s for s in args.sizes.split(",") if s)
    ctx = Context(device=device, dtype=None if args.dtype == "fp32" else torch.bfloat16, repeats=repeats,
                  warmup=1 if args.quick else 2, sizes=sizes, compile=args.compile,
                  methods=tuple(m for m in args.methods.split(",") if m),
                  official={"ijepa": args.official_ijepa, "jepa": args.official_jepa, "vjepa2": args.official_vjepa2},
                  log=lambda s: print(s, file=sys.stderr, flush=True))
    rows: list[Row] = []
    for name in [c.strip() for c in args.cases.split(",") if c.strip()]:
        if name not in CASES:
            raise SystemExit(f"unknown case {name!r}; valid: {', '.join(CASES)}")
        ctx.log(f"[bench] {name}")
        new = CASES[name](ctx)
        for r in new:
            sp = r.speedup if r.speedup is not None else (r.theirs / r.ours if r.theirs else None)
            ctx.log(f"  {r.name}: {_fmt_time(r.ours)}" + (f" vs {_fmt_time(r.theirs)} (x{sp:.2f})" if r.theirs else ""))
        rows += new
    argv = " ".join(sys.argv[1:])
    header = (f"Machine: {machine(device)}.\nCommand: `{command}` ({argv or 'no arguments'}). "
              f"Medians of {repeats} repeats after warm-up; ours and official interleaved in one process; "
              f"ratios are medians of per-round ratios.\n")
    text = header + "\n" + table(rows) + "\n"
    print(text)
    return text


def main(argv: list[str] | None = None, command: str = "jepa bench") -> int:
    args = parser().parse_args(argv)
    text = run(args, command)
    write_report(args, text)
    return 0


def write_report(args: argparse.Namespace, text: str) -> Path | None:
    """Replace the section of BENCHMARKS.md between the suite's markers with ``text``."""
    if args.no_write:
        return None
    path = Path(args.output) if args.output else None
    if path is None:
        here = Path.cwd()
        if not (here / "BENCHMARKS.md").is_file():
            return None
        path = here / "BENCHMARKS.md"
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


if __name__ == "__main__":
    raise SystemExit(main())
