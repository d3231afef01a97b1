"""The interface every JEPA method implements, so the Trainer can run any of them.

A method is an ``nn.Module`` whose ``forward(batch)`` is one training step's loss. The Trainer
asks it, through the hooks below, which modules to train (:meth:`JEPAMethod.trainable_modules`),
which modules are targets that follow the trained ones without gradients
(:meth:`~JEPAMethod.target_modules`, :meth:`~JEPAMethod.update_target`), how to build its
optimizer (:meth:`~JEPAMethod.build_optimizer`) and which encoder to evaluate
(:meth:`~JEPAMethod.eval_encoder`). The defaults are those of I-JEPA and V-JEPA (an ``encoder``,
a ``predictor``, an EMA ``target_encoder``, AdamW); a method without an EMA target or with
another optimizer overrides a hook, never the Trainer.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from jepa_core.target import EMATarget


class JEPAMethod(nn.Module):
    """One training step in ``forward(batch) -> {"loss": scalar tensor, other scalars to log}``.

    A method does not touch devices, precision, distribution, logging or checkpoints: the
    Trainer does. Its state-dict names are its attribute names; the I-JEPA and V-JEPA methods
    keep the official checkpoints' entries ``encoder``, ``predictor``, ``target_encoder``.

    Hooks (each has a default; override the ones that do not fit):

    - :meth:`trainable_modules`: what the optimizer trains and DDP / FSDP wrap;
    - :meth:`target_modules`: targets updated without gradients (none: ``{}``);
    - :meth:`update_target`: called after each optimizer step when there are targets;
    - :meth:`build_optimizer`: the optimizer (default: the official AdamW groups);
    - :meth:`eval_encoder`: the encoder that evaluators probe;
    - :meth:`idle_parameters`: parameters a step left unused (their gradients are dropped).
    """

    encoder: nn.Module

    def trainable_modules(self) -> dict[str, nn.Module]:
        """Modules the optimizer trains, in the official parameter-group order (default:
        ``encoder`` then ``predictor``, those the method has). DDP wraps and FSDP shards exactly
        these; gradients are clipped per module."""
        modules = {name: getattr(self, name) for name in ("encoder", "predictor")
                   if isinstance(getattr(self, name, None), nn.Module)}
        if not modules:
            raise NotImplementedError(
                f"{type(self).__name__} has neither an `encoder` nor a `predictor` module: override "
                "trainable_modules() to return {name: module} of the modules to train"
            )
        return modules

    def target_modules(self) -> dict[str, nn.Module]:
        """Modules that are targets: updated by :meth:`update_target`, never by gradients.
        Default: ``{"target_encoder": self.target_encoder}`` when the method has one, else ``{}``
        (then the Trainer neither computes the momentum schedule nor calls ``update_target``).

        The Trainer broadcasts them from rank 0 under DDP and shards them under FSDP (an
        :class:`~jepa_core.target.EMATarget` through its inner module, like the encoder it
        follows, so that the EMA update runs on local shards)."""
        target = getattr(self, "target_encoder", None)
        return {"target_encoder": target} if isinstance(target, nn.Module) else {}

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """After each optimizer step that was not skipped: ``target <- m * target + (1 - m) *
        encoder`` (ijepa:src/train.py), ``m`` from the momentum schedule (``optim.ema``).
        No-op without a target; a method with other targets overrides it."""
        target = getattr(self, "target_encoder", None)
        if isinstance(target, EMATarget):
            target.update(self.encoder, momentum)

    def build_optimizer(self, optim_cfg, lr: float, device: torch.device) -> torch.optim.Optimizer:
        """The optimizer over :meth:`trainable_modules`; ``optim_cfg`` is the run's
        :class:`~jepa_core.config.OptimConfig`, ``lr`` its start LR after batch scaling.

        Default: AdamW with the official parameter groups, decayed then not decayed per module
        (ijepa:src/helper.py ``init_opt``), fused on CUDA and CPU
        (:func:`jepa_core.optim.official_adamw`).

        Every step the Trainer sets each group's ``lr`` from the LR schedule and, in groups
        without ``WD_exclude=True``, ``weight_decay`` from the WD schedule; any
        ``torch.optim.Optimizer`` with those group keys works (SGD, LARS, ...)."""
        from jepa_core.optim import official_adamw

        return official_adamw(self.trainable_modules(), optim_cfg, lr, device)

    def explain_checkpoint_mismatch(self, missing: list[str], unexpected: list[str]) -> str | None:
        """Why a checkpoint whose state dict lacks ``missing`` and has ``unexpected`` entries
        does not fit this method, and the fix, when the method knows a likely cause (e.g. a
        checkpoint of a parent method without this one's extra modules); None: the generic
        message (an architecture change)."""
        return None

    def idle_parameters(self) -> Iterable[nn.Parameter]:
        """Trainable parameters the last forward left unused on purpose (default: none), e.g. a
        module that only joins the loss after some epoch. The Trainer sets their gradients to
        None after the backward pass, so the optimizer leaves them alone as it does in one
        process: under DDP every wrapped parameter must receive a gradient, so a method feeds
        such a module a zero one (``0 * p.sum()``), and AdamW would then decay it and advance its
        moments and step count where a single process does not."""
        return ()

    def eval_encoder(self) -> nn.Module:
        """The encoder to evaluate: the EMA target's module when there is one, as the official
        evaluations load ``target_encoder`` (ijepa:src/train.py checkpoints,
        jepa:evals/video_classification_frozen/eval.py), else ``self.encoder``."""
        target = getattr(self, "target_encoder", None)
        return target.module if isinstance(target, EMATarget) else self.encoder
