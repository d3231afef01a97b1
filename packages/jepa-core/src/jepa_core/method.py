"""The interface every JEPA method implements, so the Trainer can run any of them."""

from __future__ import annotations

import torch
from torch import nn

from jepa_core.target import EMATarget


class JEPAMethod(nn.Module):
    """A method composes an ``encoder``, a ``predictor`` and an EMA ``target_encoder`` and defines
    one training step in ``forward(batch) -> {"loss": ..., other scalars to log}``.

    It does not touch devices, precision, distribution, logging or checkpoints: the Trainer
    does. The state-dict top-level names (``encoder``, ``predictor``, ``target_encoder``) are
    the names of the official checkpoints' entries.
    """

    encoder: nn.Module
    predictor: nn.Module
    target_encoder: EMATarget

    def trainable_modules(self) -> dict[str, nn.Module]:
        """Modules the optimizer trains, in the official parameter-group order."""
        return {"encoder": self.encoder, "predictor": self.predictor}

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        self.target_encoder.update(self.encoder, momentum)

    def eval_encoder(self) -> nn.Module:
        """The encoder to evaluate: the EMA target, as the official evaluations do (reference A.5)."""
        return self.target_encoder.module
