"""Data plumbing shared by every modality: a resumable distributed batch sampler whose batches
are a pure function of (seed, step, rank), per-sample seeding of augmentations, and skipping of
corrupt samples with a count.

The global batch of a step is the same whatever the number of processes: ``W`` processes of
``B`` samples each see the ``W x B`` samples one process of ``W x B`` would see, each sample
stamped with its *slot* (its place in the global batch), and every random draw of a sample is
keyed by (seed, step, dataset index) here and by (seed, step, slot) in
:class:`jepa_core.masks.collator.MaskCollator`.
"""

from __future__ import annotations

import itertools
import logging
import random
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler, default_collate

log = logging.getLogger(__name__)


class CorruptSampleError(RuntimeError):
    """Raised by a dataset for a sample that cannot be decoded; the loader skips and counts it."""


@dataclass
class Stamped:
    """A sample (or None when it was corrupt) with the training step it belongs to and its slot
    in the step's global batch (None when the batch sampler gives none)."""

    sample: Any
    step: int
    slot: int | None = None


def _mix(*parts: int) -> int:
    from jepa_core.masks.multiblock import mix_seed

    return mix_seed(*parts)


class StepBatchSampler(Sampler[list[tuple[int, int, int]]]):
    """Yields the batches of steps ``start_step .. total_steps - 1`` (endless when ``total_steps``
    is None) as ``[(index, step, slot), ...]``.

    Each epoch is a fresh permutation seeded by (seed, epoch), split across ranks like
    ``DistributedSampler`` (rank r takes every world-th index), batches drop the remainder.
    Because a batch depends only on (seed, epoch, step, rank), resuming at any step gives
    exactly the batches an uninterrupted run would have seen.

    The ranks' batches of a step together are the permutation's window
    ``[step * G, (step + 1) * G)`` with ``G = batch_size * world_size``, exactly the batch of
    one process with ``batch_size * world_size``: rank r's j-th sample sits at ``slot = j *
    world_size + r`` of that window. So W processes x B samples and 1 process x W*B samples
    train on the same global batches, and a run can resume on another number of processes.
    """

    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        total_steps: int | None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        shuffle: bool = True,
    ):
        self.n, self.batch_size, self.total_steps = dataset_size, batch_size, total_steps
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.start_step, self.shuffle = start_step, shuffle
        self.steps_per_epoch = (dataset_size // world_size) // batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"dataset of {dataset_size} samples is smaller than one global batch "
                f"({batch_size} x {world_size} processes); lower data.batch_size or add data"
            )

    def epoch_indices(self, epoch: int) -> torch.Tensor:
        if self.shuffle:
            g = torch.Generator().manual_seed(_mix(self.seed, epoch, 0x5A4D))
            perm = torch.randperm(self.n, generator=g)
        else:
            perm = torch.arange(self.n)
        per_rank = self.n // self.world_size
        return perm[self.rank : per_rank * self.world_size : self.world_size]

    def __iter__(self):
        epoch, cached = -1, None
        steps = itertools.count(self.start_step) if self.total_steps is None else range(self.start_step, self.total_steps)
        for step in steps:
            e, pos = divmod(step, self.steps_per_epoch)
            if e != epoch:
                epoch, cached = e, self.epoch_indices(e)
            idx = cached[pos * self.batch_size : (pos + 1) * self.batch_size].tolist()
            yield [(i, step, j * self.world_size + self.rank) for j, i in enumerate(idx)]

    def __len__(self) -> int:
        if self.total_steps is None:
            raise TypeError("an endless StepBatchSampler has no length")
        return max(self.total_steps - self.start_step, 0)


def epoch_of_batch(step: int, steps_per_epoch: int, grad_accum: int = 1, ipe: int | None = None) -> int:
    """The epoch, as the Trainer counts it, of the loader batch stamped ``step``.

    The loader stamps micro-batches (``optim.grad_accum`` of them make one optimizer step),
    while the Trainer's epochs count optimizer steps: ``ipe = optim.ipe or steps_per_epoch //
    grad_accum`` of them (its ``epoch`` column is ``step / ipe``). So the batch belongs to
    optimizer step ``step // grad_accum`` and to epoch ``(step // grad_accum) // ipe``, and
    every micro-batch of an optimizer step is in the same epoch. ``steps_per_epoch``: loader
    batches per epoch (:attr:`StepBatchSampler.steps_per_epoch`, ``len(dataset) //
    world_size // batch_size``). A batch whose samples were all corrupt is skipped by the
    Trainer but still stamped, so after such a batch the loader step runs ahead of the
    optimizer steps by one micro-batch.
    """
    accum = max(1, int(grad_accum))
    ipe = int(ipe) if ipe else max(1, steps_per_epoch // accum)
    return (step // accum) // ipe


class StampedDataset(Dataset):
    """Wraps a map-style dataset for :class:`StepBatchSampler` (keys ``(index, step)`` or
    ``(index, step, slot)``).

    Seeds ``torch`` and ``random`` from (seed, step, index) before each sample, so random
    augmentations are the same with any number of workers or processes and after a resume. A
    sample whose dataset raises :class:`CorruptSampleError` comes back as
    ``Stamped(None, step, slot)``.
    """

    def __init__(self, dataset: Dataset, seed: int = 0):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, ...]) -> Stamped:
        index, step = key[0], key[1]
        slot = key[2] if len(key) > 2 else None
        s = _mix(self.seed, step, index)
        # The CPU generator only: torch.manual_seed would also queue a lazy CUDA seeding on
        # CUDA builds, which records a stack trace each call (~2 ms a sample).
        torch.default_generator.manual_seed(s)
        random.seed(s)
        try:
            return Stamped(self.dataset[index], step, slot)
        except CorruptSampleError as err:
            log.warning("skipping corrupt sample %d: %s", index, err)
            return Stamped(None, step, slot)


def collate_stamped(samples: list) -> tuple[Any, int | None, int]:
    """Collate samples that may be :class:`Stamped`; drop corrupt ones.

    Returns ``(collated, step or None, number of corrupt samples dropped)``; ``collated`` is
    None when every sample of the batch was corrupt (the trainer then skips the batch).
    """
    step = None
    if samples and isinstance(samples[0], Stamped):
        step = samples[0].step
        samples = [s.sample for s in samples]
    good = [s for s in samples if s is not None]
    if not good:
        return None, step, len(samples)
    return default_collate(good), step, len(samples) - len(good)
