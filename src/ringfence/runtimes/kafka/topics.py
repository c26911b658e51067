"""The kafka runtime's topics, their names, partitioning and configs; ``ringfence kafka init``.

Every topic has the same partition count, so partition *p* of a stage's input topic and
partition *p* of the changelog belong together: the worker that owns one owns the other.
Every keyed stage but the customer's reads one topic, :attr:`Topics.stages`, and every task
writes one changelog, :attr:`Topics.changelog` (a record names its stage): the broker's CPU
follows the partitions each transaction writes, and ingest's and the workers' would
otherwise write a partition of every stage's topic (docs/deploy.md, Sizing).
Names are versioned (``.v1``): a change of record format gets new topics, never a reinterpretation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ringfence.config import Settings, secret
from ringfence.engine.stages import CUSTOMER, JOIN, StagePlan
from ringfence.errors import ConfigError

MAX_RECORD_BYTES = 32 << 20  # a changelog entry's, at most (the workers' producers take as much)
EVENTS_KEPT_S = 7 * 24 * 3600.0  # the events and alerts topics' retention (late events are kept as long)
SASL_PASSWORD_ENV = "RINGFENCE_SECRET_KAFKA_SASL_PASSWORD"  # nosec B105 # noqa: S105 - a variable's name


@dataclass(frozen=True)
class Topics:
    """Topic and group names under one prefix (several deployments can share a cluster)."""

    prefix: str
    partitions: int
    replication: int = 1

    @property
    def events(self) -> str:
        return f"{self.prefix}.events.v1"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}.alerts.v1"

    @property
    def join(self) -> str:
        """The join's input: a record per batch and partition (v1 held one contribution a record)."""
        return f"{self.prefix}.join.v2"

    @property
    def queries(self) -> str:
        """Asks for a customer's feature values, in the customer's partition (:mod:`.queries`)."""
        return f"{self.prefix}.queries.v1"

    @property
    def answers(self) -> str:
        return f"{self.prefix}.answers.v1"

    @property
    def stages(self) -> str:
        """Every keyed stage's input but the customer's: a record per ingest transaction, stage
        and partition (header ``rf-stage``). Before it, each stage had its own ``.stage.NAME.v2``."""
        return f"{self.prefix}.stages.v1"

    def stage_input(self, stage: str) -> str:
        """The topic a stage consumes: the events topic for the customer stage."""
        return self.events if stage == CUSTOMER else self.stages

    def source(self, task: tuple[str, int]) -> tuple[str, int]:
        """The input partition (topic, partition) of task ``task`` (stage or join, partition)."""
        stage, partition = task
        return (self.join if stage == JOIN else self.stage_input(stage), partition)

    def tasks_of(self, topic: str, partition: int, plan: StagePlan) -> list[tuple[str, int]]:
        """The tasks (stage or join, partition) input partition ``topic``[``partition``] feeds."""
        if topic == self.join:
            return [(JOIN, partition)]
        return [(name, partition) for name in plan.names if self.stage_input(name) == topic]

    @property
    def changelog(self) -> str:
        """Every task's changelog, partition *p* task *p*'s of every stage and the join: an entry
        per batch, naming its stage (:mod:`.changelog`)."""
        return f"{self.prefix}.changelog.v3"

    def changelog_v2(self, stage: str) -> str:
        """A stage's own changelog before :attr:`changelog` (``ringfence kafka init`` copies it)."""
        return f"{self.prefix}.changelog.{stage}.v2"

    def stage_of_v2(self, topic: str, kind: str) -> str | None:
        """The stage whose own ``kind`` topic (``stage``: its input, ``changelog``) ``topic`` was
        before :attr:`stages` and :attr:`changelog` (``PREFIX.KIND.STAGE.v2``), if it is one."""
        head, tail = f"{self.prefix}.{kind}.", ".v2"
        if topic.startswith(head) and topic.endswith(tail) and len(topic) > len(head) + len(tail):
            return topic[len(head) : -len(tail)]
        return None

    def kind(self, topic: str) -> str:
        """``events``, ``stage``, ``join``, ``changelog``, ``alerts``, ``queries`` or ``answers``
        (records are counted by kind in the metrics)."""
        if topic in (self.events, self.join, self.alerts, self.queries, self.answers):
            return topic.split(".")[-2]
        if topic == self.stages:
            return "stage"
        return topic[len(self.prefix) + 1 :].split(".", 1)[0]

    def group(self, service: str) -> str:
        return f"{self.prefix}-{service}"

    def specs(self, plan: StagePlan) -> dict[str, dict[str, str]]:
        """Every topic the pack's stages need, with its config."""
        retention = {"cleanup.policy": "delete", "retention.ms": str(int(EVENTS_KEPT_S * 1000))}
        # a stage's or the join's record holds many events (about 1 MB): room for estimates' errors
        short = {**retention, "retention.ms": "86400000", "max.message.bytes": str(MAX_RECORD_BYTES // 4)}
        # a changelog is kept until its worker deletes what a complete snapshot made redundant;
        # an entry holds a batch's changed states, a part of a snapshot
        kept = {
            "cleanup.policy": "delete",
            "retention.ms": "-1",
            "retention.bytes": "-1",
            "max.message.bytes": str(MAX_RECORD_BYTES + (1 << 20)),  # an entry, and its batch's framing
        }
        asked = {"cleanup.policy": "delete", "retention.ms": "3600000"}  # answered within seconds, or never
        out = {self.events: retention, self.alerts: retention, self.join: short, self.changelog: kept}
        out |= {self.queries: asked, self.answers: asked}
        out[self.stages] = short  # whether this pack has keyed stages or not: a pack activated next may
        for name in plan.names:
            out[self.stage_input(name)] = out.get(self.stage_input(name), short)
        return out


def topics_of(settings: Settings) -> Topics:
    return Topics(settings.kafka_topic_prefix, settings.kafka_partitions, settings.kafka_replication)


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """librdkafka settings every client shares: brokers and, when set, TLS and SASL."""
    if not settings.kafka_bootstrap:
        raise ConfigError("the kafka runtime needs kafka_bootstrap (RINGFENCE_KAFKA_BOOTSTRAP=host:port,...)")
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "security.protocol": settings.kafka_security_protocol,
        "client.id": "ringfence",
    }
    if settings.kafka_sasl_mechanism:
        config |= {
            "sasl.mechanism": settings.kafka_sasl_mechanism,
            "sasl.username": settings.kafka_sasl_username,
            "sasl.password": secret(SASL_PASSWORD_ENV),
        }
    return config | extra


# A transactional producer's retried requests wait from 10 ms, not librdkafka's 100 (doubling on
# each retry, up to 1 s, librdkafka's default maximum). The workers commit transactions back to
# back, and the coordinator answers CONCURRENT_TRANSACTIONS to the next one's AddOffsetsToTxn
# while it still writes the previous one's markers (a few ms): at 100 ms, 1.5 % of a worker's
# transactions took 103 ms (p50) instead of 9, a tail of ingest-to-alert latency. Ingest takes
# the same setting for its retried requests; its AddPartitionsToTxn, which meets the same answer,
# is retried after a fixed 20 ms whatever the setting.
TRANSACTIONAL_RETRIES = {"retry.backoff.ms": 10, "retry.backoff.max.ms": 1000}


def take(consumer: Any, limit: int, wait_s: float, moved: set[tuple[str, int]] | None = None) -> list[Any]:
    """Up to ``limit`` records: those the consumer has fetched already or, if none, the first
    to arrive within ``wait_s`` with those fetched beside it. (librdkafka's ``consume(n, t)``
    waits until it has n records or t has passed: at a paced load, every batch would wait t.)

    ``moved`` is as :func:`gather`'s. librdkafka drops what it fetched before a rebalance in
    the call that serves it, so a call's records are fresh; but the first record, polled
    before the call that takes those beside it, is dropped if that call moved its partition
    (else it would run twice: its next owner fetches it again from the committed offset)."""
    taken: list[Any] = consumer.consume(limit, 0)
    if taken:
        return taken
    first = consumer.poll(wait_s)
    if first is None:
        return []
    if moved is not None:
        moved.clear()
    beside: list[Any] = consumer.consume(limit - 1, 0)
    if moved and (first.topic(), first.partition()) in moved:
        return beside
    return [first, *beside]


def gather(consumer: Any, taken: list[Any], limit: int, until: float, moved: set[tuple[str, int]]) -> list[Any]:
    """``taken`` (if any) and what arrives beside it until ``until`` (``time.monotonic()``), up
    to ``limit`` records. ``moved`` is the partitions the consumer's rebalance callbacks took
    away (they add to it): what was taken of those by earlier calls is dropped, since whoever
    owns them next, this consumer maybe, fetches it again from the committed offset. What the
    call that served the rebalance returns is kept: librdkafka fetched it afresh."""
    while taken and len(taken) < limit and (left := until - time.monotonic()) > 0.001:
        moved.clear()
        more: list[Any] = consumer.consume(limit - len(taken), left)
        if moved:
            taken = [m for m in taken if (m.topic(), m.partition()) not in moved]
        taken += more
    return taken


def create_topics(settings: Settings, plan: StagePlan, timeout_s: float = 60.0) -> list[str]:
    """Create the topics the pack's stages need that do not exist yet; return those created."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    topics = topics_of(settings)
    admin = AdminClient(client_config(settings))
    wanted = topics.specs(plan)
    futures = admin.create_topics(
        [NewTopic(name, topics.partitions, topics.replication, config=config) for name, config in wanted.items()],
        request_timeout=timeout_s,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout_s)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise ConfigError(f"cannot create topic {name}: {exc.args[0].str()}") from exc
    return sorted(created)


def missing_topics(settings: Settings, plan: StagePlan, timeout_s: float = 30.0) -> list[str]:
    """The topics the pack's stages need that the cluster lacks."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config(settings))
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    return sorted(set(topics_of(settings).specs(plan)) - existing)
