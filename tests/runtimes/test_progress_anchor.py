"""The processed offset recorded outside the store: a few seconds apart, whole, and a store
behind it refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ringfence.errors import StoreError
from ringfence.private_files import UnsafeFile
from ringfence.runtimes.embedded import progress_anchor
from ringfence.runtimes.embedded.progress_anchor import ProgressAnchor


def test_an_offset_is_recorded_a_few_seconds_apart_and_at_once_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    monkeypatch.setattr(progress_anchor.time, "monotonic", lambda: clock[0])
    anchor = ProgressAnchor(tmp_path / "journal-processed")
    assert anchor.recorded() is None
    anchor.record(10)
    anchor.record(20)  # within the few seconds: not written
    assert anchor.recorded() == 10
    clock[0] += progress_anchor.RECORD_EVERY_S
    anchor.record(30)
    assert ProgressAnchor(anchor.path).recorded() == 30
    anchor.record(40, now=True)  # at a stop
    assert anchor.recorded() == 40
    assert oct(anchor.path.stat().st_mode & 0o777) == "0o600"


def test_a_store_behind_the_recorded_offset_is_refused_and_one_at_or_past_it_is_not(tmp_path: Path) -> None:
    anchor = ProgressAnchor(tmp_path / "journal-processed")
    anchor.check(0)  # nothing recorded: a new data dir, or one from before the anchor
    anchor.record(500)
    anchor.check(500)
    anchor.check(501)
    with pytest.raises(StoreError, match="up to offset 499, but journal-processed recorded 500"):
        anchor.check(499)


def test_a_damaged_or_planted_anchor_is_an_error_not_an_offset(tmp_path: Path) -> None:
    path = tmp_path / "journal-processed"
    path.write_text("not a number")
    with pytest.raises(StoreError, match="does not hold an offset"):
        ProgressAnchor(path).recorded()
    path.unlink()
    (tmp_path / "elsewhere").write_text("1")
    os.symlink(tmp_path / "elsewhere", path)
    with pytest.raises(UnsafeFile, match="symbolic link"):
        ProgressAnchor(path).recorded()


def test_a_failed_record_costs_nothing_and_is_tried_again(tmp_path: Path) -> None:
    anchor = ProgressAnchor(tmp_path / "gone" / "journal-processed")  # its dir is missing: every write fails
    anchor.record(7, now=True)
    (tmp_path / "gone").mkdir()
    anchor.record(7, now=True)
    assert anchor.recorded() == 7


def test_a_link_planted_as_the_draft_is_not_followed_and_fails_no_commit(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    anchor = ProgressAnchor(tmp_path / "journal-processed")
    os.symlink(victim, tmp_path / "journal-processed.new")
    anchor.record(9, now=True)  # logged, not raised: the commit before it stands
    assert victim.read_text() == "keep"
    assert anchor.recorded() is None
    (tmp_path / "journal-processed.new").unlink()
    anchor.record(9, now=True)
    assert anchor.recorded() == 9
