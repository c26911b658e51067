"""``ringfence quarantine list|redrive``: an operator sees the poison events and re-drives one."""

from __future__ import annotations

from pathlib import Path

from ringfence.bench.servers import ringfence_cli
from ringfence.runtimes.embedded.platform import open_store
from ringfence.store.quarantine import QuarantinedEvent, QuarantineRepository, write
from tests.helpers.factories import T0


def test_list_shows_the_quarantined_event_and_redrive_hands_it_back(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = open_store(data_dir)
    body = b'{"event_id":"evt-9","type":"acme.score","source":"acme","occurred_at":1,"data":{}}'
    with store.transaction() as conn:
        write(conn, [QuarantinedEvent.of(body, 42, 1, T0, OverflowError("too big"), "acme-1")], [], T0)
    store.close()

    listing = ringfence_cli("quarantine", "list", data_dir=data_dir).stdout
    assert "acme / evt-9" in listing
    assert "OverflowError" in listing
    assert "1 quarantined" in listing

    done = ringfence_cli("quarantine", "redrive", "1", data_dir=data_dir)
    assert "redrive_requested" in done.stdout
    again = ringfence_cli("quarantine", "redrive", "1", data_dir=data_dir, check=False)
    assert again.returncode == 2
    assert "not quarantined" in again.stderr
    missing = ringfence_cli("quarantine", "redrive", "7", data_dir=data_dir, check=False)
    assert missing.returncode == 2

    store = open_store(data_dir)
    (entry,) = QuarantineRepository(store).requested()
    assert entry.redriven_by is not None
    assert entry.redriven_by.startswith("cli:")
    store.close()
