"""The alert pipeline in a worker process: notifications, their counts on ``/metrics`` and the
log are what they are with the pipeline as a thread; a killed worker is replaced and sends
nothing twice. (The live stream: ``tests/api/test_pipeline_api.py``; a worker never outlives
a killed server: ``tests/runtimes/test_ingest_worker.py``, which checks every child.)"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringfence.bench.servers import EmbeddedServer, create_key, start_server
from tests.helpers.http import alerts_for, post, risky_transfer, uid
from tests.helpers.processes import dispatch_workers
from tests.helpers.receivers import RecordingReceiver


@pytest.fixture
def receiver() -> Iterator[RecordingReceiver]:
    receiver = RecordingReceiver()
    yield receiver
    receiver.close()


def start(tmp_path: Path, receiver: RecordingReceiver, dispatch_process: str = "true") -> tuple[EmbeddedServer, str]:
    config = tmp_path / "alerting.yaml"
    config.write_text(
        "receivers:\n"
        f"  - name: hook\n    webhook: {{url: '{receiver.url}/hook', secret_env: RINGFENCE_SECRET_TEST_HOOK}}\n"
        "route: {receiver: hook, group_by: [customer_id], group_wait: 0s}\n"
    )
    data_dir = tmp_path / "d"
    key = create_key(data_dir, "admin", "admin")
    env = {
        "RINGFENCE_ALERTING": str(config),
        "RINGFENCE_SECRET_TEST_HOOK": "k",
        "RINGFENCE_DISPATCH_PROCESS": dispatch_process,
    }
    return start_server(data_dir, env=env), key


def one_worker(server: EmbeddedServer) -> int:
    deadline = time.monotonic() + 10
    while len(found := dispatch_workers(server.process.pid)) != 1:
        assert time.monotonic() < deadline, f"dispatcher workers: {found}"
        time.sleep(0.05)
    (pid,) = found
    return pid


@pytest.mark.parametrize("dispatch_process", ["true", "false"])
def test_a_notification_its_count_and_a_dead_letter_s_log_line_are_the_same_in_a_worker_or_a_thread(
    tmp_path: Path, receiver: RecordingReceiver, dispatch_process: str
) -> None:
    receiver.statuses = [200, 400]  # the second customer's notification is refused for good
    server, key = start(tmp_path, receiver, dispatch_process)
    try:
        if dispatch_process == "true":
            one_worker(server)
        else:
            assert dispatch_workers(server.process.pid) == set()
        first, second = uid("cus"), uid("cus")
        post(server, key, [risky_transfer(first)])
        (request,) = receiver.wait_for(1, timeout=20)
        assert request.json()["alerts"][0]["customer_id"] == first
        post(server, key, [risky_transfer(second)])
        receiver.wait_for(2, timeout=20)
        deadline = time.monotonic() + 10
        with server.client(key) as c:
            while 'ringfence_notifications_total{outcome="failed",receiver="hook"} 1.0' not in (
                metrics := c.get("/metrics").text
            ):
                assert time.monotonic() < deadline, metrics
                time.sleep(0.1)
            assert 'ringfence_notifications_total{outcome="sent",receiver="hook"} 1.0' in metrics
        deadline = time.monotonic() + 10
        while "is a dead letter" not in server.log_path.read_text():  # the worker's log, in the server's
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        assert server.stop(), server.log_path.read_text()[-2000:]
    assert len(receiver.received) == 2


def test_a_killed_dispatcher_worker_is_replaced_and_sends_each_notification_once(
    tmp_path: Path, receiver: RecordingReceiver
) -> None:
    server, key = start(tmp_path, receiver)
    try:
        worker = one_worker(server)
        os.kill(worker, signal.SIGKILL)
        customer = uid("cus")
        post(server, key, [risky_transfer(customer)])  # committed while no worker runs, or the new one
        (request,) = receiver.wait_for(1, timeout=20)
        assert request.json()["alerts"][0]["customer_id"] == customer
        assert one_worker(server) != worker
        time.sleep(2)  # time for a duplicate to show up, if there were one
        assert len(receiver.received) == 1
        assert alerts_for(server, key, customer)
        assert "the dispatcher process" in server.log_path.read_text()
    finally:
        assert server.stop(), server.log_path.read_text()[-2000:]
