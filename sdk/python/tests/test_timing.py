"""The learner's own timing, signed into each manifest as trainMs/waitMs (the goodput panel)."""

import math

import pytest

from sovereign_sdk import Learner


def test_waited_refuses_what_is_not_a_duration(env):
    learner = Learner.from_env(env)
    for bad in (-1.0, math.nan, -math.inf):
        with pytest.raises(ValueError, match="must be ≥ 0"):
            learner.waited(bad)
    learner.waited(1.5)
    assert learner._timing(None, None)["wait_ms"] == 1500


def test_timing_given_or_measured_and_never_negative(env):
    learner = Learner.from_env(env)
    assert learner._timing(2.0, 0.25) == {"train_ms": 2000, "wait_ms": 250}
    # Told more waiting than the interval lasted: training is 0, not negative.
    learner.waited(3600)
    assert learner._timing(None, None) == {"train_ms": 0, "wait_ms": 3600000}
    for train, wait in ((-1.0, None), (None, -1.0), (math.nan, None), (None, math.nan)):
        with pytest.raises(ValueError, match="must be ≥ 0"):
            learner._timing(train, wait)
