"""``ringfence kafka init``'s copy of the per-stage changelogs (``.changelog.STAGE.v2``) into the
one changelog every task now writes (:attr:`~.topics.Topics.changelog`), so a deployment
moved to it keeps every feature's state.

It copies only while no worker is in the process group (the upgrade's order, docs/deploy.md,
Topics; looked at again before each partition), and only into partitions of the new changelog
that hold no committed entry and never had one deleted, so running ``kafka init`` again copies
nothing twice, a copy that failed part-way is done again for the partitions it did not
finish, and a partition workers wrote and trimmed is never given old state back. Every ``.v2`` changelog found is
copied, whatever stages the packs run now (a stage no pack runs is dropped by the workers'
next restore). A task's entries keep their order and numbers (a snapshot part names the entry
it began after by number, not by offset), each now naming its stage; a partition's are copied
in one transaction.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ringfence.config import Settings
from ringfence.errors import ConfigError
from ringfence.runtimes.kafka.changelog import encode_entry
from ringfence.runtimes.kafka.restore import read_changelogs
from ringfence.runtimes.kafka.topics import MAX_RECORD_BYTES, Topics, client_config, topics_of

TIMEOUT_S = 60


def copy_v2_changelogs(settings: Settings, timeout_s: float = 300.0) -> int:
    """Copy the entries of every ``.v2`` changelog into the partitions of the changelog that
    hold none; return how many were copied. ``ConfigError`` names what failed, or that workers
    are running (a worker could write a partition meanwhile, numbering its entries as the
    copies are numbered)."""
    from confluent_kafka import KafkaException

    try:
        return _copy(settings, timeout_s)
    except (KafkaException, RuntimeError, TimeoutError) as exc:
        raise ConfigError(f"copying the per-stage changelogs failed (run `kafka init` again): {exc}") from exc


def _copy(settings: Settings, timeout_s: float) -> int:
    from confluent_kafka import ConsumerGroupState, Producer
    from confluent_kafka.admin import AdminClient

    topics = topics_of(settings)
    admin = AdminClient(client_config(settings))
    existing = sorted(admin.list_topics(timeout=TIMEOUT_S).topics)
    old = {stage: name for name in existing if (stage := topics.stage_of_v2(name, "changelog")) is not None}
    if not old:
        return 0
    group = topics.group("process")

    def refuse_if_workers_run() -> None:
        listed = admin.list_consumer_groups(request_timeout=TIMEOUT_S).result(TIMEOUT_S)
        if listed.errors:  # a broker did not answer: whether workers run cannot be told
            raise RuntimeError(f"listing the consumer groups: {listed.errors[0]}")
        idle = (ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD)
        if any(g.group_id == group and g.state not in idle for g in listed.valid):
            raise ConfigError(
                f"workers are in {group}: stop them before `kafka init` copies the per-stage "
                f"changelogs into {topics.changelog}"
            )

    producer = Producer(
        client_config(
            settings,
            **{
                "transactional.id": f"{topics.prefix}-changelog-copy",
                "enable.idempotence": True,
                "acks": "all",
                "compression.type": "lz4",
                "message.max.bytes": MAX_RECORD_BYTES,
                "transaction.timeout.ms": int(timeout_s * 1000),  # a partition's history in one
            },
        )
    )
    producer.init_transactions(TIMEOUT_S)  # aborts a copy left open by one that died
    partitions = [(topics.changelog, p) for p in range(topics.partitions)]
    held = read_changelogs(settings, topics, partitions, timeout_s)
    trimmed = {tp for tp, start in _log_starts(settings, topics, partitions).items() if start > 0}
    copied = 0
    for partition in [p for p in range(topics.partitions) if not held[(topics.changelog, p)]]:
        if (topics.changelog, partition) in trimmed:
            continue  # workers wrote it, and deleted all of it since: the copy would bring old state back
        entries = read_changelogs(settings, topics, [(t, partition) for t in old.values()], timeout_s)
        if not any(entries.values()):
            continue
        refuse_if_workers_run()  # again for each partition: a copy takes a while
        producer.begin_transaction()
        try:
            for stage, topic in old.items():
                for _, entry in entries[(topic, partition)]:
                    value = encode_entry(msgspec.structs.replace(entry, stage=stage))
                    _produce(producer, topics.changelog, value, partition)
                    copied += 1
            producer.commit_transaction(timeout_s)
        except Exception:
            producer.abort_transaction(TIMEOUT_S)
            raise
    return copied


def _log_starts(settings: Settings, topics: Topics, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Each partition's first offset (past zero once records were deleted from it)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(client_config(settings, **{"group.id": topics.group("restore"), "enable.auto.commit": False}))
    try:
        return {tp: int(consumer.get_watermark_offsets(TopicPartition(*tp), TIMEOUT_S)[0]) for tp in partitions}
    finally:
        consumer.close()


def _produce(producer: Any, topic: str, value: bytes, partition: int) -> None:
    while True:
        try:
            producer.produce(topic, value, partition=partition)
            return
        except BufferError:  # the producer's queue is full: let it drain
            producer.poll(0.1)
