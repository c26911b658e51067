"""``--metrics-port`` of the kafka runtime's process and dispatch services: the counts by
receiver and by rule are every desk's, so, as the API's ``/metrics``, only for a key with
``alerts:read`` that sees every audience (found by a hostile test: an AML-only key read them)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from ringfence.bench.servers import free_port
from ringfence.metrics import Metrics
from ringfence.runtimes.embedded.platform import open_store
from ringfence.runtimes.kafka.metrics_http import serve_metrics
from ringfence.store.keys import ApiKeys


def test_only_a_key_that_sees_every_audience_reads_the_metrics(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    keys = ApiKeys(store)
    every = keys.create("ops", ["alerts:read"], time.time())
    aml_only = keys.create("aml", ["alerts:read"], time.time(), audiences=["aml"])
    producer = keys.create("producer", ["events:write"], time.time())
    metrics = Metrics()
    metrics.notifications.labels("fraud-webhook", "sent").inc()
    port = free_port()
    server = serve_metrics(metrics, keys, "127.0.0.1", port)
    try:

        def get(key: str | None) -> httpx.Response:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return httpx.get(f"http://127.0.0.1:{port}/metrics", headers=headers, timeout=10)

        answer = get(every)
        assert answer.status_code == 200
        assert 'receiver="fraud-webhook"' in answer.text
        assert get(aml_only).status_code == 403
        assert "fraud-webhook" not in get(aml_only).text
        assert get(producer).status_code == 403
        assert get(None).status_code == 401
    finally:
        server.shutdown()
        server.server_close()
        store.close()
