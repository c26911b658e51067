"""The kafka runtime's view of the process group's lag (ingest's backpressure, ``/readyz``) is
read off the API's event loop: a broker that does not answer must not freeze every request
(a stalled broker held ``/healthz`` 28 s when the read ran on the loop)."""

from __future__ import annotations

import time

from ringfence.config import Settings
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
