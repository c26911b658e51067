"""A Kafka consumer as librdkafka's behaves, for unit tests of the kafka runtime's readers:
transaction markers take offsets and are never delivered, the end of what can be read comes
as a partition-EOF event, errors come as messages."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError


class Message:
    def __init__(
        self,
        partition: int,
        offset: int,
        at_ms: int = 0,
        error: Any = None,
        key: bytes = b"k",
        value: bytes | None = None,
    ) -> None:
        self._partition, self._offset, self._at, self._error = partition, offset, at_ms, error
        self._key, self._value = key, value

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, self._at)

    def error(self) -> Any:
        return self._error

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value if self._value is not None else f"{self._partition}@{self._offset}".encode()


class Eof:
    def code(self) -> int:
        return KafkaError._PARTITION_EOF

    def str(self) -> str:
        return "end"


class Denied:
    def code(self) -> int:
        return KafkaError.TOPIC_AUTHORIZATION_FAILED

    def fatal(self) -> bool:
        return False

    def retriable(self) -> bool:
        return False

    def str(self) -> str:
        return "not authorised"


class Consumer:
    """Partitions of (offset, time) records (or (offset, time, key, value)); offsets absent from
    a partition are markers. As
    librdkafka's: pausing a partition drops what it had fetched and not handed out (resuming
    fetches again from the last record handed out), and a pause outlives unassign."""

    def __init__(self, partitions: dict[int, list[tuple[Any, ...]]], fail: int | None = None) -> None:
        self.partitions = partitions
        self.fail = fail
        self.queue: list[Message] = []
        self.paused: set[int] = set()
        self.pauses = 0
        self.positions: dict[int, int | None] = {}  # the next offset to fetch; None: at its end
        self.handed: dict[int, int] = {}  # the next offset after the last record handed out

    def assign(self, tps: list[Any]) -> None:
        self.positions = {tp.partition: tp.offset for tp in tps}
        self.handed = {tp.partition: tp.offset for tp in tps}

    def unassign(self) -> None:
        self.positions, self.queue = {}, []

    def pause(self, tps: list[Any]) -> None:
        for tp in tps:
            self.paused.add(tp.partition)
            self.queue = [m for m in self.queue if m.partition() != tp.partition]
            if tp.partition in self.positions:
                self.positions[tp.partition] = self.handed[tp.partition]
        self.pauses += 1

    def resume(self, tps: list[Any]) -> None:
        self.paused -= {tp.partition for tp in tps}

    def _fetch(self) -> None:
        for p, at in list(self.positions.items()):
            if p in self.paused or at is None:
                continue
            if p == self.fail:
                self.queue.append(Message(p, at, error=Denied()))
                self.positions[p] = None
                continue
            batch = [r for r in self.partitions[p] if r[0] >= at][:3]  # a few a fetch
            self.queue += [Message(p, r[0], r[1], None, *r[2:]) for r in batch]
            if batch:
                self.positions[p] = batch[-1][0] + 1
            else:
                end = max((r[0] for r in self.partitions[p]), default=-1) + 2
                self.queue.append(Message(p, end, error=Eof()))
                self.positions[p] = None

    def consume(self, limit: int, timeout: float) -> list[Message]:
        if not self.queue:
            self._fetch()
        taken, self.queue = self.queue[:limit], self.queue[limit:]
        for m in taken:
            if m.error() is None:
                self.handed[m.partition()] = m.offset() + 1
        return taken

    def poll(self, timeout: float) -> Message | None:
        taken = self.consume(1, timeout)
        return taken[0] if taken else None

    def get_watermark_offsets(self, tp: Any, timeout: float) -> tuple[int, int]:
        records = self.partitions[tp.partition]
        return (records[0][0], records[-1][0] + 2) if records else (0, 0)  # a marker after the last

    def offsets_for_times(self, tps: list[Any], timeout: float) -> list[Any]:
        for tp in tps:
            tp.offset = next((r[0] for r in self.partitions[tp.partition] if r[1] >= tp.offset), -1)
        return tps
