"""I-JEPA's ``jepa bench`` cases (entry point ``jepa.bench``: ``ijepa = "jepa_image.bench:CASES"``).

``masks``: the multi-block collator; ``steps``: the training step; ``ema``: the EMA update of a
ViT-Small; ``data``: an image batch; ``ckpt`` (not default): activation checkpointing against
the plain step. With an official adapter in ``ctx.official["ijepa"]`` (benchmarks/official.py,
repository only) the masks and steps cases time the official code beside ours.

``DMT_CASES`` (entry point ``dmtjepa``) adds to ``steps`` the DMT-JEPA step against I-JEPA's
and the target side alone (``jepa bench --cases steps --methods dmtjepa``); ``IWM_CASES`` (``iwm``)
the IWM step against I-JEPA's and its paired-view collator (``--methods iwm``).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Literal

import torch
from jepa_core.benchmark import (
    BenchCase,
    Context,
    Row,
    interleaved,
    single_thread,
    step_row,
    train_step,
)

# size -> (encoder, image px, batch, predictor width, predictor depth); tiny and small fit a
# CPU run, base and large are for GPUs (benchmarks/gpu_suite.sh)
SIZES = {
    "tiny": ("vit_tiny", 224, 16, 96, 6),
    "small": ("vit_small", 224, 8, 192, 6),
    "base": ("vit_base", 224, 64, 384, 6),
    "large": ("vit_large", 224, 32, 384, 12),
}


def build_model(size: str):
    """``(model, config)`` of I-JEPA at a benchmark size, seeded."""
    from jepa_image.ijepa import IJEPAConfig
    from jepa_image.ijepa import build_model as build

    enc, img, _, pdim, pdepth = SIZES[size]
    cfg = IJEPAConfig()
    cfg.model.encoder, cfg.model.patch_size, cfg.data.image_size = enc, 16, img
    cfg.model.pred_emb_dim, cfg.model.pred_depth = pdim, pdepth
    torch.manual_seed(0)
    return build(cfg), cfg


def make_batch(size: str, ctx: Context, seed: int = 0) -> dict:
    """Random images and multi-block masks of a benchmark size, on ``ctx.device``."""
    from jepa_core.masks import MultiBlockMaskCollator, MultiBlockMaskConfig

    _, img, batch, _, _ = SIZES[size]
    images = torch.randn(batch, 3, img, img, generator=torch.Generator().manual_seed(seed))
    out = MultiBlockMaskCollator(MultiBlockMaskConfig(), img, 16, seed=seed)([(x, 0) for x in images])
    return {"images": images.to(ctx.device), "masks_enc": [m.to(ctx.device) for m in out["masks_enc"]],
            "masks_pred": [m.to(ctx.device) for m in out["masks_pred"]]}


def case_masks(ctx: Context) -> list[Row]:
    from jepa_core.masks import MultiBlockMaskCollator, MultiBlockMaskConfig

    batch, img, patch = 128, 224, 16
    samples = [(torch.zeros(1), 0) for _ in range(batch)]  # collation: mask sampling + a trivial collate
    ours = MultiBlockMaskCollator(MultiBlockMaskConfig(), img, patch)
    fns: list[Callable[[], object]] = [lambda: ours(samples)]
    if ctx.official.get("ijepa"):
        theirs = ctx.official["ijepa"].mask_collator(img, patch)
        fns.append(lambda: theirs(samples))
    with single_thread():
        t, speed = interleaved(fns, ctx.warmup, ctx.repeats * 2)
    return [Row(f"I-JEPA multi-block masks (1 ctx + 4 targets), batch {batch}, 14x14 grid",
                t[0], t[1] if len(t) > 1 else None, speedup=speed)]


def _precision(ctx: Context) -> str:
    return "fp32" if ctx.dtype is None else str(ctx.dtype).replace("torch.", "")


def case_steps(ctx: Context) -> list[Row]:
    if not ctx.wants("ijepa"):
        return []
    rows = []
    for size in ctx.sizes:
        enc, img, b, pdim, pdepth = SIZES[size]
        model, _ = build_model(size)
        model.to(ctx.device).train()
        batch = make_batch(size, ctx)
        # the official model is built first, from our weights (identical start)
        theirs = ctx.official["ijepa"].step(model, batch, ctx) if ctx.official.get("ijepa") else None
        steps = [train_step(model, batch, ctx)] + ([theirs.step] if theirs else [])
        rows.append(step_row(ctx, f"I-JEPA train step, {enc} {img} px/16, pred {pdim}x{pdepth}, batch {b}, "
                             f"{_precision(ctx)}", steps, b))
    return rows


def case_ckpt(ctx: Context) -> list[Row]:
    """Activation checkpointing against the plain step, ours only, at the largest size asked for
    (the official I-JEPA has no such option)."""
    from jepa_core.nn import enable_activation_checkpointing

    if not ctx.wants("ijepa"):
        return []
    size = ctx.sizes[-1]
    model, _ = build_model(size)
    model.to(ctx.device).train()
    plain = copy.deepcopy(model)
    enable_activation_checkpointing(model.encoder.blocks)
    enable_activation_checkpointing(model.predictor.predictor_blocks)
    batch, n = make_batch(size, ctx), SIZES[size][2]
    row = step_row(ctx, f"ijepa {size}: activation checkpointing (ours) vs without (official column: ours plain)",
                   [train_step(m, batch, ctx) for m in (model, plain)], n)
    row.note = f"{n / row.ours:.1f} samples/s with, {n / row.theirs:.1f} without"
    return [row]


def case_ema(ctx: Context) -> list[Row]:
    from jepa_core.nn import vit
    from jepa_core.target import EMATarget

    enc = vit("vit_small").to(ctx.device)
    tgt, ref = EMATarget(enc), copy.deepcopy(enc)

    def official_loop():  # ijepa:src/train.py and jepa:app/vjepa/train.py, one pair at a time
        with torch.no_grad():
            for q, k in zip(enc.parameters(), ref.parameters()):
                k.data.mul_(0.996).add_((1.0 - 0.996) * q.detach().data)

    t, speed = interleaved([lambda: tgt.update(enc, 0.996), official_loop], ctx.warmup, ctx.repeats * 4, ctx.device)
    n = sum(p.numel() for p in enc.parameters()) / 1e6
    return [Row(f"EMA update alone, ViT-Small encoder ({n:.1f} M params); theirs: the I-JEPA/V-JEPA loop",
                t[0], t[1], speedup=speed)]


def case_data(ctx: Context) -> list[Row]:
    from jepa_image.ijepa import IJEPAConfig, build_train_data

    if not ctx.wants("ijepa"):  # I-JEPA's loader and mask collator
        return []

    cfg = IJEPAConfig()
    cfg.data.dataset, cfg.data.image_size, cfg.model.patch_size = "fashion_mnist_demo", 28, 4
    cfg.mask.min_keep = 4
    ds, collate = build_train_data(cfg)
    b, idx = 128, iter(range(10**9))
    t = interleaved([lambda: collate([ds[next(idx) % len(ds)] for _ in range(b)])], 1, ctx.repeats)[0][0]
    return [Row(f"image batch: {b} Fashion-MNIST samples + batched crop + masks (28 px)", t,
                note=f"{b / t:.0f} images/s")]


CASES = [BenchCase("masks", case_masks), BenchCase("steps", case_steps), BenchCase("ema", case_ema),
         BenchCase("data", case_data), BenchCase("ckpt", case_ckpt, default=False)]


# ---------------------------------------------------------------------------------------------
# DMT-JEPA (entry point ``jepa.bench``: ``dmtjepa = "jepa_image.bench:DMT_CASES"``): its step
# beside I-JEPA's, both ours, from the same encoder and predictor weights and the same batch.


def build_dmt_model(size: str, ijepa_model=None):
    """DMT-JEPA at a benchmark size (paper defaults), seeded; with ``ijepa_model``, its encoder,
    predictor and EMA target start from that model's weights."""
    from jepa_image.dmtjepa import DMTJEPAConfig
    from jepa_image.dmtjepa import build_model as build

    enc, img, _, pdim, pdepth = SIZES[size]
    cfg = DMTJEPAConfig()
    cfg.model.encoder, cfg.model.patch_size, cfg.data.image_size = enc, 16, img
    cfg.model.pred_emb_dim, cfg.model.pred_depth = pdim, pdepth
    torch.manual_seed(0)
    model = build(cfg)
    if ijepa_model is not None:
        for name in ("encoder", "predictor", "target_encoder"):
            getattr(model, name).load_state_dict(getattr(ijepa_model, name).state_dict())
    return model, cfg


def case_dmt_steps(ctx: Context) -> list[Row]:
    """The DMT-JEPA training step against I-JEPA's (the "official" column holds I-JEPA's step),
    and the target forward alone (EMA encoder + EMA head against the EMA encoder), where the
    head's cost falls (about 40 D^2 per token against about 12 x 12 D^2 for a ViT-B forward)."""
    if not ctx.wants("dmtjepa"):
        return []
    rows = []
    for size in ctx.sizes:
        enc, img, b, pdim, pdepth = SIZES[size]
        ijepa_model, _ = build_model(size)
        model, _ = build_dmt_model(size, ijepa_model)
        for m in (ijepa_model, model):
            m.to(ctx.device).train()
        batch = make_batch(size, ctx)
        row = step_row(ctx, f"DMT-JEPA train step vs I-JEPA (official column: I-JEPA, ours), {enc} {img} px/16, "
                       f"pred {pdim}x{pdepth}, batch {b}, {_precision(ctx)}",
                       [train_step(model, batch, ctx), train_step(ijepa_model, batch, ctx)], b)
        row.note += f"; DMT-JEPA step overhead {1 / row.speedup - 1:+.1%} (median of per-round ratios)"
        rows.append(row)

        t, speed = interleaved([_targets_fn(m, batch, ctx) for m in (model, ijepa_model)], ctx.warmup, ctx.repeats,
                               ctx.device)
        rows.append(Row(f"DMT-JEPA targets vs I-JEPA targets (no grad), {enc} {img} px/16, batch {b}", t[0], t[1],
                        note=f"target-side overhead {1 / speed - 1:+.1%}", speedup=speed))
    return rows


def _targets_fn(model, batch: dict, ctx: Context):
    """The target side of a step alone (no gradients), as the Trainer runs it."""
    def run():
        with torch.no_grad(), torch.autocast(ctx.device.type, dtype=ctx.dtype, enabled=ctx.dtype is not None):
            return model.targets(batch["images"], batch["masks_pred"], len(batch["masks_enc"]))
    return run


DMT_CASES = [BenchCase("steps", case_dmt_steps)]


# ---------------------------------------------------------------------------------------------
# IWM (entry point ``jepa.bench``: ``iwm = "jepa_image.bench:IWM_CASES"``): its step beside
# I-JEPA's at the same size, and the paired views with their action, per batch.


def build_iwm_model(size: str, conditioning: Literal["feature", "sequence", "none"] = "feature"):
    """IWM at a benchmark size (the paper's views and masks), seeded."""
    from jepa_image.iwm import IWMConfig
    from jepa_image.iwm import build_model as build

    enc, img, _, pdim, pdepth = SIZES[size]
    cfg = IWMConfig()
    cfg.model.encoder, cfg.model.patch_size, cfg.data.image_size = enc, 16, img
    cfg.model.pred_emb_dim, cfg.model.pred_depth, cfg.model.conditioning = pdim, pdepth, conditioning
    torch.manual_seed(0)
    return build(cfg), cfg


def make_iwm_batch(size: str, cfg, ctx: Context, seed: int = 0) -> dict:
    """Random uint8 images through IWM's collator (crop, paired views, action, masks), on ``ctx.device``."""
    from jepa_image.iwm import train_collate

    cfg.data.dataset = "fashion_mnist_demo"  # in memory: the collator makes the crop too
    _, img, batch, _, _ = SIZES[size]
    images = torch.randint(0, 256, (batch, 3, img, img), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(seed))
    out = train_collate(cfg)([(x, 0) for x in images])
    return {k: (v.to(ctx.device) if isinstance(v, torch.Tensor) else [m.to(ctx.device) for m in v])
            for k, v in out.items() if k in ("images", "target_images", "action", "masks_enc", "masks_pred")}


def case_iwm_steps(ctx: Context) -> list[Row]:
    """The IWM training step (feature conditioning; the predictor predicts the union of the
    masked blocks once, where I-JEPA's predicts each of its 4 blocks) against I-JEPA's at the
    same encoder and predictor size (the "official" column holds I-JEPA's step)."""
    if not ctx.wants("iwm"):
        return []
    rows = []
    for size in ctx.sizes:
        enc, img, b, pdim, pdepth = SIZES[size]
        ijepa_model, _ = build_model(size)
        model, cfg = build_iwm_model(size)
        for m in (ijepa_model, model):
            m.to(ctx.device).train()
        row = step_row(ctx, f"IWM train step vs I-JEPA (official column: I-JEPA, ours), {enc} {img} px/16, "
                       f"pred {pdim}x{pdepth}, feature conditioning, batch {b}, {_precision(ctx)}",
                       [train_step(model, make_iwm_batch(size, cfg, ctx), ctx),
                        train_step(ijepa_model, make_batch(size, ctx), ctx)], b)
        rows.append(row)
    return rows


def case_iwm_views(ctx: Context) -> list[Row]:
    """IWM's collator on a uint8 batch: crop and flip, two colour-jittered views, the source's
    grayscale, blur and solarisation, the action and the masks (what a data-loader worker does
    per batch)."""
    if not ctx.wants("iwm"):
        return []
    from jepa_image.iwm import train_collate

    rows = []
    for size in ctx.sizes:
        _, img, batch, _, _ = SIZES[size]
        _, cfg = build_iwm_model(size)
        cfg.data.dataset = "fashion_mnist_demo"
        collate = train_collate(cfg)
        samples = [(x, 0) for x in torch.randint(0, 256, (batch, 3, img, img), dtype=torch.uint8)]
        with single_thread():
            t, _ = interleaved([functools.partial(collate, samples)], ctx.warmup, ctx.repeats, torch.device("cpu"))
        rows.append(Row(f"IWM paired views + masks, {batch} images {img} px, 1 thread", t[0],
                        note=f"{batch / t[0]:.0f} images/s"))
    return rows


IWM_CASES = [BenchCase("steps", case_iwm_steps), BenchCase("data", case_iwm_views)]
