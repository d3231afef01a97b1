"""Per-iteration schedules, as pure functions of the 0-based optimizer step.

The official schedulers are stateful objects stepped once per iteration *before* the forward
(ijepa:src/utils/schedulers.py); ``value(step)`` here returns what they return on their
``step + 1``-th call, so a resumed run needs no fast-forwarding. Lengths follow the official
``T_max = int(ipe_scale * epochs * ipe)``, so with ``ipe_scale > 1`` (V-JEPA's 1.25) a run stops
before the schedules reach their final values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class WarmupCosine:
    """Linear warm-up from ``start`` to ``ref`` over ``warmup_steps``, then cosine to ``final``
    over ``T_max - warmup_steps`` (``WarmupCosineSchedule``)."""

    start: float
    ref: float
    final: float
    warmup_steps: int
    T_max: int

    def value(self, step: int) -> float:
        s = step + 1
        if s < self.warmup_steps:
            return self.start + (s / max(1, self.warmup_steps)) * (self.ref - self.start)
        progress = (s - self.warmup_steps) / max(1, self.T_max - self.warmup_steps)
        return max(self.final, self.final + (self.ref - self.final) * 0.5 * (1.0 + math.cos(math.pi * progress)))


@dataclass(frozen=True)
class WarmupConstant:
    """Linear warm-up, then constant (V-JEPA 2's pretraining phase: a cosine whose final LR
    equals its reference LR)."""

    start: float
    ref: float
    warmup_steps: int

    def value(self, step: int) -> float:
        s = step + 1
        if s < self.warmup_steps:
            return self.start + (s / max(1, self.warmup_steps)) * (self.ref - self.start)
        return self.ref


@dataclass(frozen=True)
class LinearDecay:
    """Linear from ``ref`` towards ``final`` over ``T_max`` steps (vjepa2:src/utils/schedulers.py
    ``LinearDecaySchedule``, the V-JEPA 2 cooldown). With ``ipe_scale`` 1.25 the run stops at 80 %
    of the way, so the cooldown LR ends near 1.06e-4, not 1e-6 (vjepa2:configs/train/vitl16/cooldown-256px-64f.yaml)."""

    ref: float
    final: float
    T_max: int

    def value(self, step: int) -> float:
        progress = (step + 1) / max(1, self.T_max)
        return self.ref + progress * (self.final - self.ref)


@dataclass(frozen=True)
class CosineWD:
    """Cosine from ``ref`` to ``final`` over ``T_max`` (``CosineWDSchedule``), clamped at
    ``final`` in the direction of travel. I-JEPA's weight decay *rises* 0.04 -> 0.4."""

    ref: float
    final: float
    T_max: int

    def value(self, step: int) -> float:
        progress = (step + 1) / max(1, self.T_max)
        wd = self.final + (self.ref - self.final) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(self.final, wd) if self.final <= self.ref else min(self.final, wd)


@dataclass(frozen=True)
class LinearMomentum:
    """EMA momentum ``m_i = start + i * (end - start) / T_max`` (ijepa:src/train.py
    ``momentum_scheduler``); the first step uses ``start``."""

    start: float
    end: float
    T_max: int

    def value(self, step: int) -> float:
        return self.start + step * (self.end - self.start) / max(1, self.T_max)


@dataclass(frozen=True)
class Constant:
    v: float

    def value(self, step: int) -> float:
        return self.v


def schedule_length(epochs: float, ipe: int, ipe_scale: float = 1.0) -> int:
    """``T_max = int(ipe_scale * epochs * ipe)`` as in the official ``init_opt``."""
    return int(ipe_scale * epochs * ipe)
