"""Abuse limits over real HTTP: per-key rate limits and failed-authentication limits answer
429 with Retry-After, and the server stays healthy and keeps processing."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ringfence.api.ratelimit import TokenBuckets
from ringfence.bench.servers import create_key, start_server
from ringfence.errors import RequestError
from ringfence.testing import FixedClock, event


def test_token_buckets_refill_at_their_rate() -> None:
    clock = FixedClock()
    buckets = TokenBuckets(rate=2.0, burst=3.0, clock=clock)
    assert [buckets.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k") == pytest.approx(0.5)
    assert buckets.take("other") == 0.0  # per name
    clock.advance(0.5)
    assert buckets.take("k") == 0.0
    with pytest.raises(RequestError) as info:
        buckets.check("k", "slow down")
    assert info.value.status == 429
    assert info.value.details == {"retry_after": 1}


def test_limits_answer_429_with_retry_after_and_the_server_keeps_working(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    key = create_key(data_dir, "producer", "events:write", "alerts:read")
    other = create_key(data_dir, "other", "alerts:read")
    env = {"RINGFENCE_RATE_LIMIT_PER_S": "1", "RINGFENCE_RATE_LIMIT_BURST": "3", "RINGFENCE_AUTH_FAILURES_PER_MIN": "5"}
    server = start_server(data_dir, env=env)
    try:
        with server.client(key) as c:
            statuses = [c.post("/v1/events", json=[event()]).status_code for _ in range(6)]
            assert statuses[:3] == [202, 202, 202]
            limited = c.get("/v1/alerts")
            assert limited.status_code == 429
            assert int(limited.headers["retry-after"]) >= 1
            assert limited.json()["error"]["code"] == "rate_limited"
        with server.client(other) as c:
            assert c.get("/v1/alerts").status_code == 200  # one key's flood does not starve another
        bad = [
            httpx.get(f"{server.url}/v1/alerts", headers={"Authorization": "Bearer nope"}).status_code for _ in range(7)
        ]
        assert bad[:5] == [401] * 5
        assert bad[-1] == 429
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        body = server.wait_processed(other)
        assert body["processed_offset"] == 3
    finally:
        assert server.stop()
