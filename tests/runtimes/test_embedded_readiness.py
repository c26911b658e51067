"""What makes an embedded platform that takes events say it should not be sent them."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from ringfence.config import Settings
from ringfence.runtimes.embedded import platform as embedded
from ringfence.runtimes.embedded.platform import Platform


@pytest.fixture
def platform(tmp_path: Path) -> Any:
    platform = Platform(Settings(data_dir=tmp_path / "data"))
    yield platform
    platform.stop()


def test_a_nearly_full_disk_makes_it_unready_and_room_made_ready_again(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert platform.unready_reason() is None
    real = shutil.disk_usage

    def nearly_full(path: Any) -> Any:
        usage = real(path)
        return usage._replace(free=embedded.MIN_FREE_DISK_BYTES - 2**20)

    monkeypatch.setattr(shutil, "disk_usage", nearly_full)
    reason = platform.unready_reason()
    assert reason is not None
    assert "disk has 63 MiB free" in reason
    monkeypatch.setattr(shutil, "disk_usage", real)
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
