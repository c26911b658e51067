"""What the benchmarks read from ``/proc``: a JVM's own threads (its compilers and garbage
collector) told apart from the rest, on the session's real Kafka broker."""

from __future__ import annotations

import os

import pytest

from ringfence.bench import procstat
from tests.helpers.servers import KafkaBroker

pytestmark = pytest.mark.integration


def test_a_jvms_compiler_and_collector_threads_are_counted_apart_from_its_other_threads(
    kafka_broker: KafkaBroker,
) -> None:
    assert kafka_broker.proc is not None
    pid = kafka_broker.proc.pid
    own = procstat.jvm_own_cpu_seconds(pid)
    total = procstat.cpu_seconds([pid])
    # a broker that started has compiled code, and its other threads have done the starting
    assert 0 < own < total
    assert procstat.jvm_own_cpu_seconds(os.getpid()) == 0.0  # no HotSpot threads in Python
    assert procstat.jvm_own_cpu_seconds(2**22 + 7) == 0.0  # no such process (above pid_max's default)
