"""``ringfence kafka init``'s copy of the per-stage changelogs (``.changelog.STAGE.v2``) into the
one changelog every task now writes (:attr:`~.topics.Topics.changelog`), so a deployment
moved to it keeps every feature's state.

Run with the workers stopped, as the upgrade's order has it (docs/deploy.md, Topics): a
partition of the new changelog that holds anything already is left as it is, so running
``kafka init`` again copies nothing twice. A task's entries keep their order and numbers (a
snapshot part names the entry it began after by number, not by offset), each now naming its
stage; a partition's are copied in one transaction.
"""

from __future__ import annotations

import msgspec

from ringfence.config import Settings
from ringfence.engine.stages import JOIN, StagePlan
from ringfence.errors import ConfigError
from ringfence.runtimes.kafka.changelog import encode_entry
from ringfence.runtimes.kafka.restore import high_watermarks, read_changelogs
from ringfence.runtimes.kafka.topics import MAX_RECORD_BYTES, client_config, topics_of

TIMEOUT_S = 60


def copy_v2_changelogs(settings: Settings, plan: StagePlan, timeout_s: float = 300.0) -> int:
    """Copy the entries of the pack's stages' ``.v2`` changelogs into the empty partitions of
    the changelog; return how many were copied. ``ConfigError`` names what failed (a partition
    copied before it stays copied; running it again copies the rest)."""
    from confluent_kafka import KafkaException

    try:
        return _copy(settings, plan, timeout_s)
    except (KafkaException, RuntimeError, TimeoutError) as exc:
        raise ConfigError(f"copying the per-stage changelogs failed: {exc}") from exc


def _copy(settings: Settings, plan: StagePlan, timeout_s: float) -> int:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient

    topics = topics_of(settings)
    existing = set(AdminClient(client_config(settings)).list_topics(timeout=TIMEOUT_S).topics)
    old = {name: topics.changelog_v2(name) for name in [*plan.names, JOIN] if topics.changelog_v2(name) in existing}
    if not old:
        return 0
    ends = high_watermarks(settings, topics, [(topics.changelog, p) for p in range(topics.partitions)])
    empty = [p for p in range(topics.partitions) if ends[(topics.changelog, p)] == 0]
    entries = read_changelogs(settings, topics, [(t, p) for t in old.values() for p in empty], timeout_s)
    if not any(entries.values()):
        return 0
    producer = Producer(
        client_config(
            settings,
            **{
                "transactional.id": f"{topics.prefix}-changelog-copy",
                "enable.idempotence": True,
                "acks": "all",
                "compression.type": "lz4",
                "message.max.bytes": MAX_RECORD_BYTES,
            },
        )
    )
    producer.init_transactions(TIMEOUT_S)
    copied = 0
    for partition in empty:
        if not any(entries[(topic, partition)] for topic in old.values()):
            continue
        producer.begin_transaction()
        for name, topic in old.items():
            for _, entry in entries[(topic, partition)]:
                value = encode_entry(msgspec.structs.replace(entry, stage=name))
                while True:
                    try:
                        producer.produce(topics.changelog, value, partition=partition)
                        break
                    except BufferError:  # the producer's queue is full: let it drain
                        producer.poll(0.1)
                copied += 1
        producer.commit_transaction(TIMEOUT_S)
    return copied
