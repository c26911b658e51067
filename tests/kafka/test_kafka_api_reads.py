"""What the kafka runtime's API reads from the events topic, against a real broker: an alert's
evidence whose records retention removed is answered at once as gone (it waited for a record
that never came, 5 s an event, 50 events an alert, while holding every other read up)."""

from __future__ import annotations

import time

import pytest

from ringfence.config import load_settings
from ringfence.runtimes.kafka.platform import KafkaLog
from ringfence.runtimes.kafka.records import global_offset
from ringfence.runtimes.kafka.topics import client_config, topics_of
from tests.helpers.kafka import KafkaStack

pytestmark = pytest.mark.integration


def test_evidence_retention_removed_is_answered_at_once_and_the_rest_is_read(kafka_stack: KafkaStack) -> None:
    from confluent_kafka import Producer, TopicPartition
    from confluent_kafka.admin import AdminClient

    settings = load_settings(environ=kafka_stack.env)
    topic = topics_of(settings).events
    producer = Producer(client_config(settings))
    for n in range(4):
        producer.produce(topic, f'{{"event_id": "e{n}"}}'.encode(), b"c1", partition=1)
    assert producer.flush(30) == 0
    # retention, as it removes a segment: the partition now begins at offset 2
    admin = AdminClient(client_config(settings))  # kept: its futures end with it
    (deleted,) = admin.delete_records([TopicPartition(topic, 1, 2)]).values()
    deleted.result(30)

    log = KafkaLog(settings)
    try:
        began = time.monotonic()
        assert log.get(global_offset(1, 0)) is None
        assert log.get(global_offset(1, 1)) is None
        gone = time.monotonic() - began
        kept = log.get(global_offset(1, 3))
        assert kept is not None
        assert kept.body == b'{"event_id": "e3"}'
        assert log.get(global_offset(1, 9)) is None  # past the end
    finally:
        log.close()
    assert gone < 2.0, f"two removed records took {gone:.1f} s"


CROSS_KEY = """
version: cross-key
features:
  - name: per_card
    on: [card.authorization]
    by: data.card_id
    agg: count
anomaly:
  - name: device_z
    kind: robust_zscore
    by: data.device_id
    of: per_card
rules: []
"""


SHARED_STAGE = """
version: cross-key
features:
  - {name: per_source, on: [login.succeeded], agg: count, window: 1h, by: source}
  - {name: per_partner, on: [login.succeeded], agg: count, window: 1h, by: data.source}
rules: []
"""


def test_a_pack_the_workers_cannot_run_is_refused_before_it_is_stored(kafka_stack: KafkaStack) -> None:
    """An input assessment: the api service stored a valid pack whose score reads another key's
    feature before finding that its stages cannot keep it (an error after the store): the
    workers then took up a pack they cannot run. It is refused (400), and nothing is stored."""
    admin = kafka_stack.key("admin", "admin")
    api = kafka_stack.start("api", "api", http=True)
    yaml = {"Content-Type": "application/yaml"}
    with api.client(admin) as c:
        before = c.get("/v1/rules").json()["digest"]
        for answer in (
            c.post("/v1/rules/validate", content=CROSS_KEY, headers=yaml),
            c.put("/v1/rules", content=CROSS_KEY, headers=yaml),
        ):
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["code"] == "invalid_rule_pack"
            assert "device_z: reads per_card, kept by another key" in answer.json()["error"]["message"]
        shared = SHARED_STAGE.replace("cross-key", "shared-stage")
        answer = c.put("/v1/rules", content=shared, headers=yaml)
        assert answer.status_code == 400, answer.text
        assert "is stage 'source' in the kafka runtime" in answer.json()["error"]["message"]
        assert c.get("/v1/rules").json()["digest"] == before
    assert kafka_stack.sql("SELECT version FROM rule_packs WHERE version = 'cross-key'") == []
