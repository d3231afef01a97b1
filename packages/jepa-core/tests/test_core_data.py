"""Resumable step-stamped batch sampling, per-sample seeding and corrupt-sample skipping."""

from __future__ import annotations

import random

import pytest
import torch
from jepa_core.data import (
    CorruptSampleError,
    Stamped,
    StampedDataset,
    StepBatchSampler,
    collate_stamped,
)


def _batches(**kw):
    return list(StepBatchSampler(**kw))


def test_batches_are_stamped_with_their_step():
    bs = _batches(dataset_size=20, batch_size=4, total_steps=7, seed=1)
    assert len(bs) == 7
    for step, b in enumerate(bs):
        assert len(b) == 4
        assert all(s == step for _, s, _slot in b)


def test_resume_gives_the_tail_of_the_full_sequence():
    kw = dict(dataset_size=23, batch_size=4, total_steps=20, seed=5)
    full = _batches(**kw)
    for k in (0, 1, 5, 6, 13, 19, 20):
        sampler = StepBatchSampler(**kw, start_step=k)
        assert len(sampler) == 20 - k
        assert list(sampler) == full[k:]


def test_pure_function_of_seed():
    kw = dict(dataset_size=30, batch_size=5, total_steps=12)
    assert _batches(**kw, seed=3) == _batches(**kw, seed=3)
    assert _batches(**kw, seed=3) != _batches(**kw, seed=4)


def test_epoch_covers_each_index_at_most_once_and_reshuffles():
    n, bsz = 23, 4
    s = StepBatchSampler(n, bsz, total_steps=15, seed=2)
    assert s.steps_per_epoch == 5
    bs = list(s)
    epochs = [bs[i : i + 5] for i in range(0, 15, 5)]
    orders = []
    for ep in epochs:
        idx = [i for b in ep for i, *_ in b]
        assert len(idx) == 20 == len(set(idx))
        assert all(0 <= i < n for i in idx)
        orders.append(idx)
    assert orders[0] != orders[1]  # a fresh permutation each epoch


def test_two_ranks_disjoint_per_epoch():
    n, bsz, steps = 30, 3, 10
    r0 = StepBatchSampler(n, bsz, steps, seed=7, rank=0, world_size=2)
    r1 = StepBatchSampler(n, bsz, steps, seed=7, rank=1, world_size=2)
    assert r0.steps_per_epoch == 5
    b0, b1 = list(r0), list(r1)
    for e in range(2):
        i0 = [i for b in b0[e * 5 : (e + 1) * 5] for i, *_ in b]
        i1 = [i for b in b1[e * 5 : (e + 1) * 5] for i, *_ in b]
        assert len(set(i0)) == len(i0) == 15 and len(set(i1)) == 15
        assert not set(i0) & set(i1)
        assert set(i0) | set(i1) == set(range(n))
    # each rank's indices are the rank-th interleave of one shared permutation
    perm0, perm1 = r0.epoch_indices(0), r1.epoch_indices(0)
    assert not set(perm0.tolist()) & set(perm1.tolist())


def test_no_shuffle_is_sequential():
    bs = _batches(dataset_size=10, batch_size=3, total_steps=4, shuffle=False)
    assert [[i for i, *_ in b] for b in bs] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [0, 1, 2]]


def test_dataset_smaller_than_a_batch_raises():
    with pytest.raises(ValueError, match="smaller than one global batch"):
        StepBatchSampler(dataset_size=3, batch_size=4, total_steps=5)
    with pytest.raises(ValueError):
        StepBatchSampler(dataset_size=7, batch_size=4, total_steps=5, world_size=2)


class _DS(torch.utils.data.Dataset):
    def __init__(self, bad=()):
        self.bad = set(bad)

    def __len__(self):
        return 10

    def __getitem__(self, i):
        if i in self.bad:
            raise CorruptSampleError(f"bad {i}")
        return torch.rand(3), random.random(), i


def test_stamped_dataset_seeds_per_sample():
    ds = StampedDataset(_DS(), seed=11)
    a = ds[(3, 5)]
    torch.rand(100)  # global RNG state in between does not matter
    random.random()
    b = ds[(3, 5)]
    assert isinstance(a, Stamped) and a.step == 5
    assert torch.equal(a.sample[0], b.sample[0]) and a.sample[1] == b.sample[1]
    c, d = ds[(3, 6)], ds[(4, 5)]
    assert not torch.equal(a.sample[0], c.sample[0])
    assert not torch.equal(a.sample[0], d.sample[0])
    e = StampedDataset(_DS(), seed=12)[(3, 5)]
    assert not torch.equal(a.sample[0], e.sample[0])
    assert len(ds) == 10


def test_corrupt_sample_skipped_and_counted():
    ds = StampedDataset(_DS(bad={2}), seed=0)
    s = ds[(2, 4)]
    assert s == Stamped(None, 4)
    batch = [ds[(i, 4)] for i in range(4)]
    collated, step, bad = collate_stamped(batch)
    assert step == 4 and bad == 1
    assert collated[0].shape == (3, 3)
    assert collated[2].tolist() == [0, 1, 3]


def test_collate_plain_and_all_bad():
    collated, step, bad = collate_stamped([torch.ones(2), torch.zeros(2)])
    assert step is None and bad == 0 and collated.shape == (2, 2)
    collated, step, bad = collate_stamped([Stamped(None, 9), Stamped(None, 9)])
    assert collated is None and step == 9 and bad == 2


def test_with_dataloader_and_workers_independent_of_batching():
    ds = StampedDataset(_DS(), seed=1)
    sampler = StepBatchSampler(10, 2, total_steps=4, seed=1)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate_stamped)
    out = list(loader)
    assert [step for _, step, _ in out] == [0, 1, 2, 3]
    # the same (step, index) pairs drawn one by one give the same random values
    for (coll, _, _), b in zip(out, StepBatchSampler(10, 2, total_steps=4, seed=1)):
        for row, key in enumerate(b):
            assert torch.equal(coll[0][row], ds[key].sample[0])


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_together_take_the_one_process_global_batch(world):
    """Issue #13 item 6: W processes x B samples see the batch of 1 process x W*B, and a
    sample's slot is its place in that batch (so masks and crops can be keyed by it)."""
    n, bsz, steps = 50, 4, 9  # several epochs, with a remainder dropped
    one = _batches(dataset_size=n, batch_size=bsz * world, total_steps=steps, seed=5)
    ranks = [_batches(dataset_size=n, batch_size=bsz, total_steps=steps, seed=5, rank=r, world_size=world)
             for r in range(world)]
    for step in range(steps):
        assert [slot for *_, slot in one[step]] == list(range(bsz * world))
        rebuilt = [None] * (bsz * world)
        for r in range(world):
            for j, (index, s, slot) in enumerate(ranks[r][step]):
                assert s == step and slot == j * world + r
                rebuilt[slot] = index
        assert rebuilt == [index for index, *_ in one[step]]
    # the epoch length (and so the epoch of every step) is the same too
    assert StepBatchSampler(n, bsz, 1, world_size=world).steps_per_epoch == StepBatchSampler(n, bsz * world, 1).steps_per_epoch


def test_stamped_dataset_keeps_the_slot():
    ds = StampedDataset(_DS(bad={2}), seed=0)
    assert ds[(3, 5, 7)].slot == 7 and ds[(3, 5)].slot is None
    assert ds[(2, 5, 1)] == Stamped(None, 5, 1)
    # the slot does not enter the sample's seed: a sample draws the same in any slot
    assert torch.equal(ds[(3, 5, 7)].sample[0], ds[(3, 5, 0)].sample[0])
