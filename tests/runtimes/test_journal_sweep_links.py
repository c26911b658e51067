"""The journal's retention deletes what it dropped by name: a link planted under such a name
(a data dir others could once write to) is unlinked, and what it points at is left alone (the
sweep emptied a file and a directory elsewhere, as root any of them)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ringfence.runtimes.embedded.journal import _delete


def test_a_link_under_a_dropped_name_is_unlinked_and_its_target_left_whole(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("a bank's file\n")
    victim_dir = tmp_path / "victim-dir"
    victim_dir.mkdir()
    (victim_dir / "kept").write_text("kept\n")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    to_file = data_dir / "journal-000000000000.sqlite3"
    to_dir = data_dir / "journal-000000000000.dedup.stale-1"
    to_file.symlink_to(victim)
    to_dir.symlink_to(victim_dir)
    fifo = data_dir / "journal-000000000001.sqlite3"
    os.mkfifo(fifo)  # opened for writing, it would wait for a reader forever
    closing = threading.Event()
    for path in (to_file, to_dir, fifo):
        _delete(path, closing)
        assert not path.is_symlink()
        assert not path.exists()
    assert victim.read_text() == "a bank's file\n"
    assert (victim_dir / "kept").read_text() == "kept\n"


def test_a_dropped_segment_and_index_are_deleted(tmp_path: Path) -> None:
    segment = tmp_path / "journal-000000000000.sqlite3"
    segment.write_bytes(b"x" * 10_000)
    index = tmp_path / "journal-000000000000.dedup"
    index.mkdir()
    (index / "000001.sst").write_bytes(b"y" * 100)
    closing = threading.Event()
    _delete(segment, closing)
    _delete(index, closing)
    assert not segment.exists()
    assert not index.exists()
