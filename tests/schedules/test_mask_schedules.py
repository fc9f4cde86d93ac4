"""Mask schedules: endpoints, shapes, monotonicity, warm-up / hold, time base, validation."""

from __future__ import annotations

import math

import pytest

from conan_core.errors import ConanError, ConfigError
from conan_core.registries import REGISTRIES

SCHEDULES = REGISTRIES["mask_schedules"]
RAMPS = ["linear", "accelerating", "decelerating", "cosine", "step"]
MID = {"linear": 0.5, "accelerating": 0.25, "decelerating": 0.75, "cosine": 0.5, "step": 1.0}
QUARTER = {"linear": 0.25, "accelerating": 0.0625, "decelerating": 0.4375,
           "cosine": 0.5 - 0.5 * math.cos(math.pi / 4), "step": 0.0}


def build(key: str, **fields):
    return SCHEDULES.build({"type": key, **fields})


def test_every_key_builds_from_defaults():
    assert set(RAMPS + ["constant"]) <= set(SCHEDULES.keys())
    for key in RAMPS + ["constant"]:
        value = build(key).alpha(3, 10)
        assert 0.0 <= value <= 1.0


@pytest.mark.parametrize("key", RAMPS)
def test_endpoints_shape_and_monotone(key):
    s = build(key)
    total = 40
    values = [s.alpha(t, total) for t in range(total + 1)]
    assert values[0] == 0.0 and values[-1] == 1.0
    assert s.alpha(20, total) == pytest.approx(MID[key], abs=1e-12)
    assert s.alpha(10, total) == pytest.approx(QUARTER[key], abs=1e-12)
    assert all(b >= a for a, b in zip(values, values[1:]))
    # past the end and before the start: clamped to the end values
    assert s.alpha(total + 7, total) == 1.0 and s.alpha(-3, total) == 0.0


def test_linear_is_t_over_tau():
    s = build("linear")
    for t in range(0, 101, 7):
        assert s.alpha(t, 100) == pytest.approx(t / 100, abs=1e-15)


def test_step_jumps_at_fraction():
    s = build("step", at=0.3)
    values = [s.alpha(t, 10) for t in range(11)]
    assert values == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("key", RAMPS)
def test_warmup_and_hold(key):
    s = build(key, warmup_steps=10, hold_steps=20)
    total = 100
    assert all(s.alpha(t, total) == 0.0 for t in range(0, 11))
    assert all(s.alpha(t, total) == 1.0 for t in range(80, 101))
    # the ramp runs over [10, 80]: its midpoint is step 45
    assert s.alpha(45, total) == pytest.approx(MID[key], abs=1e-12)
    frac = build(key, hold_fraction=0.25)
    assert frac.alpha(75, 100) == 1.0
    assert frac.alpha(74, 100) < 1.0 or key == "step"  # step is already at end past its switch
    assert frac.window(100) == (0, 75)
    # the larger of hold_steps and hold_fraction wins
    assert build(key, hold_steps=5, hold_fraction=0.25).window(100) == (0, 75)
    assert build(key, hold_steps=30, hold_fraction=0.25).window(100) == (0, 70)


def test_start_end_and_clamp():
    s = build("linear", start=0.2, end=0.6)
    assert s.alpha(0, 10) == pytest.approx(0.2) and s.alpha(10, 10) == pytest.approx(0.6)
    assert s.alpha(5, 10) == pytest.approx(0.4)
    down = build("cosine", start=1.0, end=0.0)
    values = [down.alpha(t, 16) for t in range(17)]
    assert values[0] == 1.0 and values[-1] == 0.0
    assert all(b <= a for a, b in zip(values, values[1:]))
    assert all(0.0 <= v <= 1.0 for v in values)


def test_degenerate_window():
    s = build("linear", warmup_steps=8, hold_steps=8)  # window empty for 10 steps
    assert [s.alpha(t, 10) for t in (0, 8, 9, 10)] == [0.0, 0.0, 1.0, 1.0]


def test_total_steps_in_config_wins_and_missing_total_raises():
    s = build("linear", total_steps=10)
    assert s.alpha(5, 1000) == pytest.approx(0.5)
    assert s.alpha(5) == pytest.approx(0.5)
    with pytest.raises(ConanError, match="total_steps"):
        build("linear").alpha(5)
    with pytest.raises(ConanError, match="total_steps"):
        build("cosine").alpha(0, 0)


def test_constant():
    assert build("constant").alpha(0, 10) == 1.0
    s = build("constant", value=0.3)
    assert {s.alpha(t, 10) for t in range(11)} == {0.3}


def test_pure_function_of_step():
    s = build("decelerating")
    first = [s.alpha(t, 33) for t in range(34)]
    assert [s.alpha(t, 33) for t in reversed(range(34))] == first[::-1]


def test_invalid_fields():
    for spec in ({"type": "linear", "start": 1.5}, {"type": "linear", "warmup_steps": -1},
                 {"type": "step", "at": 2.0}, {"type": "linear", "total_steps": 0},
                 {"type": "constant", "value": -0.1}, {"type": "constant", "warmup_steps": 3},
                 {"type": "linear", "hold_fraction": 1.0}):
        with pytest.raises(ConfigError):
            SCHEDULES.build(spec)
