"""What makes an embedded platform that takes events say it should not be sent them."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from ringfence.config import Settings
from ringfence.runtimes.disk import DiskGuard
from ringfence.runtimes.embedded import platform as embedded
from ringfence.runtimes.embedded.platform import Platform


@pytest.fixture
def platform(tmp_path: Path) -> Any:
    platform = Platform(Settings(data_dir=tmp_path / "data"))
    yield platform
    platform.stop()


def test_a_nearly_full_disk_makes_it_unready_and_room_made_ready_again(platform: Platform) -> None:
    assert platform.unready_reason() is None
    free = [100 * 2**20]
    platform.disk = DiskGuard(
        platform.settings.data_dir, platform.settings.min_free_disk_mib * 2**20, lambda p: free[0]
    )
    reason = platform.unready_reason()
    assert reason is not None
    assert "disk has 100 MiB free" in reason
    free[0] = 2 * platform.settings.min_free_disk_mib * 2**20
    platform.disk = DiskGuard(
        platform.settings.data_dir, platform.settings.min_free_disk_mib * 2**20, lambda p: free[0]
    )
    assert platform.unready_reason() is None


def test_a_processor_failing_a_moment_is_ready_and_failing_on_is_not(platform: Platform) -> None:
    platform.processor.failing = (platform.clock.time(), "StoreUnavailable")
    assert platform.unready_reason() is None  # a passing lock, a retry that will succeed
    platform.processor.failing = (platform.clock.time() - embedded.PROCESSOR_FAILING_S - 1, "StoreUnavailable")
    reason = platform.unready_reason()
    assert reason is not None
    assert "the processor has failed for" in reason
    assert "StoreUnavailable" in reason


def test_the_wait_backpressure_reads_is_the_oldest_unprocessed_events() -> None:
    """Found by a re-test: the wait of the newest event processed said 5 s only once the events
    behind it had queued 25 to 30 s of work. The oldest one not processed says it at once."""
    from ringfence.testing import FixedClock

    clock = FixedClock(1_000.0)
    with tempfile.TemporaryDirectory() as tmp:
        platform = Platform(Settings(data_dir=Path(tmp) / "data"), clock=clock)
        try:
            platform._on_commit(100)  # events 1-100 durable now
            clock.advance(3.0)
            platform._on_commit(250)
            clock.advance(4.0)
            assert platform.lag_s() == 7.0  # the oldest waiting came with the first commit
            platform.processor.offset = 100
            assert platform.lag_s() == 4.0
            platform.processor.offset = 250
            assert platform.lag_s() == 0.0  # none waits
        finally:
            platform.stop()


def test_the_wait_backpressure_reads_counts_what_is_ahead_at_the_rate_the_processor_goes_while_busy() -> None:
    """A re-test: 6 s of one key's alert-raising events, taken at 17,000 a second and processed
    at 3,000, held the next key's alerts 34 s; the oldest waiting event's wait said 5 s only
    once most of them were taken. What is ahead, at the rate the processor gets through events
    while busy (known from its first steps), says it at once."""
    from ringfence.testing import FixedClock

    clock = FixedClock(1_000.0)
    with tempfile.TemporaryDirectory() as tmp:
        platform = Platform(Settings(data_dir=Path(tmp) / "data"), clock=clock)
        try:
            platform._on_commit(100)
            clock.advance(0.5)
            assert platform.wait_s() == 0.5  # no step measured yet: the oldest one's wait
            for _ in range(50):
                platform.processor.pace.add(3_000, 1.0)  # steps of 3,000 events in 1 s
            platform._on_commit(42_000)
            assert platform.wait_s() == pytest.approx(14.0)  # 42,000 ahead at 3,000 a second
            platform.processor.offset = 42_000  # all processed
            assert platform.wait_s() == 0.0
            platform._on_commit(42_100)
            clock.advance(3.0)
            assert platform.wait_s() == pytest.approx(3.0)  # the oldest one's, if longer
        finally:
            platform.stop()
