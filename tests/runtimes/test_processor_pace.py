"""The processor's pace: events a second of its busy time, of its recent steps."""

from __future__ import annotations

import pytest

from ringfence.runtimes.embedded.pace import Pace


def test_the_pace_is_unknown_until_a_step_and_follows_the_recent_steps() -> None:
    pace = Pace()
    assert pace.rate() is None
    pace.add(1_000, 0.1)
    assert pace.rate() == pytest.approx(10_000)
    for _ in range(60):  # costlier events: 3,000 a second
        pace.add(3_000, 1.0)
    assert pace.rate() == pytest.approx(3_000, rel=0.05)


def test_small_steps_go_at_the_pace_of_fixed_costs_and_are_not_measured() -> None:
    """Keeping up, the processor takes a few events a step, at a fraction of what it does behind:
    measured, a burst after a quiet while read as tens of seconds of wait and was refused."""
    pace = Pace()
    for _ in range(100):
        pace.add(5, 0.01)
    assert pace.rate() is None


def test_a_second_of_costly_events_outweighs_many_cheap_batches_before_it() -> None:
    """A re-test: decayed a step at a time, full batches of cheap events kept the pace twice too
    high through many costly ones, and a burst after them was taken until 30-50 s waited."""
    pace = Pace()
    for _ in range(200):  # cheap: 50,000 a second, in steps of 10,000
        pace.add(10_000, 0.2)
    for _ in range(2):  # then a second of costly ones: 3,000 a second
        pace.add(1_500, 0.5)
    rate = pace.rate()
    assert rate is not None
    assert rate < 1.5 * 3_000, rate
