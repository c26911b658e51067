"""Poison records of the kafka runtime: naming a quarantined join contribution by its event,
and writing a quarantined record back to its topic (a re-drive; ``serve api`` and the CLI).
How workers quarantine is told in :mod:`.worker`."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec

from ringfence.config import Settings
from ringfence.runtimes.kafka import records
from ringfence.runtimes.kafka.topics import client_config, topics_of
from ringfence.store.quarantine import QuarantinedEvent, QuarantineEntry

# a record's headers as stored, values bytes (msgspec decodes no union of str and bytes); built
# at import, so a type it refuses fails there rather than on every re-drive
_headers = msgspec.msgpack.Decoder(list[tuple[str, bytes | None]]).decode


def reproduce(settings: Settings, entry: QuarantineEntry, timeout_s: float = 30.0) -> None:
    """Re-drive: write a quarantined record back to the topic and partition it was read from,
    with its key and headers (``serve api``/``serve ingest`` call it); one read from a stage's
    own topic of before the stages topic goes to the stages topic, naming its stage. Raises
    RuntimeError if the brokers did not take it."""
    from confluent_kafka import Producer

    e = entry.event
    producer = Producer(client_config(settings, **{"enable.idempotence": True, "acks": "all"}))
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    headers: list[tuple[str, str | bytes | None]] = list(_headers(e.record_headers)) if e.record_headers else []
    topic = e.origin
    if (stage := topics_of(settings).stage_of_v2(topic, "stage")) is not None:
        topic = topics_of(settings).stages
        headers = [*(h for h in headers if h[0] != records.STAGE_HEADER), (records.STAGE_HEADER, stage.encode())]
    producer.produce(topic, e.body, e.record_key, e.partition, headers=headers or None, on_delivery=delivered)
    if producer.flush(timeout_s) or failures:
        raise RuntimeError(f"re-driving {e.origin}[{e.partition}]@{e.offset} failed: {failures or 'timed out'}")


def named_by_contribution(entry: QuarantinedEvent) -> QuarantinedEvent:
    """A quarantined join record (or one event's contributions, :mod:`.worker`) names the
    event its first contribution is for (source, event id)."""
    try:
        part = records.decode_contributions(entry.body)[0]
    except (msgspec.DecodeError, msgspec.ValidationError, IndexError):
        return entry
    source, _, event_id = part.event_key.partition("\x1f")
    return dataclasses.replace(entry, source=source, event_id=event_id, type=f"contribution:{part.stage}")
