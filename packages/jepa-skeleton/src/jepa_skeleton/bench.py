"""S-JEPA ``jepa bench`` cases (entry point ``jepa.bench``: ``skeleton = "jepa_skeleton.bench:CASES"``).

``masks``: the collator (Gumbel noise and view parameters for the global batch) plus the
motion-aware masks and the MAP view computed from them, as one training step makes them;
``steps``: the S-JEPA training step (forward, backward, AdamW, EMA) at the MAMP size (8 x 256,
predictor 3 x 256, 120 frames, 25 joints, 2 persons) and a small one. No official code exists to
compare with.
"""

from __future__ import annotations

import torch
from jepa_core import benchmark as bm

# size -> (encoder depth, width, heads, predictor depth, frames, batch); "mamp" is the NTU-60 preset's model
SIZES = {
    "tiny": (2, 64, 4, 1, 32, 8),
    "small": (4, 128, 4, 2, 64, 8),
    "base": (8, 256, 8, 3, 120, 32),
    "large": (8, 256, 8, 5, 120, 32),
}


def build_model(size: str):
    """``(model, config)`` of S-JEPA at a benchmark size (``base``: the NTU-60 preset's model,
    ``large``: NTU-120's predictor depth 5), seeded."""
    from jepa_skeleton.sjepa import SJEPAConfig
    from jepa_skeleton.sjepa import build_model as build

    depth, width, heads, pdepth, frames, _ = SIZES[size]
    cfg = SJEPAConfig()
    m = cfg.model
    m.depth, m.embed_dim, m.num_heads, m.pred_depth, m.pred_dim, m.pred_num_heads = depth, width, heads, pdepth, width, heads
    cfg.data.window = frames
    torch.manual_seed(0)
    return build(cfg), cfg


def make_batch(size: str, ctx: bm.Context, seed: int = 0) -> dict:
    """Random 2-person skeleton sequences and their collated draws, on ``ctx.device``."""
    from jepa_skeleton.sjepa import train_collate

    _, cfg = build_model(size)
    *_, frames, batch = SIZES[size]
    x = torch.randn(batch, 3, frames, 25, 2, generator=torch.Generator().manual_seed(seed))
    out = train_collate(cfg)([(s, 0) for s in x])
    return {k: v.to(ctx.device) for k, v in out.items() if k not in ("labels", "num_bad")}


def case_masks(ctx: bm.Context) -> list[bm.Row]:
    from jepa_skeleton.masking import motion_aware_masks
    from jepa_skeleton.sjepa import SJEPAConfig, train_collate

    rows, batch = [], 32
    cfg = SJEPAConfig()
    collate = train_collate(cfg)
    samples = [(s, 0) for s in torch.randn(batch, 3, 120, 25, 2, generator=torch.Generator().manual_seed(0))]

    def draw():
        out = collate(samples)
        return motion_aware_masks(out["skeletons"], out["gumbel"], 0.9, 0.8)

    with bm.single_thread():
        t, _ = bm.interleaved([draw], ctx.warmup, ctx.repeats * 2)
    rows.append(bm.Row(f"S-JEPA collate + motion-aware masks (90 %), batch {batch} x 2 persons, 120 frames "
                       "(750 tokens each)", t[0]))
    return rows


def case_steps(ctx: bm.Context) -> list[bm.Row]:
    prec = "fp32" if ctx.dtype is None else str(ctx.dtype).replace("torch.", "")
    rows = []
    for size in ctx.sizes:
        if size not in SIZES or not ctx.wants("sjepa"):
            continue
        depth, width, _, pdepth, frames, b = SIZES[size]
        model, _ = build_model(size)
        model.to(ctx.device).train()
        batch = make_batch(size, ctx)
        rows.append(bm.step_row(ctx, f"S-JEPA train step, {depth}x{width}, pred {pdepth}x{width}, {frames} frames "
                                f"x 25 joints x 2 persons, batch {b}, {prec}", [bm.train_step(model, batch, ctx)], b))
    return rows


CASES = [bm.BenchCase("masks", case_masks), bm.BenchCase("steps", case_steps)]
