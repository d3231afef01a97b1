"""Per-iteration schedules against hand-computed values (ijepa:src/utils/schedulers.py, src/helper.py
``init_opt``; jepa:app/vjepa/utils.py; vjepa2:src/utils/schedulers.py)."""

from __future__ import annotations

import math

import pytest
from jepa_core.schedules import (
    Constant,
    CosineWD,
    LinearMomentum,
    WarmupConstant,
    WarmupCosine,
    schedule_length,
)


def test_warmup_cosine_hand_values():
    s = WarmupCosine(start=2e-4, ref=1e-3, final=1e-6, warmup_steps=10, T_max=110)
    # first call (step 0) is the official s = 1: start + 1/10 of the way
    assert s.value(0) == pytest.approx(2e-4 + 0.1 * 8e-4, rel=1e-12)
    assert s.value(4) == pytest.approx(2e-4 + 0.5 * 8e-4, rel=1e-12)
    assert s.value(8) == pytest.approx(2e-4 + 0.9 * 8e-4, rel=1e-12)
    # s = 10 = warmup: cosine at progress 0 -> ref
    assert s.value(9) == pytest.approx(1e-3, rel=1e-12)
    # s = 60: progress (60 - 10) / (110 - 10) = 0.5 -> midpoint of ref and final
    assert s.value(59) == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5, rel=1e-12)
    # s = 35: progress 0.25
    assert s.value(34) == pytest.approx(
        1e-6 + (1e-3 - 1e-6) * 0.5 * (1 + math.cos(math.pi * 0.25)), rel=1e-12
    )
    # s = T_max: final
    assert s.value(109) == pytest.approx(1e-6, rel=1e-9)
    # past T_max the cosine would come back up; the official max(final, .) does not clamp that,
    # but before T_max the value never drops below final
    assert all(s.value(i) >= 1e-6 for i in range(110))


def test_warmup_cosine_is_monotone_in_each_phase():
    s = WarmupCosine(start=0.0, ref=1.0, final=0.1, warmup_steps=5, T_max=50)
    warm = [s.value(i) for i in range(5)]
    cos = [s.value(i) for i in range(4, 50)]
    assert all(a < b for a, b in zip(warm, warm[1:]))
    assert all(a > b for a, b in zip(cos, cos[1:]))


def test_warmup_cosine_final_clamp():
    # the official max(final, .): with final above ref the cosine phase is held at final
    s = WarmupCosine(start=0.0, ref=0.1, final=0.5, warmup_steps=4, T_max=10)
    assert s.value(0) == pytest.approx(0.025)  # warm-up is not clamped
    assert all(s.value(i) == 0.5 for i in range(3, 12))


def test_warmup_constant():
    s = WarmupConstant(start=1e-4, ref=5e-4, warmup_steps=4)
    assert s.value(0) == pytest.approx(1e-4 + 0.25 * 4e-4)
    assert s.value(2) == pytest.approx(1e-4 + 0.75 * 4e-4)
    assert s.value(3) == pytest.approx(5e-4)
    assert s.value(1000) == pytest.approx(5e-4)


def test_cosine_wd_increasing():
    s = CosineWD(ref=0.04, final=0.4, T_max=100)
    # value(step) = official call step + 1
    assert s.value(49) == pytest.approx(0.22, rel=1e-12)  # progress 0.5
    assert s.value(99) == pytest.approx(0.4, rel=1e-12)
    assert s.value(0) == pytest.approx(
        0.4 + (0.04 - 0.4) * 0.5 * (1 + math.cos(math.pi / 100)), rel=1e-12
    )
    assert s.value(24) == pytest.approx(
        0.4 - 0.36 * 0.5 * (1 + math.cos(math.pi * 0.25)), rel=1e-12
    )
    vals = [s.value(i) for i in range(100)]
    assert all(a < b for a, b in zip(vals, vals[1:]))
    # clamped in the direction of travel: never above the final 0.4
    assert all(s.value(i) <= 0.4 + 1e-12 for i in range(300))


def test_cosine_wd_decreasing_clamps_at_final():
    s = CosineWD(ref=0.4, final=0.04, T_max=10)
    assert s.value(4) == pytest.approx(0.22)
    assert all(s.value(i) >= 0.04 - 1e-12 for i in range(30))


def test_linear_momentum():
    s = LinearMomentum(start=0.996, end=1.0, T_max=1000)
    assert s.value(0) == 0.996
    assert s.value(1000) == pytest.approx(1.0, abs=1e-15)
    assert s.value(500) == pytest.approx(0.998, abs=1e-15)
    assert s.value(1) == pytest.approx(0.996 + 0.004 / 1000, abs=1e-15)


def test_constant_and_schedule_length():
    assert Constant(0.3).value(12345) == 0.3
    assert schedule_length(300, 625) == 187500
    assert schedule_length(10, 7, 1.25) == 87  # int(87.5)
    assert schedule_length(2.5, 3) == 7  # int(7.5), fractional epochs


def test_linear_decay_matches_the_v_jepa_2_cooldown():
    from jepa_core.schedules import LinearDecay

    # V-JEPA 2 cooldown: 5.25e-4 -> 1e-6 over 1.25 * 40 * 300 = 15000 steps, run for 12000.
    s = LinearDecay(5.25e-4, 1e-6, schedule_length(40, 300, 1.25))
    assert s.value(0) == pytest.approx(5.25e-4 + (1e-6 - 5.25e-4) / 15000)
    assert s.value(7499) == pytest.approx((5.25e-4 + 1e-6) / 2)
    assert s.value(11999) == pytest.approx(5.25e-4 + 0.8 * (1e-6 - 5.25e-4))  # about 1.06e-4
    assert s.value(11999) == pytest.approx(1.058e-4, rel=1e-3)
