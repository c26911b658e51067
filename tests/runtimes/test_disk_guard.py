"""The disk guard: what is free on the data dir's disk against its floor (a re-test filled a
1 GB disk in 13 s through the changelog: every producer refused, processing stopped, and the
next start failed). A server under it: ``test_memory_guard.py``, for both floors."""

from __future__ import annotations

from pathlib import Path

from ringfence.runtimes.disk import DiskGuard


def test_the_guard_says_why_under_the_floor_of_the_data_dirs_disk(tmp_path: Path) -> None:
    """(How often it reads, as every floor: ``test_memory_guard.py``.)"""
    reads: list[Path] = []

    def free(path: Path) -> int:
        reads.append(path)
        return 100 * 2**20

    assert DiskGuard(tmp_path, 1024 * 2**20, free).shortage() == (
        "the data dir's disk has 100 MiB free, under the 1024 MiB kept free (min_free_disk_mib): "
        "events are refused until some is freed"
    )
    assert DiskGuard(tmp_path, 64 * 2**20, free).shortage() is None
    assert reads == [tmp_path] * 2


def test_a_data_dir_that_cannot_be_read_is_no_figure(tmp_path: Path) -> None:
    assert DiskGuard(tmp_path / "gone", 1).shortage() is None
