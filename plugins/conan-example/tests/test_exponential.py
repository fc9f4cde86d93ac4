"""The plugin runs conan_core's conformance suite on its own key, plus its own checks."""

import math

import pytest

from conan_core.registries import REGISTRIES
from conan_core.testing import check_component


def test_discovered_with_origin():
    reg = REGISTRIES["mask_schedules"]
    assert "example/exponential" in reg.keys()
    assert reg.origin("example/exponential").startswith("plugin conan-example")


def test_conformance():
    check_component("mask_schedules", "example/exponential")


@pytest.mark.parametrize("rate", [-4.0, 0.0, 3.0])
def test_endpoints_and_monotone(rate):
    sched = REGISTRIES["mask_schedules"].build({"type": "example/exponential", "rate": rate})
    values = [sched.alpha(t, 50) for t in range(51)]
    assert values[0] == 0.0 and math.isclose(values[-1], 1.0)
    assert all(b >= a for a, b in zip(values, values[1:]))


def test_rate_shapes_the_curve():
    late = REGISTRIES["mask_schedules"].build({"type": "example/exponential", "rate": 3.0})
    early = REGISTRIES["mask_schedules"].build({"type": "example/exponential", "rate": -3.0})
    assert late.alpha(50, 100) < 0.5 < early.alpha(50, 100)
