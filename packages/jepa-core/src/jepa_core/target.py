"""The EMA target encoder and target normalisation."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def normalize_targets(h: torch.Tensor) -> torch.Tensor:
    """Parameter-free LayerNorm over the feature dim (eps 1e-5), applied after the target
    encoder's own affine final norm (ijepa:src/train.py, jepa:app/vjepa/train.py, vjepa2:app/vjepa/train.py)."""
    return F.layer_norm(h, (h.size(-1),))


class EMATarget(nn.Module):
    """A frozen copy of an encoder that follows it by exponential moving average.

    ``update(online, m)``: ``theta_t <- m * theta_t + (1 - m) * theta_online`` over parameters
    (ijepa:src/train.py), done with two ``torch._foreach`` kernels instead of a Python loop over
    parameters. Buffers are copied. The target is never wrapped in DDP: it gets no gradients.
    Under FSDP2 both are sharded alike and the update runs on the local shards.
    """

    def __init__(self, online: nn.Module):
        super().__init__()
        self.module = copy.deepcopy(online)
        self.module.requires_grad_(False)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update(self, online: nn.Module, momentum: float) -> None:
        # Under FSDP2 a root module may keep its gathered parameters after a forward; put both
        # back on their shards, which line up (same module structure, same sharding).
        for module in (self.module, online):
            reshard = getattr(module, "reshard", None)
            if callable(reshard):
                reshard()
        # Only the parameters the online encoder trains; frozen ones (pos_embed) never change.
        pairs = [(t, o) for t, o in zip(self.module.parameters(), online.parameters()) if o.requires_grad]
        tgt = [_local(t) for t, _ in pairs]
        src = [_local(o.detach()) for _, o in pairs]
        torch._foreach_mul_(tgt, momentum)
        torch._foreach_add_(tgt, src, alpha=1.0 - momentum)
        for bt, bo in zip(self.module.buffers(), online.buffers()):
            bt.copy_(bo)


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of an FSDP2 (DTensor) parameter, sharing its storage; else ``t``."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t
