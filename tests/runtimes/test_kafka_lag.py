"""The kafka runtime's view of the process group's lag (ingest's backpressure, ``/readyz``) is
read off the API's event loop: a broker that does not answer must not freeze every request
(a stalled broker held ``/healthz`` 28 s when the read ran on the loop)."""

from __future__ import annotations

import time
from typing import Any

from ringfence.config import Settings
from ringfence.runtimes.kafka import platform
from ringfence.runtimes.kafka.platform import KafkaLog


def test_the_lag_is_answered_at_once_while_the_broker_does_not_answer() -> None:
    log = KafkaLog(Settings(kafka_bootstrap="127.0.0.1:9", kafka_partitions=4))  # nothing listens there
    try:
        began = time.monotonic()
        for _ in range(50):
            assert log.lag_by_partition() == {}  # nothing read yet: no lag, rather than a wait
            assert log.head() == 0
            time.sleep(0.01)
        assert time.monotonic() - began < 2.0  # 50 reads; each waited 10 s or more before
    finally:
        log.close()


class Offsets:
    """The events topic's offsets as a consumer reads them: ``high`` per partition, 2 committed;
    ``broken``: every read fails."""

    def __init__(self) -> None:
        self.high = 10
        self.broken = False
        self.reads = 0

    def committed(self, tps: list[Any], timeout: float) -> list[Any]:
        self.reads += 1
        if self.broken:
            raise RuntimeError("the brokers did not answer")
        for tp in tps:
            tp.offset = 2
        return tps

    def get_watermark_offsets(self, tp: Any, timeout: float) -> tuple[int, int]:
        return 0, self.high

    def close(self) -> None:
        pass


def settled(log: KafkaLog) -> None:
    """Wait for the read of the offsets under way, if any, to end."""
    assert log._reading.acquire(timeout=10)
    log._reading.release()


def test_a_read_in_the_background_fills_the_lag_a_failed_one_keeps_the_last_and_close_stops_them(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(platform, "LAG_CACHE_S", 0.0)
    log = KafkaLog(Settings(kafka_bootstrap="127.0.0.1:9", kafka_partitions=2))
    settled(log)  # the first read, against no broker, failed
    log._consumer.close()
    log._consumer = offsets = Offsets()
    try:
        log.lag_by_partition()  # begins a read; answers what it has
        settled(log)
        assert log.lag_by_partition() == {0: 8, 1: 8}
        settled(log)

        offsets.broken = True
        offsets.high = 50
        log.head()
        settled(log)
        assert log.lag_by_partition() == {0: 8, 1: 8}  # the last read stays
        settled(log)

        offsets.broken = False
        log.close()
        reads = offsets.reads
        assert log.head() == 20  # the last, and no read begins
        time.sleep(0.1)
        assert offsets.reads == reads
    finally:
        log.close()
