"""One ``collate_fn`` for every masked-prediction method, with pluggable mask samplers.

:class:`MaskCollator` does the plumbing once: collate the samples (dropping corrupt ones), take
the step stamp (or an internal counter), skip a batch whose samples were all corrupt, seed
per-step generators, apply an optional seeded batch transform and ask the sampler for its batch
fields. A method plugs in a :class:`MaskSampler`: I-JEPA's 2-D multi-block masks
(:class:`jepa_core.masks.multiblock.MultiBlockMaskSampler`), V-JEPA's 3-D ones
(``jepa_video.masks.MultiBlock3DMaskSampler``), or no sampler at all.

Two scopes of random draws (``scope``):

- ``"global"`` (default): the sampler draws the masks of the step's whole *global* batch (every
  process's samples, ``batch_size x world_size``) from generators seeded by (seed, step, tag),
  and each process keeps the rows of its own samples' slots (:class:`jepa_core.data.Stamped`).
  A single process draws exactly what it draws in the process scope.
  A batch transform that takes ``slots`` does the same. So 2 processes x B samples get exactly
  the masks and crops of 1 process x 2B samples, and a run resumes on another number of
  processes. Cost: every process draws the masks of the global batch (cheap next to a step).
- ``"process"``: each process draws its own batch's masks from generators seeded by (seed, rank,
  step, tag), as the official collators do (ijepa:src/masks/multiblock.py,
  jepa:src/masks/multiblock3d.py draw one block size per process batch and truncate every mask
  to that batch's minimum). Results then depend on the number of processes.

Either way a batch's masks and augmentation are the same with any number of data-loader workers,
in any worker order, and after a resume at any step. The official collators count calls
instead; without step stamps the internal counter does the same here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch

from jepa_core.data import Stamped, collate_stamped

__all__ = ["AUG_TAG", "SCOPES", "BatchTransform", "MaskCollator", "MaskSampler", "StepSeeds", "mix_seed"]

AUG_TAG = 0x617567  # "aug": the batch transform's generator
SCOPES = ("global", "process")

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
    """The seeds of one batch: ``generator(*tags)`` is seeded with ``mix_seed(seed, rank, step,
    *tags)``; draws over the global batch (``rank=None``) use rank 0's seeds, so a single
    process draws the same in either scope. Each independent stream of a sampler takes its own
    tags, so adding a stream never shifts the draws of another.

    ``slots``: in the global scope, this process's rows of the global batch (a LongTensor), or
    None when the sampler's batch is this process's own.
    """

    __slots__ = ("seed", "rank", "step", "slots", "_state")

    def __init__(self, seed: int, rank: int | None, step: int, slots: torch.Tensor | None = None):
        self.seed, self.rank, self.step, self.slots = seed, rank, step, slots
        # mix_seed folds its parts in order: the (seed, rank, step) prefix is shared by every tag
        self._state = _absorb(_INIT, (seed, 0 if rank is None else rank, step))

    def seed_for(self, *tags: int) -> int:
        """``mix_seed(seed, rank, step, *tags)``."""
        return _absorb(self._state, tags) & 0x7FFFFFFFFFFFFFFF

    def generator(self, *tags: int) -> torch.Generator:
        """A fresh CPU generator seeded with :meth:`seed_for`."""
        return torch.Generator().manual_seed(self.seed_for(*tags))

    def __repr__(self) -> str:
        rank = "global" if self.rank is None else self.rank
        return f"StepSeeds(seed={self.seed}, rank={rank}, step={self.step})"


@runtime_checkable
class MaskSampler(Protocol):
    """What :class:`MaskCollator` asks of a sampler.

    Called once per batch with the number of samples to draw for, the batch's
    :class:`StepSeeds` and this process's collated (and transformed) inputs, for samplers that
    look at them; returns the batch fields it adds, e.g. ``{"masks_enc": [LongTensor [B, K],
    ...], "masks_pred": [...]}``: tensors (or lists / tuples of tensors) with one row per
    sample. It must draw every random number from ``seeds.generator(...)`` (never the global
    RNG), so the fields are a function of the seeds (and the inputs) only. In the global scope
    ``batch_size`` is the global batch and the collator keeps the rows ``seeds.slots``. A plain
    function fits too.
    """

    def __call__(self, batch_size: int, seeds: StepSeeds, inputs: Any = None) -> dict[str, Any]: ...


BatchTransform = Callable[..., Any]


class MaskCollator:
    """``collate_fn`` that batches ``(input, label)`` samples (or bare inputs; further tuple
    entries are dropped) and adds the fields of a mask sampler.

    Samples may carry a step stamp and a slot (:class:`jepa_core.data.Stamped`, from
    :class:`jepa_core.data.StepBatchSampler`); without stamps an internal counter stands in, as
    in the official collators, and a sample's slot is its place in the batch times
    ``world_size`` plus ``rank`` (the sampler's layout). Returns::

        {input_key: inputs, "labels": labels or None, **sampler fields, **transform fields, "num_bad": n}

    or ``{"skip": True, "num_bad": n}`` when every sample of the batch was corrupt (the trainer
    skips it); ``num_bad`` counts the corrupt samples dropped.

    Args:
        sampler: a :class:`MaskSampler`, or None for a method without masks.
        seed, rank, world_size: with the step, the seeds of every generator of a batch.
        input_key: the batch key of the collated inputs (``"images"``, ``"videos"``, ...).
        batch_transform: optional ``f(inputs, generator) -> inputs`` or
            ``-> (inputs, {field: value})`` applied to the collated inputs before the sampler,
            with a generator seeded by (seed, step, ``AUG_TAG``). One that also takes
            ``slots=`` and ``total=`` keywords is called, in the global scope, with this
            process's slots and the global batch size, and must draw its random parameters for
            all ``total`` samples and apply those of ``slots`` (process-count invariant); one
            that does not gets a generator seeded by (seed, rank, step, ``AUG_TAG``). One that
            takes a ``step=`` keyword also gets the batch's step (the loader step stamped on
            the samples, or the internal counter without stamps; see :meth:`step_of` and
            :func:`jepa_core.data.epoch_of_batch` for the epoch a method is in). The extra
            fields (e.g. augmentation parameters a predictor is conditioned on, or the epoch)
            join the batch.
        scope: ``"global"`` or ``"process"`` (see the module docstring).
    """

    def __init__(
        self,
        sampler: MaskSampler | None,
        seed: int = 0,
        rank: int = 0,
        input_key: str = "images",
        batch_transform: BatchTransform | None = None,
        world_size: int = 1,
        scope: str = "global",
    ):
        if scope not in SCOPES:
            raise ValueError(f"unknown mask scope {scope!r}; expected one of {list(SCOPES)}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0 .. world_size - 1 = {world_size - 1}")
        self.sampler = sampler
        self.seed, self.rank, self.world_size, self.scope = seed, rank, world_size, scope
        self.input_key = input_key
        self.batch_transform = batch_transform
        self._transform_takes_slots = batch_transform is not None and _takes_slots(batch_transform)
        self._transform_takes_step = batch_transform is not None and _takes_keyword(batch_transform, "step")
        self._counter = -1
        self.last_step: int | None = None
        """The step of the last batch this collator made (in this process: each DataLoader
        worker holds its own copy)."""

    def step_seeds(self, step: int, slots: torch.Tensor | None = None) -> StepSeeds:
        """The seeds of the batch at ``step``: rank-free in the global scope (``slots``: this
        process's rows of the global batch), keyed by this rank in the process scope."""
        if self.scope == "global":
            return StepSeeds(self.seed, None, step, slots)
        return StepSeeds(self.seed, self.rank, step)

    def step_of(self, samples: list) -> int | None:
        """The step stamped on ``samples`` (:class:`jepa_core.data.Stamped`, from the Trainer's
        loader: the loader batch's index, counting every micro-batch of ``optim.grad_accum``
        and any all-corrupt batch skipped, the same with any number of workers and after a
        resume), or None for unstamped samples (:meth:`__call__` then counts batches itself)."""
        s = next((x for x in samples if isinstance(x, Stamped)), None)
        return s.step if s is not None else None

    def __call__(self, samples: list) -> dict:
        slots = self._slots(samples)
        collated, step, num_bad = collate_stamped(samples)
        if step is None:
            self._counter += 1
            step = self._counter
        self.last_step = step
        if collated is None:  # every sample was corrupt: the trainer skips this batch
            return {"skip": True, "num_bad": num_bad}
        if isinstance(collated, torch.Tensor):
            inputs, labels = collated, None
        else:
            inputs, labels = collated[0], (collated[1] if len(collated) > 1 else None)
        is_global = self.scope == "global"
        total = len(samples) * self.world_size  # the global batch: every rank has len(samples)
        seeds = self.step_seeds(step, slots if is_global else None)
        extra: Mapping[str, Any] = {}
        if self.batch_transform is not None:
            kw: dict[str, Any] = {"step": step} if self._transform_takes_step else {}
            if is_global and self._transform_takes_slots:
                out = self.batch_transform(inputs, seeds.generator(AUG_TAG), slots=slots, total=total, **kw)
            else:
                out = self.batch_transform(inputs, StepSeeds(self.seed, self.rank, step).generator(AUG_TAG), **kw)
            inputs, extra = out if _is_with_fields(out) else (out, extra)
        fields: Mapping[str, Any] = {}
        if self.sampler is not None:
            if is_global:
                fields = _take_rows(self.sampler(total, seeds, inputs), slots, total)
            else:
                fields = self.sampler(_batch_size(inputs), seeds, inputs)
        batch = {self.input_key: inputs, "labels": labels, **fields, **extra}
        if len(batch) != 2 + len(fields) + len(extra) or "num_bad" in batch or "skip" in batch:
            _raise_clash(self.input_key, fields, extra)
        batch["num_bad"] = num_bad
        return batch

    def _slots(self, samples: list) -> torch.Tensor:
        """The global-batch slots of the good (not corrupt) samples, in batch order."""
        out = []
        for j, s in enumerate(samples):
            if isinstance(s, Stamped):
                if s.sample is None:
                    continue
                out.append(j * self.world_size + self.rank if s.slot is None else s.slot)
            elif s is not None:
                out.append(j * self.world_size + self.rank)
        return torch.tensor(out, dtype=torch.long)


def _takes_slots(fn) -> bool:
    """Whether a batch transform accepts the ``slots`` and ``total`` keywords."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "slots" in params and "total" in params


def _takes_keyword(fn, name: str) -> bool:
    """Whether ``fn`` accepts the keyword ``name`` (by name, not through ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    p = params.get(name)
    return p is not None and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _take_rows(fields: Mapping[str, Any], rows: torch.Tensor, total: int) -> dict[str, Any]:
    """This process's rows of a sampler's global-batch fields (tensors, or lists / tuples of
    them, with ``total`` rows)."""

    def take(name: str, value):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            if value.shape[0] != total:
                raise ValueError(
                    f"mask sampler field {name!r} has shape {tuple(value.shape)}, but in the global scope every "
                    f"field needs one row per sample of the global batch ({total}); give the sampler per-sample "
                    "fields or use scope='process'"
                )
            return value[rows]
        if isinstance(value, (list, tuple)):
            return type(value)(take(name, v) for v in value)
        return value  # a per-batch value (a scalar, a flag): kept as the sampler gave it

    return {name: take(name, value) for name, value in fields.items()}


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
