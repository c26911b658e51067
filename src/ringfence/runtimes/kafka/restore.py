"""Restoring tasks: a worker assigned a partition rebuilds its tasks from the changelog
partition of the same number (every stage's, each entry naming its own), read
``read_committed`` to its end (exactly the state of the last committed batch) and replayed
(:func:`.changelog.replay`: the newest snapshot, then the entries after its start) before it
processes any of the partition's records; a worker that had to drop a task's state (a batch
that failed) rebuilds it the same way.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import msgspec

from ringfence.config import Settings
from ringfence.engine.stages import JOIN, StagePlan
from ringfence.runtimes.kafka.changelog import Entry, Replayed, TaskLog, decode_entry, replay
from ringfence.runtimes.kafka.task import Task, TaskId
from ringfence.runtimes.kafka.topics import Topics, client_config

Entries = list[tuple[int, Entry]]  # a changelog partition's committed entries and their offsets, in order


def read_changelogs(
    settings: Settings, topics: Topics, partitions: list[tuple[str, int]], timeout_s: float = 300.0
) -> dict[tuple[str, int], Entries]:
    """The committed entries of changelog ``partitions``, in order.

    Read to the end of every transaction written before the call: a ``read_committed`` reader
    stops at the first transaction still open, and a commit the previous owner saw succeed is
    open there until the broker writes its markers. Stopping then would restore a state
    without that batch, while its input offsets are committed. So each partition is read until
    its end passes the high watermark seen at the start: at once for a finished transaction,
    within the transaction timeout for one a dead worker left open (the broker aborts it)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    entries: dict[tuple[str, int], Entries] = {tp: [] for tp in partitions}
    if not partitions:
        return entries
    deadline = time.monotonic() + timeout_s
    written = high_watermarks(settings, topics, partitions)
    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": topics.group("restore"),  # never committed: restores always read everything
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                # a trim landing while it reads moves the log's start past its position: go on
                # from the new start (a complete snapshot), not from the end (replay drops what
                # it reads twice)
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 10,  # the end is what it waits for: do not let the broker hold fetches
            },
        )
    )
    try:
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in partitions])
        remaining = set(partitions)
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"restoring {sorted(remaining)} took over {timeout_s:.0f} s")
            for message in consumer.consume(5000, 0.05):
                tp = (str(message.topic()), int(message.partition() or 0))
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"reading changelog {tp}: {error.str()}")
                    if int(message.offset() or 0) >= written[tp]:
                        remaining.discard(tp)
                    continue
                offset = int(message.offset() or 0)
                try:
                    entries[tp].append((offset, decode_entry(message.value() or b"")))
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:  # only workers write here
                    raise RuntimeError(f"changelog {tp[0]}[{tp[1]}]@{offset} is no changelog entry: {exc}") from exc
            # a partition whose end is short of it waits for a transaction to finish
            for at in consumer.position([TopicPartition(*tp) for tp in remaining]) if remaining else []:
                if at.offset >= written[(at.topic, at.partition)]:
                    remaining.discard((at.topic, at.partition))
    finally:
        consumer.close()
    return entries


def high_watermarks(
    settings: Settings, topics: Topics, partitions: list[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """Each partition's high watermark, open transactions included (a ``read_uncommitted`` query)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        client_config(
            settings,
            **{"group.id": topics.group("restore"), "isolation.level": "read_uncommitted", "enable.auto.commit": False},
        )
    )
    try:
        return {tp: int(consumer.get_watermark_offsets(TopicPartition(*tp), 10)[1]) for tp in partitions}
    finally:
        consumer.close()


def restore_tasks(
    settings: Settings,
    topics: Topics,
    plan: StagePlan,
    ids: Iterable[TaskId],
    lists: Mapping[str, frozenset[str]],
    now: float,
    *,
    others_kept: bool = True,
) -> tuple[dict[TaskId, Task], int, dict[tuple[str, int], int], dict[int, int]]:
    """Tasks ``ids`` (stage or join, partition), from the changelog; how many rows those held;
    by changelog partition, the offset before which its records are no longer needed; and by
    partition, the first entry of a stage ``plan`` does not run, kept if ``others_kept`` (the
    store's pack is another, which may run it; else the stage was dropped, and so are they)."""
    wanted = set(ids)
    partitions = sorted({partition for _, partition in wanted})
    entries = read_changelogs(settings, topics, [(topics.changelog, p) for p in partitions])
    replayed: dict[TaskId, Replayed] = {}
    trims, pinned = {}, {}
    run = [*plan.names, JOIN]
    for partition in partitions:
        held = entries[(topics.changelog, partition)]
        by_stage: dict[str, Entries] = {}
        for offset, entry in held:
            by_stage.setdefault(entry.stage, []).append((offset, entry))
        others = [e[0][0] for name, e in by_stage.items() if others_kept and name not in run]
        if others:
            pinned[partition] = min(others)
        needs = list(others)  # the first offset each task (or stage kept) needs
        for name in run:
            try:
                replayed[(name, partition)] = found = replay(by_stage.get(name, []))
            except RuntimeError:  # its entries have a gap: a task not asked for keeps them all
                if (name, partition) in wanted:
                    raise
                needs.append(by_stage[name][0][0])
                continue
            if found.keep_from is not None:
                needs.append(found.keep_from)
        keep = min(needs, default=None)
        before = held[-1][0] + 1 if held and keep is None else keep
        if held and before is not None and before > held[0][0]:  # the previous owner did not get to trim it
            trims[(topics.changelog, partition)] = before
    tasks, rows = {}, 0
    for task_id in sorted(wanted):
        name, partition = task_id
        stage = plan.rules if name == JOIN else plan.stage(name)
        task, applied = Task.restore(
            stage,
            partition,
            replayed[task_id],
            settings.allowed_lateness_s,
            settings.kafka_dedup_window_s,
            now,
            engine_kind=settings.engine,
            min_log_rows=settings.kafka_snapshot_rows,
        )
        for list_name, values in lists.items():  # through set_list: the compiled core holds its own copy
            if list_name in stage.pack.lists:
                task.engine.set_list(list_name, values)
        tasks[task_id] = task
        rows += applied
    return tasks, rows, trims, pinned


def trim_point(tasks: Iterable[Replayed | TaskLog]) -> int | None:
    """The offset before which a changelog partition holds nothing its ``tasks`` (all of its
    partition's) need: the least of theirs (None: none needs any)."""
    needed = [t.keep_from for t in tasks if t.keep_from is not None]
    return min(needed) if needed else None
