"""Optimizer parameter groups with the official no-decay rule, and the default optimizer of
:meth:`jepa_core.method.JEPAMethod.build_optimizer`."""

from __future__ import annotations

import torch
from torch import nn


def param_groups(modules: dict[str, nn.Module]) -> list[dict]:
    """Two groups per module: decayed and not decayed.

    A parameter is not decayed if its name contains ``bias`` or it is 1-D (LayerNorm weights);
    mask tokens ``[1, 1, D]`` and position tables are decayed (they are >= 2-D), as in the
    official ``init_opt`` (ijepa:src/helper.py). Frozen parameters are left out. Groups carry
    ``WD_exclude`` so that the weight-decay schedule skips the no-decay groups.
    """
    decayed, not_decayed = [], []  # official order: all decayed groups, then the others
    for name, module in modules.items():
        decay: list[torch.nn.Parameter] = []
        no_decay: list[torch.nn.Parameter] = []
        for pname, p in module.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if ("bias" in pname or p.ndim == 1) else decay).append(p)
        decayed.append({"name": f"{name}.decay", "params": decay})
        not_decayed.append({"name": f"{name}.no_decay", "params": no_decay, "WD_exclude": True, "weight_decay": 0.0})
    return [g for g in decayed + not_decayed if g["params"]]


def adamw_kwargs(device) -> dict:
    """AdamW's fastest implementation for ``device``: ``fused`` on CUDA and CPU (one kernel over
    all parameters; on CPU about 3x faster than ``foreach`` for a ViT-Tiny), ``foreach``
    elsewhere. torch's default on CPU is a loop over parameters. Same update as the default
    implementation up to float rounding."""
    return {"fused": True} if torch.device(device).type in ("cuda", "cpu") else {"foreach": True}


def official_adamw(modules: dict[str, nn.Module], optim_cfg, lr: float, device) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` of ``modules`` with ``optim_cfg``'s betas, eps and start
    weight decay, at learning rate ``lr`` (ijepa:src/helper.py ``init_opt``; the Trainer then sets
    ``lr`` and ``weight_decay`` every step), in the fastest implementation for ``device``
    (:func:`adamw_kwargs`)."""
    return torch.optim.AdamW(
        param_groups(modules), lr=lr, betas=optim_cfg.betas, eps=optim_cfg.eps,
        weight_decay=optim_cfg.weight_decay, **adamw_kwargs(device),
    )


def maybe_compile(net: nn.Module, enabled: bool) -> nn.Module:
    """``torch.compile(net)`` when ``enabled`` (``train.compile``), else ``net``.

    Only the forward that the trainer calls is compiled; parameters, state dicts and the EMA
    target stay those of the wrapped module (call ``update_target`` etc. on the original).
    Mask lengths change from batch to batch, so shapes are marked dynamic after the first
    recompile (torch's default); with ``mask.buckets=N`` (:mod:`jepa_core.masks.buckets`) the
    step sees at most N static shapes per mask and compiles once per bucket instead."""
    if not enabled:
        return net
    return torch.compile(net)  # type: ignore[return-value]  # an OptimizedModule, a Module at run time
