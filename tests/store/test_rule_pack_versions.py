"""Which rule pack a starting service runs: a file new to the store is a deployment (activated);
a file replaced since it was active does not take back a newer activation on a restart."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ringfence.engine.pack import default_pack_text, load_pack
from ringfence.store.packs import PackRepository
from ringfence.store.sql import SqlStore


def pack_file(tmp_path: Path, version: str) -> Path:
    text = default_pack_text()
    original = next(line for line in text.splitlines() if line.startswith("version:"))
    path = tmp_path / f"pack-{version}.yaml"
    path.write_text(text.replace(original, f"version: {version}", 1))
    return path


@pytest.fixture
def packs(any_store: SqlStore) -> PackRepository:
    return PackRepository(any_store)


def test_a_new_file_is_activated_and_the_same_file_again_changes_nothing(packs: PackRepository, tmp_path: Path) -> None:
    one, two = pack_file(tmp_path, "one"), pack_file(tmp_path, "two")
    assert packs.startup_pack(one, 1.0).version == "one"
    assert packs.startup_pack(one, 2.0).version == "one"
    assert packs.startup_pack(two, 3.0).version == "two"  # a deployment of a new file
    assert [v.version for v in packs.history()] == ["two", "one"]


def test_an_older_file_does_not_undo_an_activation_through_the_api(
    packs: PackRepository, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = pack_file(tmp_path, "deployed")
    packs.startup_pack(old, 1.0)
    newer = load_pack(pack_file(tmp_path, "from-the-api").read_text())
    packs.activate(newer, "key:analyst", 2.0)  # as PUT /v1/rules does
    with caplog.at_level(logging.WARNING, logger="ringfence.store"):
        running = packs.startup_pack(old, 3.0)  # a service still set to the old file restarts
    assert running.version == "from-the-api"
    active = packs.active()
    assert active is not None
    assert active.version == "from-the-api"
    assert [v.version for v in packs.history()] == ["from-the-api", "deployed"]  # nothing re-activated
    assert "PUT /v1/rules" in caplog.text
    assert "deployed" in caplog.text


def test_no_file_runs_the_active_pack(packs: PackRepository, tmp_path: Path) -> None:
    assert packs.startup_pack(None, 1.0).digest == load_pack(default_pack_text()).digest
    packs.startup_pack(pack_file(tmp_path, "set"), 2.0)
    assert packs.startup_pack(None, 3.0).version == "set"
