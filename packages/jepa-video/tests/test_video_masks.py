"""V-JEPA 3-D multi-block masks (jepa:src/masks/multiblock3d.py, vjepa2:src/masks/multiseq_multiblock3d.py)."""

from __future__ import annotations

import math

import pytest
import torch
from jepa_core.data import Stamped
from jepa_core.masks import MaskCollator, StepSeeds
from jepa_core.testing import tensor_digest
from jepa_video.masks import (
    VJEPA_MASK_CONFIGS,
    MultiBlock3DMaskCollator,
    MultiBlock3DMaskConfig,
    MultiBlock3DMaskGenerator,
    MultiBlock3DMaskSampler,
    draw_positions,
)

T, G = 8, 14  # 16 frames / tubelet 2, 224 px / 16
N = T * G * G  # 1568
BATCH = 24  # the official per-GPU batch


def _loop_union(gen: MultiBlock3DMaskGenerator, B: int, size, g: torch.Generator) -> torch.Tensor:
    """Independent per-sample loop (the official structure) drawing the same positions."""
    t, h, w = size
    nb = gen.cfg.num_blocks
    top, left, start = draw_positions(g, (B, nb), gen.H - h + 1, gen.W - w + 1, gen.T - t + 1)
    out = torch.zeros(B, gen.T, gen.H, gen.W, dtype=torch.bool)
    for b in range(B):
        for j in range(nb):
            s, tp, lf = int(start[b, j]), int(top[b, j]), int(left[b, j])
            out[b, s : s + t, tp : tp + h, lf : lf + w] = True
    out[:, gen.max_context_duration :] = True
    return out.flatten(1)


@pytest.fixture(scope="module")
def official_batches():
    """Per config: 12 batches of (size, union before truncation, enc, pred)."""
    out = []
    for cfg in VJEPA_MASK_CONFIGS:
        gen = MultiBlock3DMaskGenerator(cfg, T, G)
        rows = []
        for seed in range(12):
            g = torch.Generator().manual_seed(seed)
            size = gen.block_size(g)
            state = g.get_state()
            union = gen.sample_union(BATCH, size, g)
            g2 = torch.Generator()
            g2.set_state(state)
            enc, pred = gen.sample(BATCH, torch.Generator().manual_seed(seed))
            rows.append((size, union, enc, pred, g2))
        out.append((gen, rows))
    return out


def test_default_configs_are_the_released_ones():
    short, long_ = VJEPA_MASK_CONFIGS
    assert (short.num_blocks, short.spatial_scale) == (8, (0.15, 0.15))
    assert (long_.num_blocks, long_.spatial_scale) == (2, (0.7, 0.7))
    for c in VJEPA_MASK_CONFIGS:
        assert c.aspect_ratio == (0.75, 1.5) and c.temporal_scale == (1.0, 1.0)
        assert c.max_temporal_keep == 1.0 and c.max_keep is None


def test_union_equals_loop_over_blocks(official_batches):
    compared = 0
    for gen, rows in official_batches:
        for size, union, _, _, g2 in rows[:3]:
            ref = _loop_union(gen, BATCH, size, g2)
            if not ref.all(1).any():  # no resampling happened: the streams line up
                assert torch.equal(union, ref)
                compared += 1
    assert compared >= 4


def test_block_sizes_follow_independent_draws():
    # short range: k = int(196 * .15) = 29, h = round(sqrt(29 a)), w = round(sqrt(29 / a)), a in [.75, 1.5]
    # long range: k = 137, h, w clamped to 14 (the full extent is allowed)
    seen = [set(), set()]
    for i, cfg in enumerate(VJEPA_MASK_CONFIGS):
        gen = MultiBlock3DMaskGenerator(cfg, T, G)
        k = int(G * G * cfg.spatial_scale[0])
        for seed in range(300):
            t, h, w = gen.block_size(torch.Generator().manual_seed(seed))
            assert t == T  # temporal scale 1: full-time tubes
            a_lo, a_hi = cfg.aspect_ratio
            assert round(math.sqrt(k * a_lo)) <= h <= min(G, round(math.sqrt(k * a_hi)))
            assert min(G, round(math.sqrt(k / a_hi))) <= w <= min(G, round(math.sqrt(k / a_lo)))
            seen[i].add((h, w))
    assert (5, 6) in seen[0] and (7, 4) in seen[0]
    assert any(h == G for h, _ in seen[1])  # clamped to the full height


def test_context_is_complement_target_is_union(official_batches):
    for _, rows in official_batches:
        for _, union, enc, pred, _ in rows:
            ctx = ~union
            for b in range(BATCH):
                ctx_idx = ctx[b].nonzero().squeeze(1)
                tgt_idx = union[b].nonzero().squeeze(1)
                # truncation keeps the earliest raster indices
                assert torch.equal(enc[b], ctx_idx[: enc.shape[1]])
                assert torch.equal(pred[b], tgt_idx[: pred.shape[1]])
            # truncated to the batch minimum
            assert enc.shape[1] == int(ctx.sum(1).min())
            assert pred.shape[1] == int(union.sum(1).min())


def test_disjoint_sorted_never_empty(official_batches):
    for _, rows in official_batches:
        for _, union, enc, pred, _ in rows:
            assert enc.shape[1] >= 1 and pred.shape[1] >= 1
            assert (~union).any(1).all()
            assert (enc.diff(dim=1) > 0).all() and (pred.diff(dim=1) > 0).all()
            hit = torch.zeros(BATCH, N, dtype=torch.int64)
            hit.scatter_add_(1, enc, torch.ones_like(enc))
            hit.scatter_add_(1, pred, torch.ones_like(pred))
            assert hit.max() == 1


def test_full_time_tubes(official_batches):
    for _, rows in official_batches:
        for _, union, *_ in rows:
            u = union.view(BATCH, T, G, G)
            assert torch.equal(u, u[:, :1].expand_as(u))


def test_one_block_size_per_batch_and_inclusive_bounds():
    cfg = MultiBlock3DMaskConfig(spatial_scale=(0.1, 0.3), temporal_scale=(0.5, 0.5), num_blocks=1)
    gen = MultiBlock3DMaskGenerator(cfg, T, G)
    reach = {"last_row": False, "last_col": False, "last_t": False, "first_row": False}
    for seed in range(25):
        g = torch.Generator().manual_seed(seed)
        t, h, w = gen.block_size(g)
        u = gen.sample_union(32, (t, h, w), g).view(32, T, G, G)
        assert t == 4
        for b in range(32):
            ts, hs, ws = u[b].any(2).any(1), u[b].any(2).any(0), u[b].any(1).any(0)
            assert (int(ts.sum()), int(hs.sum()), int(ws.sum())) == (t, h, w)  # same size every sample
            assert int(u[b].sum()) == t * h * w  # one solid box
            reach["last_t"] |= bool(ts[-1])
            reach["last_row"] |= bool(hs[-1])
            reach["last_col"] |= bool(ws[-1])
            reach["first_row"] |= bool(hs[0])
    assert all(reach.values()), reach


def test_mask_amounts_match_official_simulation(official_batches):
    # simulated with jepa:src/masks/multiblock3d.py: short range ~63 % masked before truncation, context ~359,
    # target ~742;
    # long range context ~94, target ~1114 (per-GPU batch 24, 16 f @ 224).
    (short_gen, short), (long_gen, long_) = official_batches
    frac = sum(u.float().mean().item() for _, u, *_ in short) / len(short)
    assert 0.58 < frac < 0.68
    kc = sum(e.shape[1] for *_, e, _, _ in short) / len(short)
    kt = sum(p.shape[1] for *_, p, _ in short) / len(short)
    assert 280 < kc < 440 and 650 < kt < 850
    kc = sum(e.shape[1] for *_, e, _, _ in long_) / len(long_)
    kt = sum(p.shape[1] for *_, p, _ in long_) / len(long_)
    assert 50 < kc < 150 and 1030 < kt < 1200


def test_empty_context_is_redrawn():
    # 2x2 grid, blocks of 1x2 or 2x1; three of them often cover everything.
    cfg = MultiBlock3DMaskConfig(spatial_scale=(0.5, 0.5), aspect_ratio=(0.5, 2.0), num_blocks=3)
    gen = MultiBlock3DMaskGenerator(cfg, 1, 2)
    for seed in range(10):
        enc, pred = gen.sample(64, torch.Generator().manual_seed(seed))
        assert enc.shape[1] >= 1
        assert not bool((enc[:, :, None] == pred[:, None, :]).any())


def test_impossible_config_raises():
    cfg = MultiBlock3DMaskConfig(spatial_scale=(1.0, 1.0), aspect_ratio=(1.0, 1.0), num_blocks=1)
    with pytest.raises(ValueError):
        MultiBlock3DMaskGenerator(cfg, 2, 4).sample(2, torch.Generator().manual_seed(0))


def test_max_keep_and_max_temporal_keep():
    cfg = MultiBlock3DMaskConfig(num_blocks=2, max_temporal_keep=0.5, max_keep=50)
    gen = MultiBlock3DMaskGenerator(cfg, T, G)
    g = torch.Generator().manual_seed(0)
    u = gen.sample_union(8, gen.block_size(g), g).view(8, T, G, G)
    assert u[:, T // 2 :].all()  # time steps past max_temporal_keep never in the context
    enc, pred = gen.sample(8, torch.Generator().manual_seed(1))
    assert enc.shape[1] == 50
    assert (enc // (G * G) < T // 2).all()


def test_collator_output_and_step_stamps():
    videos = [(torch.full((3, 16, 32, 32), float(i)), i) for i in range(4)]
    col = MultiBlock3DMaskCollator(VJEPA_MASK_CONFIGS, 32, 16, 8, 2, seed=5)
    out = col([Stamped(v, 7) for v in videos])
    assert set(out) == {"videos", "labels", "masks_enc", "masks_pred", "num_bad"}
    assert out["videos"].shape == (4, 3, 16, 32, 32) and out["labels"].tolist() == [0, 1, 2, 3]
    assert len(out["masks_enc"]) == len(out["masks_pred"]) == 2
    for e, p in zip(out["masks_enc"], out["masks_pred"]):
        assert e.shape[0] == p.shape[0] == 4 and e.dtype == p.dtype == torch.int64
        assert int(max(e.max(), p.max())) < 8 * 4 * 4
    again = MultiBlock3DMaskCollator(VJEPA_MASK_CONFIGS, 32, 16, 8, 2, seed=5, input_key="inputs")
    out2 = again([Stamped(v, 7) for v in videos])
    assert "inputs" in out2
    for a, b in zip(out["masks_enc"] + out["masks_pred"], out2["masks_enc"] + out2["masks_pred"]):
        assert torch.equal(a, b)  # a pure function of (seed, rank, step)
    bad = col([Stamped(None, 3), Stamped(None, 3)])
    assert bad == {"skip": True, "num_bad": 2}


def test_collator_shared_size_draws_quirk():
    # Official: every config's generator is seeded with the same counter, so both configs of a
    # batch draw the same uniforms (jepa:src/masks/multiblock3d.py); share_size_draws=False decouples them.
    cfg = MultiBlock3DMaskConfig(spatial_scale=(0.1, 0.9), aspect_ratio=(0.5, 2.0), num_blocks=1)
    for share, expect_equal in ((True, True), (False, False)):
        col = MultiBlock3DMaskCollator([cfg, cfg], 224, 16, 16, 2, share_size_draws=share)
        equal = [
            col.masks(4, step)[1][0].shape == col.masks(4, step)[1][1].shape for step in range(10)
        ]
        assert all(equal) if expect_equal else not all(equal)


def test_draw_positions_uniform_over_inclusive_range():
    g = torch.Generator().manual_seed(0)
    top, left, start = draw_positions(g, (4000, 8), 9, 1, 3)
    assert top.shape == (4000, 8) and left.max() == 0
    for arr, n in ((top, 9), (start, 3)):
        freq = [(arr == v).mean() for v in range(n)]
        assert arr.min() == 0 and arr.max() == n - 1
        assert max(abs(f - 1 / n) for f in freq) < 0.1 / n  # 32,000 draws: within 10 % of uniform
    again = draw_positions(torch.Generator().manual_seed(0), (4000, 8), 9, 1, 3)
    assert all((a == b).all() for a, b in zip(again, (top, left, start)))  # seeded


def _noise(x, g):
    return x + torch.rand(x.shape, generator=g)


# sha256 (first 16 hex digits) of masks_enc + masks_pred + videos of
# MultiBlock3DMaskCollator(cfgs, 224, 16, 16, 2) on 4 stamped zero clips, recorded from the
# collator before it became a MaskCollator: key "3d/cfgs/seed/rank/step/share_size_draws/with_transform".
RECORDED_3D = {
    "3d/time/0/0/0/0/0": "142cb0b657aad78d", "3d/time/0/0/0/0/1": "ec1bf3aa7a422a8c",
    "3d/time/0/0/0/1/0": "765be65adfaa8de6", "3d/time/0/0/0/1/1": "8ef469f734274e9a",
    "3d/time/5/0/0/0/0": "4968facf60855ecc", "3d/time/5/0/0/0/1": "7b52ecc49d8f0c31",
    "3d/time/5/0/11/0/0": "d0df6f30643e1f9d", "3d/time/5/0/11/0/1": "c3f350422ce7556b",
    "3d/time/5/0/11/1/0": "67135ce1055723b2", "3d/time/5/0/11/1/1": "f76cd28d147c186b",
    "3d/time/5/2/11/0/0": "1469612b308e2531", "3d/time/5/2/11/0/1": "e5523cd1b5c3baca",
    "3d/time/5/2/11/1/0": "44f8adcc541fb8e8", "3d/time/5/2/11/1/1": "bd9eaa78922668b2",
    "3d/vjepa/0/0/0/0/0": "57b523970e169577", "3d/vjepa/0/0/0/0/1": "858e2a3e2e27d1a5",
    "3d/vjepa/0/0/0/1/0": "9c66870a09bd8d91", "3d/vjepa/0/0/0/1/1": "962dc1d3e79d721a",
    "3d/vjepa/5/0/0/0/0": "021a43d83ec621a1", "3d/vjepa/5/0/0/0/1": "05abeac224f0621a",
    "3d/vjepa/5/0/11/0/0": "ab93bb6ff3f23562", "3d/vjepa/5/0/11/0/1": "8f305ab2bc9ac510",
    "3d/vjepa/5/0/11/1/0": "ecf48f13f7c75015", "3d/vjepa/5/0/11/1/1": "8cc172691fe05635",
    "3d/vjepa/5/2/11/0/0": "e06cd1425804f84d", "3d/vjepa/5/2/11/0/1": "446013a82593a156",
    "3d/vjepa/5/2/11/1/0": "e06cd1425804f84d", "3d/vjepa/5/2/11/1/1": "446013a82593a156",
}
RECORDED_CFGS = {
    "vjepa": VJEPA_MASK_CONFIGS,
    # a time cut, temporal blocks (not tiled), max_keep, and a second config with other sizes
    "time": (MultiBlock3DMaskConfig(spatial_scale=(0.1, 0.3), temporal_scale=(0.3, 0.8), num_blocks=3,
                                    max_temporal_keep=0.5, max_keep=200),
             MultiBlock3DMaskConfig(spatial_scale=(0.2, 0.5), aspect_ratio=(0.5, 2.0), num_blocks=2)),
}


@pytest.mark.parametrize("key", sorted(RECORDED_3D))
def test_collator_masks_match_recorded(key):
    name, *nums = key.split("/")[1:]
    seed, rank, step, share, tf = map(int, nums)
    # The per-process scope reproduces the recordings (each rank drew its own batch then).
    col = MultiBlock3DMaskCollator(RECORDED_CFGS[name], 224, 16, 16, 2, seed=seed, rank=rank,
                                   share_size_draws=bool(share), batch_transform=_noise if tf else None,
                                   world_size=4, scope="process")
    o = col([Stamped((torch.zeros(3, 2, 2, 2), i), step) for i in range(4)])
    assert tensor_digest(o["masks_enc"] + o["masks_pred"] + [o["videos"]]) == RECORDED_3D[key]


def test_collator_is_the_generic_collator_with_the_3d_sampler():
    col = MultiBlock3DMaskCollator(VJEPA_MASK_CONFIGS, 224, 16, 16, 2, seed=5, rank=1, world_size=2, scope="process")
    assert isinstance(col, MaskCollator) and isinstance(col.sampler, MultiBlock3DMaskSampler)
    assert [(g.T, g.H, g.W) for g in col.generators] == [(8, 14, 14)] * 2
    assert col.share_size_draws and col.input_key == "videos"
    sampler = MultiBlock3DMaskSampler(VJEPA_MASK_CONFIGS, 8, 14)
    generic = MaskCollator(sampler, seed=5, rank=1, input_key="videos", world_size=2, scope="process")
    clips = [Stamped((torch.zeros(1), i), 4) for i in range(3)]
    a, b = col(clips), generic(clips)
    assert list(a) == list(b) == ["videos", "labels", "masks_enc", "masks_pred", "num_bad"]
    for x, y in zip(a["masks_enc"] + a["masks_pred"], b["masks_enc"] + b["masks_pred"]):
        assert torch.equal(x, y)
    enc, pred = col.masks(3, 4)  # the collator's masks(batch_size, step) is the sampler's at StepSeeds
    assert all(torch.equal(x, y) for x, y in zip(enc + pred, a["masks_enc"] + a["masks_pred"]))
    enc2, _ = sampler.masks(3, StepSeeds(5, 1, 4))
    assert all(torch.equal(x, y) for x, y in zip(enc, enc2))
    col.share_size_draws = False  # reaches the sampler
    assert col.sampler.share_size_draws is False


@pytest.mark.parametrize("world", [2, 3])
def test_global_scope_processes_get_the_rows_of_one_process(world):
    """Issue #13 item 6: with the default global scope, W processes x B clips get exactly the
    masks of one process with W*B clips (same sizes, positions and truncation); each rank's
    j-th clip sits at slot j * W + rank of the global batch (jepa_core.data.StepBatchSampler)."""
    bsz, step = 3, 7
    clips = [(torch.zeros(1), i) for i in range(bsz * world)]
    one = MultiBlock3DMaskCollator(VJEPA_MASK_CONFIGS, 224, 16, 16, 2, seed=4)(
        [Stamped(c, step, k) for k, c in enumerate(clips)])
    for r in range(world):
        col = MultiBlock3DMaskCollator(VJEPA_MASK_CONFIGS, 224, 16, 16, 2, seed=4, rank=r, world_size=world)
        slots = [j * world + r for j in range(bsz)]
        out = col([Stamped(clips[s], step, s) for s in slots])
        assert out["labels"].tolist() == slots
        for mine, full in zip(out["masks_enc"] + out["masks_pred"], one["masks_enc"] + one["masks_pred"]):
            assert torch.equal(mine, full[slots])
        process = MultiBlock3DMaskCollator(VJEPA_MASK_CONFIGS, 224, 16, 16, 2, seed=4, rank=r, world_size=world,
                                           scope="process")([Stamped(clips[s], step, s) for s in slots])
        assert not all(torch.equal(a, b) for a, b in zip(process["masks_enc"], out["masks_enc"]))
