"""The kafka runtime as users run it: ``ringfence`` services as separate processes, against
the session's real Kafka broker and PostgreSQL server, each test on its own topics
(a unique prefix) and its own database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.kafka import PARTITIONS, KafkaStack
from tests.helpers.servers import KafkaBroker, PostgresCluster


@pytest.fixture
def kafka_stack(kafka_broker: KafkaBroker, postgres: PostgresCluster, tmp_path: Path) -> Iterator[KafkaStack]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RINGFENCE_")},
        "RINGFENCE_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
        "RINGFENCE_KAFKA_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}",
        "RINGFENCE_KAFKA_PARTITIONS": str(PARTITIONS),
        "RINGFENCE_POSTGRES_DSN": postgres.new_database(),
        "RINGFENCE_SECRET_AUDIT_KEY": f"kafka-test-audit-key-{uuid.uuid4().hex}",  # the same for every service
        "RINGFENCE_LOG_LEVEL": "info",
        "RINGFENCE_KAFKA_SNAPSHOT_ROWS": "200",  # so the tests' small state is snapshotted and trimmed, often
    }
    stack = KafkaStack(tmp_path, env)
    stack.cli("db", "migrate")
    stack.cli("kafka", "init")
    yield stack
    stack.stop_all()
