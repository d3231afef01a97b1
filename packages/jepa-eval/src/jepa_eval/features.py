"""Frozen features of any encoder that maps inputs to tokens ``[B, N, D]`` (or features ``[B, D]``)."""

from __future__ import annotations

import torch
from jepa_core.nn.interfaces import Encoder
from torch import nn
from torch.utils.data import DataLoader, Dataset


@torch.no_grad()
def extract_features(
    encoder: nn.Module | None,
    dataset: Dataset,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    max_samples: int | None = None,
    last_layers: int = 1,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-pooled last-layer tokens (the I-JEPA protocol: no class token, average pooling;
    ijepa issue #36) of every sample, as float32 on CPU, with the labels.

    ``last_layers=k > 1``: the mean-pooled outputs of each of the last k blocks (each through
    the final norm), concatenated; needs a :class:`jepa_core.nn.interfaces.Encoder` (``depth``,
    ``return_layers``). ``encoder=None`` gives the raw inputs, flattened (the raw-pixel baseline).
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
    indices = range(len(dataset)) if max_samples is None else range(min(max_samples, len(dataset)))
    subset = torch.utils.data.Subset(dataset, list(indices))
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=0)
    feats, labels = [], []
    from tqdm.auto import tqdm

    desc = "raw inputs" if encoder is None else "features"
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not progress):
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
    if encoder is not None and was_training:
        encoder.train()
    return torch.cat(feats), torch.cat(labels).long()
