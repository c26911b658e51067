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
        pace.add(300, 0.1)
    assert pace.rate() == pytest.approx(3_000, rel=0.05)
