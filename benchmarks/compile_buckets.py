"""I-JEPA training steps with static mask shapes (``mask.buckets``) under torch.compile and CUDA
graphs: step time, samples/s, model FLOP utilisation, compile time, compiled graphs and host
syncs, against the eager step with the official (unbucketed) masks.

    python benchmarks/compile_buckets.py --device cuda --size large        # ViT-L/16, 224 px, bf16
    python benchmarks/compile_buckets.py --device cuda --size huge --batch 32
    python benchmarks/compile_buckets.py --quick --no-write                # CPU: tiny, seconds

Modes: ``eager`` (official masks, a new length per batch), ``eager-buckets``, ``compile``
(``torch.compile`` default, buckets), ``max-autotune`` (``mode="max-autotune-no-cudagraphs"``),
``cudagraphs`` (``mode="max-autotune"``: CUDA graphs, one per bucket). Each mode runs the same
``--batches`` pre-drawn batches round-robin (so every bucket appears) for ``--steps`` timed steps
after warm-up; compile time is the wall time of the warm-up pass. MFU: FLOPs of the eager step
(torch.utils.flop_counter) over the peak dense bf16 rate of the card
(jepa_core.benchmark.PEAK_BF16_FLOPS). Host syncs: the steady-state steps run under
``torch.cuda.set_sync_debug_mode("warn")`` and the warnings are counted. Results go to
BENCHMARKS.md ("Compiled steps with mask buckets") unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from jepa_core import benchmark
from jepa_core.optim import adamw_kwargs, param_groups

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"tiny": ("vit_tiny", 16, 224), "small": ("vit_small", 16, 224), "base": ("vit_base", 16, 224),
         "large": ("vit_large", 16, 224), "huge": ("vit_huge", 14, 224)}
MODES = ("eager", "eager-buckets", "compile", "max-autotune", "cudagraphs")


def build(size: str, buckets: int, quick: bool):
    from jepa_image import ijepa

    if quick:
        over = ["model.encoder=custom", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
                "model.pred_depth=1", "model.pred_emb_dim=16", "model.patch_size=4", "data.image_size=32",
                "model.in_chans=3", "mask.min_keep=4"]
    else:
        enc, patch, img = SIZES[size]
        over = [f"model.encoder={enc}", f"model.patch_size={patch}", f"data.image_size={img}"]
    cfg = ijepa.SPEC.load_config("in1k_vith14", overrides=[*over, f"mask.buckets={buckets}"])
    return cfg, ijepa


def batches(cfg, ijepa, n: int, batch: int, device: torch.device, seed: int) -> list[dict]:
    from jepa_core.masks import MultiBlockMaskCollator

    img = cfg.data.image_size
    collate = MultiBlockMaskCollator(cfg.mask, img, cfg.model.patch_size, seed=seed)
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        b = collate([(torch.randn(3, img, img, generator=g), 0) for _ in range(batch)])
        out.append({k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor)
                        else [m.to(device) for m in v] if isinstance(v, list) else v)
                    for k, v in b.items() if k not in ("labels", "num_bad")})
    return out


def run_mode(mode: str, args, device: torch.device, dtype) -> dict:
    cfg, ijepa = build(args.size, 0 if mode == "eager" else args.buckets, args.quick)
    torch.manual_seed(0)
    model = ijepa.build_model(cfg).to(device)
    data = batches(cfg, ijepa, args.batches, args.batch, device, seed=1)
    opt = torch.optim.AdamW(param_groups(model.trainable_modules()), lr=1e-4, weight_decay=0.04,
                            **adamw_kwargs(device))
    torch._dynamo.reset()
    compile_mode = {"compile": "default", "max-autotune": "max-autotune-no-cudagraphs",
                    "cudagraphs": "max-autotune"}.get(mode)
    net = model if compile_mode is None else torch.compile(model, mode=compile_mode, dynamic=False)

    def step(batch):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = net(batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.update_target(0.996)
        return loss

    t0 = time.perf_counter()
    for b in data:  # warm-up: every bucket compiles here
        step(b)
    benchmark.sync(device)
    warm_s = time.perf_counter() - t0
    from torch._dynamo.utils import counters

    graphs = int(counters["stats"].get("unique_graphs", 0))
    times, syncs = [], 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            for i in range(args.steps):
                t = time.perf_counter()
                step(data[i % len(data)])
                if device.type == "cuda":
                    torch.cuda.synchronize()  # outside the step: not counted as the step's sync
                times.append(time.perf_counter() - t)
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode(0)
        syncs = sum("synchroniz" in str(w.message).lower() for w in caught)
    ms = 1e3 * statistics.median(times)
    row = {"mode": mode, "ms": ms, "samples_s": args.batch / (ms / 1e3), "warmup_s": warm_s, "graphs": graphs,
           "host_syncs_per_step": syncs / max(args.steps, 1),
           "lengths": sorted({(b["masks_enc"][0].shape[1], b["masks_pred"][0].shape[1]) for b in data})}
    if device.type == "cuda":
        from torch.utils.flop_counter import FlopCounterMode

        eager_model = model
        with FlopCounterMode(display=False) as fc:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = eager_model(data[0])["loss"]
            loss.backward()
        opt.zero_grad(set_to_none=True)
        peak = next((v for k, v in benchmark.PEAK_BF16_FLOPS.items() if k in torch.cuda.get_device_name(0)), None)
        row["mfu"] = fc.get_total_flops() / (ms / 1e3) / peak if peak else None
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", default="large", choices=sorted(SIZES))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--buckets", type=int, default=4)
    ap.add_argument("--batches", type=int, default=8, help="pre-drawn batches, cycled (their lengths vary)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--quick", action="store_true", help="tiny model, few steps (CPU check of the script)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.batches, args.steps = 4, 3, 3
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else None
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
    if device.type != "cuda":
        modes = [m for m in modes if m != "cudagraphs"]
    rows = [run_mode(m, args, device, dtype) for m in modes]
    base = rows[0]["ms"]
    lines = ["| mode | ms/step | samples/s | vs first | MFU | peak GiB | warm-up s | graphs | host syncs/step | (ctx, tgt) lengths |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f} %" if r.get("mfu") else "-"
        peak = f"{r['peak_gib']:.1f}" if r.get("peak_gib") is not None else "-"
        lines.append(f"| {r['mode']} | {r['ms']:.1f} | {r['samples_s']:.0f} | {base / r['ms']:.2f}x | {mfu} | {peak} | "
                     f"{r['warmup_s']:.1f} | {r['graphs']} | {r['host_syncs_per_step']:.1f} | {r['lengths']} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        cmd = "python benchmarks/compile_buckets.py " + " ".join(argv if argv is not None else sys.argv[1:])
        section = (f"\n## Compiled steps with mask buckets: I-JEPA {args.size}, batch {args.batch}\n\n"
                   f"Machine: {benchmark.machine(device)}. Command: `{cmd}`.\n\n{table}\n")
        with open(ROOT / "BENCHMARKS.md", "a") as f:
            f.write(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
