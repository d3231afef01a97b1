"""The generic mask collator (jepa_core.masks.collator): stamping, skipping, seeding, the sampler
and batch-transform fields; and a regression test of the I-JEPA masks against recorded numbers."""

from __future__ import annotations

import random

import pytest
import torch
from jepa_core.data import Stamped, StampedDataset, StepBatchSampler
from jepa_core.masks import (
    MaskCollator,
    MaskSampler,
    MultiBlockMaskCollator,
    MultiBlockMaskConfig,
    MultiBlockMaskGenerator,
    MultiBlockMaskSampler,
    StepSeeds,
    mix_seed,
)
from jepa_core.testing import tensor_digest


def _noise(x, g):
    return x + torch.rand(x.shape, generator=g)


# sha256 (first 16 hex digits) of masks_enc + masks_pred + images of MultiBlockMaskCollator(cfg,
# 224, 14) on 8 stamped zero images, recorded from the collator before it became a MaskCollator:
# key "2d/seed/rank/step/with_transform" (transform: _noise), or a non-default config.
RECORDED_2D = {
    "2d/0/0/0/0": "d81818bee73b061a", "2d/0/0/0/1": "5bbb3fcac1ace22c", "2d/0/0/1000/0": "4adfcd2b703c3952",
    "2d/0/0/1000/1": "ef9edb9bfda5152c", "2d/0/0/3/0": "b99dac71b6ab0b45", "2d/0/0/3/1": "fe062d95185cb150",
    "2d/0/1/0/0": "e3e2d7c9ded3a76a", "2d/0/1/0/1": "824a6b639b00763f", "2d/0/1/1000/0": "d6a92b2c9cd40126",
    "2d/0/1/1000/1": "e2f3e0f0237c85b2", "2d/0/1/3/0": "2ce14895f87e4124", "2d/0/1/3/1": "0f5f5eeecf3361a9",
    "2d/7/0/0/0": "ed66514b3e68b2fb", "2d/7/0/0/1": "8c6de7985a38fbc6", "2d/7/0/1000/0": "9cca2434946fe909",
    "2d/7/0/1000/1": "21a2103b93f10b17", "2d/7/0/3/0": "2ce49dae26b8eaa7", "2d/7/0/3/1": "7262424fae8fe1bf",
    "2d/7/1/0/0": "f2c62b204c13b33b", "2d/7/1/0/1": "1a4091cb6e9d5ddc", "2d/7/1/1000/0": "f2d1015d850c2ee8",
    "2d/7/1/1000/1": "5b11709d0ff12135", "2d/7/1/3/0": "22cc434d6feb7fc0", "2d/7/1/3/1": "e66e515f3997e9c9",
    "2d/fix": "e18b0e0112e97179", "2d/overlap": "b6895b36a85f8f2a",
}
OTHER_CFGS = {
    "overlap": MultiBlockMaskConfig(allow_overlap=True, num_enc_masks=2),
    "fix": MultiBlockMaskConfig(fix_position_bound=True, min_keep_context=30),
}


@pytest.mark.parametrize("key", sorted(RECORDED_2D))
def test_multiblock_collator_masks_match_recorded(key):
    imgs = [(torch.zeros(3, 2, 2), i) for i in range(8)]
    parts = key.split("/")[1:]
    if len(parts) == 1:
        col, step = MultiBlockMaskCollator(OTHER_CFGS[parts[0]], 224, 14, seed=1), 2
        o = col([Stamped(s, step) for s in imgs])
        assert tensor_digest(o["masks_enc"] + o["masks_pred"]) == RECORDED_2D[key]
        return
    seed, rank, step, tf = map(int, parts)
    # The per-process scope reproduces the recordings (each rank drew its own batch then).
    col = MultiBlockMaskCollator(MultiBlockMaskConfig(), 224, 14, seed=seed, rank=rank,
                                 batch_transform=_noise if tf else None, world_size=2, scope="process")
    o = col([Stamped(s, step) for s in imgs])
    assert tensor_digest(o["masks_enc"] + o["masks_pred"] + [o["images"]]) == RECORDED_2D[key]


def test_step_seeds_are_mix_seed_of_seed_rank_step_tags():
    s = StepSeeds(3, 1, 42)
    assert s.seed_for() == mix_seed(3, 1, 42)
    assert s.seed_for(0x6D61736B) == mix_seed(3, 1, 42, 0x6D61736B)
    assert s.seed_for(7, 2) == mix_seed(3, 1, 42, 7, 2)
    assert s.seed_for(7, 2) != s.seed_for(2, 7)
    a, b = s.generator(5), torch.Generator().manual_seed(mix_seed(3, 1, 42, 5))
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))


class _ToySampler:
    """Draws from two tagged streams, reads the inputs, adds a custom field."""

    def __call__(self, batch_size, seeds, inputs=None):
        g = seeds.generator(1)
        return {
            "masks_enc": [torch.randperm(10, generator=g)[:4].expand(batch_size, -1).clone()],
            "masks_pred": [torch.randint(0, 10, (batch_size, 3), generator=seeds.generator(2))],
            "input_mean": inputs.mean(),
        }


def _samples(n=4, step=None, bad=()):
    out = [None if i in bad else (torch.full((2,), float(i)), i) for i in range(n)]
    return out if step is None else [Stamped(s, step) for s in out]


def test_generic_collator_batch_fields():
    col = MaskCollator(_ToySampler(), seed=1, input_key="points")
    assert isinstance(col.sampler, MaskSampler)
    out = col(_samples(step=3))
    assert list(out) == ["points", "labels", "masks_enc", "masks_pred", "input_mean", "num_bad"]
    assert out["points"].shape == (4, 2) and out["labels"].tolist() == [0, 1, 2, 3]
    assert out["masks_enc"][0].shape == (4, 4) and out["masks_pred"][0].shape == (4, 3)
    assert out["input_mean"] == 1.5 and out["num_bad"] == 0
    # bare inputs (no labels), and no sampler at all (e.g. MC-JEPA)
    bare = MaskCollator(None)([torch.ones(3), torch.zeros(3)])
    assert set(bare) == {"images", "labels", "num_bad"} and bare["labels"] is None
    assert bare["images"].shape == (2, 3)


def test_transform_adds_fields_seeded_and_sampler_sees_transformed_inputs():
    def with_action(x, g):
        action = torch.rand(x.shape[0], 4, generator=g)
        return x * 10, {"action": action}

    col = MaskCollator(_ToySampler(), seed=2, rank=1, batch_transform=with_action, world_size=2, scope="process")
    out = col(_samples(step=5))
    assert out["images"].tolist() == [[0, 0], [10, 10], [20, 20], [30, 30]]
    assert out["input_mean"] == 15.0  # the sampler saw the transformed inputs
    g = torch.Generator().manual_seed(mix_seed(2, 1, 5, 0x617567))
    assert torch.equal(out["action"], torch.rand(4, 4, generator=g))
    assert list(out)[-1] == "num_bad"
    # a transform returning a plain tensor adds nothing
    plain = MaskCollator(None, batch_transform=lambda x, g: x + 1)(_samples(step=0))
    assert set(plain) == {"images", "labels", "num_bad"}


def test_field_set_twice_is_an_error():
    with pytest.raises(ValueError, match="labels"):
        MaskCollator(lambda b, s, x: {"labels": 0})(_samples(step=0))
    with pytest.raises(ValueError, match="masks_enc"):
        MaskCollator(_ToySampler(), batch_transform=lambda x, g: (x, {"masks_enc": []}))(_samples(step=0))


def test_corrupt_samples_counted_and_all_corrupt_batch_skipped():
    col = MaskCollator(_ToySampler())
    out = col(_samples(step=4, bad={1, 3}))
    assert out["num_bad"] == 2 and out["labels"].tolist() == [0, 2]
    assert out["masks_pred"][0].shape[0] == 2
    assert col([Stamped(None, 9)] * 3) == {"skip": True, "num_bad": 3}
    # without stamps the skipped batch still advances the counter (a step was consumed)
    col = MaskCollator(_ToySampler(), seed=4)
    assert col([None, None]) == {"skip": True, "num_bad": 2}
    second = col(_samples())
    stamped = MaskCollator(_ToySampler(), seed=4)(_samples(step=1))
    assert torch.equal(second["masks_pred"][0], stamped["masks_pred"][0])


def _masks(out):
    return out["masks_enc"] + out["masks_pred"]


def _same(a, b):
    return all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(_masks(a), _masks(b)))


@pytest.mark.parametrize("make", [lambda seed, rank: MaskCollator(_ToySampler(), seed=seed, rank=rank, world_size=2,
                                                                  scope="process"),
                                  lambda seed, rank: MultiBlockMaskCollator(MultiBlockMaskConfig(), 224, 16,
                                                                            seed=seed, rank=rank, world_size=2,
                                                                            scope="process")])
def test_masks_are_a_function_of_seed_rank_step_only(make):
    steps = list(range(8))
    sequential = {s: make(0, 0)(_samples(step=s)) for s in steps}
    # two "workers" (separate copies) taking the steps in a shuffled order
    workers = [make(0, 0), make(0, 0)]
    order = steps[:]
    random.Random(0).shuffle(order)
    for i, s in enumerate(order):
        torch.rand(3)  # the global RNG state does not matter
        assert _same(workers[i % 2](_samples(step=s)), sequential[s])
    # a "resume" at step 5 sees the masks of the uninterrupted run
    resumed = make(0, 0)
    assert all(_same(resumed(_samples(step=s)), sequential[s]) for s in (5, 6, 7))
    # other ranks and seeds draw other masks
    for seed, rank in ((0, 1), (1, 0)):
        other = make(seed, rank)
        assert not all(_same(other(_samples(step=s)), sequential[s]) for s in steps)


def test_masks_independent_of_dataloader_workers():
    class _DS(torch.utils.data.Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            return torch.rand(2), i

    def run(workers):
        sampler = StepBatchSampler(16, 4, total_steps=6, seed=3, start_step=2)
        col = MultiBlockMaskCollator(MultiBlockMaskConfig(), 224, 16, seed=3)
        loader = torch.utils.data.DataLoader(StampedDataset(_DS(), seed=3), batch_sampler=sampler, collate_fn=col,
                                             num_workers=workers)
        return list(loader)

    for a, b in zip(run(0), run(2)):
        assert _same(a, b) and torch.equal(a["images"], b["images"])


def test_multiblock_collator_is_the_generic_collator_with_its_sampler():
    cfg = MultiBlockMaskConfig()
    col = MultiBlockMaskCollator(cfg, 224, 14, seed=3, rank=2, world_size=3, scope="process")
    assert isinstance(col, MaskCollator) and isinstance(col.sampler, MultiBlockMaskSampler)
    assert isinstance(col.generator, MultiBlockMaskGenerator) and (col.generator.H, col.generator.W) == (16, 16)
    assert col.input_key == "images"
    generic = MaskCollator(MultiBlockMaskSampler(cfg, 16), seed=3, rank=2, world_size=3, scope="process")
    imgs = [(torch.zeros(3, 2, 2), i) for i in range(4)]
    assert _same(col([Stamped(s, 9) for s in imgs]), generic([Stamped(s, 9) for s in imgs]))
    enc, pred = col.generator.sample(4, StepSeeds(3, 2, 9).generator(0x6D61736B))
    assert all(torch.equal(x, y) for x, y in zip(enc + pred, _masks(generic([Stamped(s, 9) for s in imgs]))))


def _slot_noise(x, g, slots=None, total=None):
    """A batch transform drawing per-sample noise for the global batch and keeping its rows."""
    noise = torch.rand((x.shape[0] if total is None else total, *x.shape[1:]), generator=g)
    return x + (noise if slots is None else noise[slots])


class _IndexImages(torch.utils.data.Dataset):
    def __init__(self, n, bad=()):
        self.n, self.bad = n, set(bad)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i in self.bad:
            from jepa_core.data import CorruptSampleError

            raise CorruptSampleError(f"bad {i}")
        return torch.full((3, 4, 4), float(i)), i


@pytest.mark.parametrize("world", [2, 4])
def test_global_scope_processes_get_the_rows_of_one_process(world):
    """Issue #13 item 6: in the (default) global scope, W processes x B samples get exactly the
    masks and transformed inputs of 1 process x W*B, sample by sample, even when some samples
    are corrupt; the official per-process scope does not."""
    bsz, steps, n = 4, 3, 40
    ds = StampedDataset(_IndexImages(n, bad={0, 7, 13}), seed=1)

    def run(rank, world_size, batch, scope="global"):
        col = MultiBlockMaskCollator(MultiBlockMaskConfig(), 224, 16, seed=9, rank=rank, world_size=world_size,
                                     batch_transform=_slot_noise, scope=scope)
        sampler = StepBatchSampler(n, batch, steps, seed=1, rank=rank, world_size=world_size)
        return [col([ds[key] for key in keys]) for keys in sampler]

    one = run(0, 1, bsz * world)
    by_rank = [run(r, world, bsz) for r in range(world)]
    seen_bad = 0
    for step in range(steps):
        ref = one[step]
        row_of = {int(label): k for k, label in enumerate(ref["labels"])}  # labels are dataset indices
        for r in range(world):
            out = by_rank[r][step]
            seen_bad += out["num_bad"]
            rows = torch.tensor([row_of[int(label)] for label in out["labels"]])
            assert torch.equal(out["images"], ref["images"][rows])
            for mine, full in zip(_masks(out), _masks(ref)):
                assert torch.equal(mine, full[rows])  # same block sizes, positions and truncation
    assert seen_bad > 0  # the corrupt samples were met and dropped
    process = [run(r, world, bsz, scope="process") for r in range(world)]
    assert not all(_same(process[r][0], by_rank[r][0]) for r in range(world))


def test_global_scope_single_process_draws_as_the_process_scope():
    """One process draws the same in both scopes, so single-process recordings stay valid."""
    imgs = [Stamped((torch.zeros(3, 2, 2), i), 6, i) for i in range(8)]
    a = MultiBlockMaskCollator(MultiBlockMaskConfig(), 224, 14, seed=2, batch_transform=_noise)(imgs)
    b = MultiBlockMaskCollator(MultiBlockMaskConfig(), 224, 14, seed=2, batch_transform=_noise, scope="process")(imgs)
    assert _same(a, b) and torch.equal(a["images"], b["images"])


def test_global_scope_rejects_fields_without_a_row_per_sample():
    def one_row(batch_size, seeds, inputs=None):
        return {"masks_enc": [torch.zeros(1, 3, dtype=torch.long)], "masks_pred": []}

    with pytest.raises(ValueError, match="one row per sample of the global batch"):
        MaskCollator(one_row, world_size=2)(_samples(step=0))
    # the per-process scope leaves the sampler's fields as they are
    assert MaskCollator(one_row, world_size=2, scope="process")(_samples(step=0))["masks_enc"][0].shape == (1, 3)
    with pytest.raises(ValueError, match="rank 2 is outside"):
        MaskCollator(one_row, rank=2, world_size=2)
    with pytest.raises(ValueError, match="unknown mask scope"):
        MaskCollator(one_row, scope="local")
