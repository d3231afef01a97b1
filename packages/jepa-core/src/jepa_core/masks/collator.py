"""One ``collate_fn`` for every masked-prediction method, with pluggable mask samplers.

:class:`MaskCollator` does the plumbing once: collate the samples (dropping corrupt ones), take
the step stamp (or an internal counter), skip a batch whose samples were all corrupt, seed
per-step generators from (seed, rank, step), apply an optional seeded batch transform and ask
the sampler for its batch fields. A method plugs in a :class:`MaskSampler`: I-JEPA's 2-D
multi-block masks (:class:`jepa_core.masks.multiblock.MultiBlockMaskSampler`), V-JEPA's 3-D
ones (``jepa_video.masks.MultiBlock3DMaskSampler``), or no sampler at all.

Every random draw of a batch comes from a generator seeded by (seed, rank, step, tag), so a
batch's masks and augmentation are the same with any number of workers, in any worker order,
and after a resume at any step. The official collators count calls instead
(ijepa:src/masks/multiblock.py, jepa:src/masks/multiblock3d.py); without step stamps the
internal counter does the same here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch

from jepa_core.data import collate_stamped

__all__ = ["AUG_TAG", "BatchTransform", "MaskCollator", "MaskSampler", "StepSeeds", "mix_seed"]

AUG_TAG = 0x617567  # "aug": the batch transform's generator

_M64 = 0xFFFFFFFFFFFFFFFF
_INIT = 0x9E3779B97F4A7C15


def _absorb(x: int, parts) -> int:
    for p in parts:
        x = (x ^ (int(p) & _M64)) * 0xBF58476D1CE4E5B9 & _M64
        x = (x ^ (x >> 31)) * 0x94D049BB133111EB & _M64
    return x


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (splitmix64 steps), stable across processes."""
    return _absorb(_INIT, parts) & 0x7FFFFFFFFFFFFFFF


class StepSeeds:
    """The seeds of one batch: ``generator(*tags)`` is seeded with
    ``mix_seed(seed, rank, step, *tags)``. Each independent stream of a sampler takes its own
    tags, so adding a stream never shifts the draws of another."""

    __slots__ = ("seed", "rank", "step", "_state")

    def __init__(self, seed: int, rank: int, step: int):
        self.seed, self.rank, self.step = seed, rank, step
        # mix_seed folds its parts in order: the (seed, rank, step) prefix is shared by every tag
        self._state = _absorb(_INIT, (seed, rank, step))

    def seed_for(self, *tags: int) -> int:
        """``mix_seed(seed, rank, step, *tags)``."""
        return _absorb(self._state, tags) & 0x7FFFFFFFFFFFFFFF

    def generator(self, *tags: int) -> torch.Generator:
        """A fresh CPU generator seeded with :meth:`seed_for`."""
        return torch.Generator().manual_seed(self.seed_for(*tags))

    def __repr__(self) -> str:
        return f"StepSeeds(seed={self.seed}, rank={self.rank}, step={self.step})"


@runtime_checkable
class MaskSampler(Protocol):
    """What :class:`MaskCollator` asks of a sampler.

    Called once per batch with the batch size, the batch's :class:`StepSeeds` and the collated
    (and transformed) inputs, for samplers that look at them; returns the batch fields it adds,
    e.g. ``{"masks_enc": [LongTensor [B, K], ...], "masks_pred": [...]}``. It must draw every
    random number from ``seeds.generator(...)`` (never the global RNG), so the fields are a
    function of (seed, rank, step) and the inputs only. A plain function fits too.
    """

    def __call__(self, batch_size: int, seeds: StepSeeds, inputs: Any = None) -> dict[str, Any]: ...


BatchTransform = Callable[[Any, torch.Generator], Any]


class MaskCollator:
    """``collate_fn`` that batches ``(input, label)`` samples (or bare inputs; further tuple
    entries are dropped) and adds the fields of a mask sampler.

    Samples may carry a step stamp (:class:`jepa_core.data.Stamped`, from
    :class:`jepa_core.data.StepBatchSampler`); without stamps an internal counter stands in, as
    in the official collators. Returns::

        {input_key: inputs, "labels": labels or None, **sampler fields, **transform fields, "num_bad": n}

    or ``{"skip": True, "num_bad": n}`` when every sample of the batch was corrupt (the trainer
    skips it); ``num_bad`` counts the corrupt samples dropped.

    Args:
        sampler: a :class:`MaskSampler`, or None for a method without masks.
        seed, rank: with the step, the seed of every generator of a batch.
        input_key: the batch key of the collated inputs (``"images"``, ``"videos"``, ...).
        batch_transform: optional ``f(inputs, generator) -> inputs`` or
            ``-> (inputs, {field: value})`` applied to the collated inputs before the sampler,
            with a generator seeded ``mix_seed(seed, rank, step, AUG_TAG)``; the extra fields
            (e.g. augmentation parameters a predictor is conditioned on) join the batch.
    """

    def __init__(
        self,
        sampler: MaskSampler | None,
        seed: int = 0,
        rank: int = 0,
        input_key: str = "images",
        batch_transform: BatchTransform | None = None,
    ):
        self.sampler = sampler
        self.seed, self.rank = seed, rank
        self.input_key = input_key
        self.batch_transform = batch_transform
        self._counter = -1

    def step_seeds(self, step: int) -> StepSeeds:
        """The seeds of the batch at ``step`` on this rank."""
        return StepSeeds(self.seed, self.rank, step)

    def __call__(self, samples: list) -> dict:
        collated, step, num_bad = collate_stamped(samples)
        if step is None:
            self._counter += 1
            step = self._counter
        if collated is None:  # every sample was corrupt: the trainer skips this batch
            return {"skip": True, "num_bad": num_bad}
        if isinstance(collated, torch.Tensor):
            inputs, labels = collated, None
        else:
            inputs, labels = collated[0], (collated[1] if len(collated) > 1 else None)
        seeds = self.step_seeds(step)
        extra: Mapping[str, Any] = {}
        if self.batch_transform is not None:
            out = self.batch_transform(inputs, seeds.generator(AUG_TAG))
            inputs, extra = out if _is_with_fields(out) else (out, extra)
        fields = {} if self.sampler is None else self.sampler(_batch_size(inputs), seeds, inputs)
        batch = {self.input_key: inputs, "labels": labels, **fields, **extra}
        if len(batch) != 2 + len(fields) + len(extra) or "num_bad" in batch or "skip" in batch:
            _raise_clash(self.input_key, fields, extra)
        batch["num_bad"] = num_bad
        return batch


def _raise_clash(input_key: str, fields: Mapping, extra: Mapping):
    seen, clash = {input_key, "labels", "num_bad", "skip"}, set()
    for more in (fields, extra):
        clash |= more.keys() & seen
        seen |= more.keys()
    raise ValueError(f"batch fields {sorted(clash)} are set twice (by the collator, the sampler or the batch "
                     "transform)")


def _is_with_fields(out) -> bool:
    """A transform's ``(inputs, {field: value})`` (a plain tuple of inputs is not one)."""
    return isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping)


def _batch_size(inputs) -> int:
    """The leading size of the collated inputs (a tensor, or a list / dict of them)."""
    while not isinstance(inputs, torch.Tensor):
        inputs = next(iter(inputs.values())) if isinstance(inputs, Mapping) else inputs[0]
    return inputs.shape[0]
