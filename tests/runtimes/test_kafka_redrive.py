"""A re-drive writes a quarantined record back where it was read; one read from a stage's own
topic of before the stages topic (``PREFIX.stage.STAGE.v2``, read by no worker now) goes to the
stages topic, naming its stage, so the stage runs it."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from ringfence.config import Settings
from ringfence.runtimes.kafka import quarantine, records
from ringfence.store.quarantine import QuarantinedEvent, QuarantineEntry


class RecordingProducer:
    """What ``confluent_kafka.Producer`` was asked to write (its delivery reports succeed)."""

    written: list[dict[str, Any]] = []

    def __init__(self, _config: dict[str, Any]) -> None:
        pass

    def produce(self, topic: str, value: bytes, key: bytes | None, partition: int, **kwargs: Any) -> None:
        self.written.append({"topic": topic, "value": value, "key": key, "partition": partition, **kwargs})
        kwargs["on_delivery"](None, None)

    def flush(self, _timeout: float) -> int:
        return 0


def entry(origin: str, headers: list[tuple[str, bytes]] | None) -> QuarantineEntry:
    event = QuarantinedEvent(
        origin, 3, 41 << 16 | 2, "cards", "e-1", "card.authorization", 1.0, "RuntimeError", "v1", b"{}",
        stage="card_id", record_headers=msgspec.msgpack.encode(headers) if headers else None,
    )  # fmt: skip
    return QuarantineEntry(1, event, 2.0, "quarantined", 0, None, None)


@pytest.mark.parametrize(
    ("origin", "headers", "topic", "written_headers"),
    [
        # before the stages topic: its stage's own topic
        (
            "rf.stage.card_id.v2",
            [(records.JOIN_HEADER, b"customer,card_id")],
            "rf.stages.v1",
            [(records.JOIN_HEADER, b"customer,card_id"), (records.STAGE_HEADER, b"card_id")],
        ),
        ("rf.stage.merchant.id.v2", None, "rf.stages.v1", [(records.STAGE_HEADER, b"merchant.id")]),
        # the stages topic and the events topic: as they were read
        (
            "rf.stages.v1",
            [(records.STAGE_HEADER, b"card_id")],
            "rf.stages.v1",
            [(records.STAGE_HEADER, b"card_id")],
        ),
        ("rf.events.v1", None, "rf.events.v1", None),
    ],
)
def test_a_redrive_goes_where_a_worker_reads_it(
    monkeypatch: pytest.MonkeyPatch, origin: str, headers: Any, topic: str, written_headers: Any
) -> None:
    import confluent_kafka

    monkeypatch.setattr(confluent_kafka, "Producer", RecordingProducer)
    RecordingProducer.written = []
    settings = Settings(kafka_bootstrap="127.0.0.1:9", kafka_topic_prefix="rf")

    quarantine.reproduce(settings, entry(origin, headers))

    (written,) = RecordingProducer.written
    assert (written["topic"], written["partition"], written["value"]) == (topic, 3, b"{}")
    got = written["headers"]
    assert ([(k, bytes(v)) for k, v in got] if got else None) == written_headers
