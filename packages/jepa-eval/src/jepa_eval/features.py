"""Frozen features of any encoder that maps inputs to tokens ``[B, N, D]`` (or features ``[B, D]``).

Corrupt samples: a dataset that raises :class:`jepa_core.data.CorruptSampleError` for a sample
(as the training loader, which skips and counts them) is not fatal here either. The extraction
skips the sample and records it in a :class:`CorruptSamples` (one per split); passing the same
one to every extraction of a table makes all encoders see the same samples (a sample found bad
once is left out of later passes), and it raises :class:`TooManyCorruptSamplesError` when more
than ``max_bad_fraction`` of the split is bad.
"""

from __future__ import annotations

import logging

import torch
from jepa_core.data import CorruptSampleError
from jepa_core.nn.interfaces import Encoder
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

log = logging.getLogger(__name__)

__all__ = ["CorruptSamples", "TooManyCorruptSamplesError", "extract_features", "iterate_samples"]


class TooManyCorruptSamplesError(RuntimeError):
    """More corrupt samples in an evaluation split than ``max_bad_fraction`` allows."""


class CorruptSamples:
    """The corrupt samples of one evaluation split (``dataset``, its first ``max_samples``).

    :attr:`bad` maps a dataset index to its error. Extractions given this object read only
    :meth:`indices` (the samples not yet found bad) and add what they find, so every encoder
    of a table is scored on the same samples. ``max_bad_fraction``: more bad samples than this
    fraction of the split raise :class:`TooManyCorruptSamplesError` (None: no limit).
    """

    def __init__(self, dataset: Dataset, max_samples: int | None = None, max_bad_fraction: float | None = None,
                 name: str = "evaluation"):
        self.dataset, self.name, self.max_bad_fraction = dataset, name, max_bad_fraction
        n = len(dataset)  # type: ignore[arg-type]
        self.size = n if max_samples is None else min(max_samples, n)
        self.bad: dict[int, str] = {}
        self.passes = 0  # completed extractions
        self.late = 0  # bad samples found after an earlier pass had read them fine

    def __len__(self) -> int:
        return len(self.bad)

    def indices(self) -> list[int]:
        return [i for i in range(self.size) if i not in self.bad]

    def add(self, index: int, error: str) -> None:
        if index in self.bad:
            return
        self.bad[index] = error
        log.warning("skipping corrupt %s sample %d: %s", self.name, index, error)
        if self.passes:
            self.late += 1
            log.warning("%s sample %d failed only now, after an earlier encoder read it: the rows of the table "
                        "may differ by this sample", self.name, index)

    def check(self) -> None:
        limit = self.max_bad_fraction
        if limit is None or len(self.bad) <= limit * self.size:
            return
        first = next(iter(self.bad.items()))
        raise TooManyCorruptSamplesError(
            f"{len(self.bad)} of {self.size} {self.name} samples are corrupt (more than max_bad_fraction={limit}; "
            f"`jepa pretrain` / `jepa eval` use train.max_bad_fraction); first: sample {first[0]}: {first[1]}. "
            "Check the dataset, or raise the limit"
        )

    def clean(self, all_samples: bool = False) -> Subset:
        """The dataset without the bad samples: the first ``max_samples``, or with ``all_samples``
        every sample (e.g. for fine-tuning, which reads the whole split)."""
        n = len(self.dataset) if all_samples else self.size  # type: ignore[arg-type]
        return Subset(self.dataset, [i for i in range(n) if i not in self.bad])

    def keep(self, indices: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the ``indices`` not (yet) known bad."""
        return torch.tensor([int(i) not in self.bad for i in indices.tolist()], dtype=torch.bool)


class _Guarded(Dataset):
    """``(index, sample or None, error)`` of ``dataset[indices[i]]``; a corrupt sample is None."""

    def __init__(self, dataset: Dataset, indices: list[int]):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        j = self.indices[i]
        try:
            return j, self.dataset[j], None
        except CorruptSampleError as err:
            return j, None, str(err) or type(err).__name__


def _collate(batch: list):
    good = [(j, s) for j, s, _ in batch if s is not None]
    bad = [(j, e) for j, s, e in batch if s is None]
    collated = default_collate([s for _, s in good]) if good else None
    return collated, torch.tensor([j for j, _ in good], dtype=torch.long), bad


def iterate_samples(dataset: Dataset, batch_size: int, corrupt: CorruptSamples | None = None,
                    max_samples: int | None = None, num_workers: int = 0):
    """Yield ``(batch, dataset indices)`` of the samples of ``dataset`` in order, skipping the
    corrupt ones (recorded in ``corrupt``; a new :class:`CorruptSamples` when None). Checks the
    limit of ``corrupt`` at the end."""
    if corrupt is None:
        corrupt = CorruptSamples(dataset, max_samples)
    elif corrupt.dataset is not dataset:
        raise ValueError("`corrupt` tracks another dataset")
    loader = DataLoader(_Guarded(dataset, corrupt.indices()), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=_collate)
    for batch, idx, bad in loader:
        for j, err in bad:
            corrupt.add(j, err)
        if batch is not None:
            yield batch, idx
    corrupt.passes += 1
    corrupt.check()


@torch.no_grad()
def extract_features(
    encoder: nn.Module | None,
    dataset: Dataset,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    max_samples: int | None = None,
    last_layers: int = 1,
    progress: bool = True,
    corrupt: CorruptSamples | None = None,
    return_indices: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Mean-pooled last-layer tokens (the I-JEPA protocol: no class token, average pooling;
    ijepa issue #36) of every sample, as float32 on CPU, with the labels.

    ``last_layers=k > 1``: the mean-pooled outputs of each of the last k blocks (each through
    the final norm), concatenated; needs a :class:`jepa_core.nn.interfaces.Encoder` (``depth``,
    ``return_layers``). ``encoder=None`` gives the raw inputs, flattened (the raw-pixel baseline).

    Samples whose dataset raises :class:`jepa_core.data.CorruptSampleError` are skipped and
    recorded in ``corrupt`` (see :class:`CorruptSamples`; its size replaces ``max_samples``).
    ``return_indices``: also return the dataset index of each row.
    """
    layers = None
    if encoder is not None and last_layers > 1:
        if not isinstance(encoder, Encoder):
            raise ValueError("last_layers > 1 needs an encoder with `depth` and `return_layers` "
                             "(jepa_core.nn.interfaces.Encoder)")
        layers = list(range(encoder.depth - last_layers, encoder.depth))
    if encoder is not None:
        was_training = encoder.training
        encoder.eval()
    feats, labels, indices = [], [], []
    from tqdm.auto import tqdm

    desc = "raw inputs" if encoder is None else "features"
    if corrupt is None:
        corrupt = CorruptSamples(dataset, max_samples)
    batches = iterate_samples(dataset, batch_size, corrupt)
    total = -(-(corrupt.size - len(corrupt)) // batch_size)
    try:
        for (x, y), idx in tqdm(batches, total=total, desc=desc, leave=False, disable=not progress):
            x = x.to(device)
            if encoder is None:
                f = x.flatten(1)
            else:
                if layers is not None:
                    f = torch.cat([t.mean(dim=1) for t in encoder(x, return_layers=layers)], dim=1)
                else:
                    out = encoder(x)
                    f = out.mean(dim=1) if out.ndim == 3 else out
            feats.append(f.float().cpu())
            labels.append(torch.as_tensor(y).cpu())
            indices.append(idx)
    finally:
        if encoder is not None and was_training:
            encoder.train()
    if not feats:
        raise ValueError("no samples to extract features from (the dataset is empty or every sample is corrupt)")
    out = (torch.cat(feats), torch.cat(labels).long())
    return (*out, torch.cat(indices)) if return_indices else out
