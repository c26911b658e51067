"""One processor a data dir: a second is refused, even once the lock file was deleted under
the first (a clean-up of "stale" locks), and the lock is free again when the first lets go."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ringfence.errors import StoreError
from ringfence.runtimes.embedded.platform import LOCK_FILE, lock_data_dir


def test_a_second_processor_is_refused_even_once_the_lock_file_is_gone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = lock_data_dir(data)
    assert (data / LOCK_FILE).read_text() == str(os.getpid())
    (data / LOCK_FILE).unlink()
    with pytest.raises(StoreError, match="another Ringfence process is running"):
        lock_data_dir(data)
    first.close()
    lock_data_dir(data).close()


def test_the_lock_is_held_against_another_process_and_dies_with_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from ringfence.runtimes.embedded.platform import lock_data_dir; "
            f"lock_data_dir(Path({str(data)!r})); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"held"
        (data / LOCK_FILE).unlink()
        with pytest.raises(StoreError, match="another Ringfence process is running"):
            lock_data_dir(data)
    finally:
        holder.kill()
        holder.communicate()
    lock_data_dir(data).close()  # a killed holder leaves no stale lock
