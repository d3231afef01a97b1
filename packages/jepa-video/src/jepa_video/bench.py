"""V-JEPA and V-JEPA 2 ``jepa bench`` cases (entry point ``jepa.bench``:
``video = "jepa_video.bench:CASES"``).

``masks``: the 3-D multi-block collator; ``steps``: the training steps; ``data``: clip decoding
per installed backend, on the demo mp4 and on an MPEG-4 Part 2 AVI with B-frames (where decord
must read sequentially to be exact); ``accuracy`` (not default): every backend on every
generated failure case of :mod:`jepa_video.testvideos`, against a sequential decode;
``ckpt`` (not default): activation checkpointing against the plain step. ``mcjepa``: MC-JEPA's
training step (flow losses on frame pairs and VICReg on two views of stills) of the ``demo``
and ``convnext_t`` presets at :data:`MCJEPA_SIZES`.
With official adapters in ``ctx.official["jepa"]`` / ``["vjepa2"]`` (benchmarks/official.py,
repository only) the masks and steps cases time the official code beside ours.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import torch
from jepa_core import benchmark as bm

if TYPE_CHECKING:
    from jepa_video.mcjepa import MCJEPAConfig

# size -> (encoder, frame px, frames, batch, predictor width, predictor depth); tiny and small
# fit a CPU run, base and large are for GPUs (benchmarks/gpu_suite.sh)
SIZES = {
    "tiny": ("vit_tiny", 112, 16, 4, 96, 6),
    "small": ("vit_small", 112, 16, 2, 192, 6),
    "base": ("vit_base", 224, 16, 8, 384, 6),
    "large": ("vit_large", 224, 16, 8, 384, 12),
}
METHODS = {"vjepa": ("V-JEPA", "jepa"), "vjepa2": ("V-JEPA 2", "vjepa2")}  # label, upstream repo


# size -> (frame px, batch) per MC-JEPA preset: frame pairs and as many stills per step
MCJEPA_SIZES = {
    "tiny": {"demo": (64, 8), "convnext_t": (64, 2)},
    "small": {"demo": (128, 16), "convnext_t": (128, 4)},
    "base": {"demo": (256, 32), "convnext_t": (256, 16)},
    "large": {"demo": (256, 64), "convnext_t": (256, 32)},
}


def build_model(method: str, size: str, packed: bool = True):
    """``(model, config)`` of V-JEPA (``"vjepa"``) or V-JEPA 2 (``"vjepa2"``) at a benchmark size."""
    from jepa_video.vjepa import VJEPA2Config, VJEPAConfig
    from jepa_video.vjepa import build_model as build

    enc, img, frames, _, pdim, pdepth = SIZES[size]
    cfg = VJEPA2Config() if method == "vjepa2" else VJEPAConfig()
    m, d = cfg.model, cfg.data
    m.encoder, m.pred_emb_dim, m.pred_depth = enc, pdim, pdepth
    m.pred_num_heads = None  # the encoder's heads (head_dim 32 for RoPE at both sizes)
    m.activation_checkpointing = False  # off on both sides (a memory/speed trade, not a hot path)
    m.packed_context = packed
    d.crop_size, d.frames_per_clip = img, frames
    torch.manual_seed(0)
    return build(cfg), cfg


def make_batch(size: str, ctx: bm.Context, seed: int = 0) -> dict:
    """Random clips and the released two mask configurations, on ``ctx.device``."""
    from jepa_video.masks import VJEPA_MASK_CONFIGS, MultiBlock3DMaskCollator

    _, img, frames, batch, _, _ = SIZES[size]
    clips = torch.randn(batch, 3, frames, img, img, generator=torch.Generator().manual_seed(seed))
    out = MultiBlock3DMaskCollator(VJEPA_MASK_CONFIGS, img, frames, 16, 2, seed=seed)([(x, 0) for x in clips])
    return {"videos": clips.to(ctx.device), "masks_enc": [m.to(ctx.device) for m in out["masks_enc"]],
            "masks_pred": [m.to(ctx.device) for m in out["masks_pred"]]}


def case_masks(ctx: bm.Context) -> list[bm.Row]:
    from jepa_video.masks import VJEPA_MASK_CONFIGS, MultiBlock3DMaskCollator

    rows, batch = [], 24
    for label, img, key in (("V-JEPA", 224, "jepa"), ("V-JEPA 2", 256, "vjepa2")):
        ours = MultiBlock3DMaskCollator(VJEPA_MASK_CONFIGS, img, 16, 16, 2)
        samples = [(torch.zeros(1), 0) for _ in range(batch)]
        # Callable[..., object]: mypy cannot infer a lambda with defaults against Callable[[], object]
        fns: list[Callable[..., object]] = [lambda ours=ours, samples=samples: ours(samples)]
        if ctx.official.get(key):
            theirs = ctx.official[key].mask_collator(img)
            # vjepa2:src/masks/multiseq_multiblock3d.py reads each sample's frame indices
            ts = [(torch.zeros(1), 0, [list(range(16))]) for _ in range(batch)] if key == "vjepa2" else samples
            fns.append(lambda theirs=theirs, ts=ts: theirs(ts))
        with bm.single_thread():
            t, speed = bm.interleaved(fns, ctx.warmup, ctx.repeats * 2)
        g = img // 16
        rows.append(bm.Row(f"{label} 3-D multi-block masks (8x0.15 + 2x0.7), batch {batch}, 16 frames {img} px "
                           f"(8x{g}x{g})", t[0], t[1] if len(t) > 1 else None, speedup=speed))
    return rows


def case_steps(ctx: bm.Context) -> list[bm.Row]:
    prec = "fp32" if ctx.dtype is None else str(ctx.dtype).replace("torch.", "")
    rows = []
    for size in ctx.sizes:
        for method, (label, key) in METHODS.items():
            if not ctx.wants(method):
                continue
            enc, img, frames, b, pdim, pdepth = SIZES[size]
            model, _ = build_model(method, size)
            model.to(ctx.device).train()
            batch = make_batch(size, ctx)
            # the official model is built first, from our weights (identical start)
            theirs = ctx.official[key].step(model, batch, ctx) if ctx.official.get(key) else None
            steps = [bm.train_step(model, batch, ctx)] + ([theirs.step] if theirs else [])
            rows.append(bm.step_row(ctx, f"{label} train step, {enc} {frames}f {img} px, pred {pdim}x{pdepth}, "
                                    f"batch {b}, {prec}", steps, b))
    return rows


def case_ckpt(ctx: bm.Context) -> list[bm.Row]:
    """Activation checkpointing against the plain step, ours only, at the largest size asked for
    (the official V-JEPA has no such option; V-JEPA 2's is the same per-block checkpoint)."""
    from jepa_core.nn import enable_activation_checkpointing

    size, rows = ctx.sizes[-1], []
    for method in METHODS:
        if not ctx.wants(method):
            continue
        model, _ = build_model(method, size)
        model.to(ctx.device).train()
        plain = copy.deepcopy(model)
        enable_activation_checkpointing(model.encoder.blocks)
        enable_activation_checkpointing(model.predictor.predictor_blocks)
        batch, n = make_batch(size, ctx), SIZES[size][3]
        row = bm.step_row(ctx, f"{method} {size}: activation checkpointing (ours) vs without (official column: "
                          f"ours plain)", [bm.train_step(m, batch, ctx) for m in (model, plain)], n)
        row.note = f"{n / row.ours:.1f} samples/s with, {n / row.theirs:.1f} without"
        rows.append(row)
        del model, plain, batch
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def case_data(ctx: bm.Context) -> list[bm.Row]:
    import tempfile
    from pathlib import Path

    from jepa_video.datasets import VideoIndex
    from jepa_video.decoders import available_backends
    from jepa_video.demo_data import make_demo_videos
    from jepa_video.sampling import ClipSampler
    from jepa_video.transforms import VideoTrainTransform

    if not any(ctx.wants(m) for m in (*METHODS, "mcjepa")):  # the video methods' clip loading
        return []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        index = make_demo_videos(Path(tmp) / "clips", 16, frames=48, size=64, seed=0)
        index = index if index.is_file() else Path(tmp) / "clips" / "index.csv"
        avi = make_demo_videos(Path(tmp) / "avi", 16, frames=96, size=64, speeds=(0.5,), seed=0)
        avi_index = Path(tmp) / "avi" / "index_avi.csv"
        _mpeg4_avi_copies(avi, avi_index)
        sets = [("16 of 48 frames (step 2), 64 px mp4", index, 2),
                ("16 of 96 frames (step 4), 64 px MPEG-4 AVI with B-frames", avi_index, 4)]
        for label, idx_file, step in sets:
            for backend in available_backends():
                ds = VideoIndex(idx_file, sampler=ClipSampler(frames_per_clip=16, frame_step=step), backend=backend,
                                transform=VideoTrainTransform(64))
                idx = iter(range(10**9))
                fns: list[Callable[..., object]] = [lambda ds=ds, idx=idx: ds[next(idx) % len(ds)]]
                t = bm.interleaved(fns, 2, ctx.repeats * 2)[0][0]
                rows.append(bm.Row(f"video clip: {label}, crop + flip, {backend}", t, note=f"{1 / t:.0f} clips/s"))
    return rows


def _mpeg4_avi_copies(index, out_index) -> None:
    """Rewrite the demo clips of ``index`` as MPEG-4 Part 2 in AVI with 2 B-frames (the
    combination decord seeks wrongly in), listed in ``out_index``."""
    import av
    import numpy as np

    from jepa_video.datasets import read_index, write_index

    rows = []
    for path, label in read_index(index):
        with av.open(path) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        dst = path.rsplit(".", 1)[0] + ".avi"
        with av.open(dst, "w", format="avi") as out:
            s = out.add_stream("mpeg4", rate=24)
            s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
            s.gop_size = 250
            s.codec_context.thread_count = 1
            s.codec_context.options = {"bf": "2", "qscale": "3"}
            for f in frames:
                for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f, np.uint8), format="rgb24")):
                    out.mux(p)
            for p in s.encode():
                out.mux(p)
        rows.append((dst, label))
    write_index(out_index, rows)


def case_accuracy(ctx: bm.Context) -> list[bm.Row]:
    """Each installed backend on each generated failure case: the time to open the file and
    read every frame, and whether the frames equal a sequential decode."""
    import tempfile

    from jepa_video.decoders import available_backends
    from jepa_video.testvideos import accuracy_table, make_cases

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        table = accuracy_table(make_cases(tmp), available_backends())
    for backend, results in table.items():
        exact = [c for c, r in results.items() if r.startswith("exact")]
        rows.append(bm.Row(f"frame accuracy, {backend}: exact on {len(exact)} of {len(results)} generated cases", 0.0,
                           note="; ".join(f"{c}: {r}" for c, r in results.items() if not r.startswith("exact"))))
    return rows


def build_mcjepa(preset: str, size: str, ctx: bm.Context, seed: int = 0):
    """``(model, batch)`` of MC-JEPA's ``preset`` at a benchmark size: random frames in [0, 1]
    on ``ctx.device``, the flow losses on (``epoch`` past ``loss.flow_start_epoch``)."""
    from jepa_core import registry

    img, b = MCJEPA_SIZES[size][preset]
    cfg = cast("MCJEPAConfig", registry.get_method("mcjepa").load_config(preset, overrides=[f"data.image_size={img}"]))
    torch.manual_seed(seed)
    from jepa_video.mcjepa import build_model as build

    model = build(cfg).to(ctx.device).train()
    g = torch.Generator().manual_seed(seed)
    batch = {"pairs": torch.rand(b, 2, 3, img, img, generator=g).to(ctx.device),
             "views": torch.rand(b, 2, 3, img, img, generator=g).to(ctx.device),
             "epoch": cfg.loss.flow_start_epoch}
    return model, batch, cfg


def case_mcjepa(ctx: bm.Context) -> list[bm.Row]:
    """MC-JEPA train steps (ours only: no official code was released)."""
    if not ctx.wants("mcjepa"):
        return []
    prec = "fp32" if ctx.dtype is None else str(ctx.dtype).replace("torch.", "")
    rows = []
    for size in ctx.sizes:
        for preset in MCJEPA_SIZES[size]:
            model, batch, cfg = build_mcjepa(preset, size, ctx)
            img, b = MCJEPA_SIZES[size][preset]
            m = cfg.model
            enc = "ConvNeXt-T 6 levels" if m.encoder == "convnext_t" else f"conv {len(m.channels)} levels"
            rows.append(bm.step_row(ctx, f"MC-JEPA train step ({preset}), {enc}, expander "
                                    f"{'x'.join(map(str, m.expander))}, {b} pairs + {b} stills {img} px, {prec}",
                                    [bm.train_step(model, batch, ctx)], b))
            del model, batch
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


CASES = [bm.BenchCase("masks", case_masks), bm.BenchCase("steps", case_steps), bm.BenchCase("data", case_data),
         bm.BenchCase("accuracy", case_accuracy, default=False), bm.BenchCase("ckpt", case_ckpt, default=False), bm.BenchCase("mcjepa", case_mcjepa)]
