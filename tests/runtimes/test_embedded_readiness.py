"""What makes an embedded platform that takes events say it should not be sent them."""

from __future__ import annotations

import shutil
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
