"""One producer's events crafted to be slow to validate (text full of escapes in layers and
digits grouped like cards: a hundred times an ordinary event's cost) must not hold every other
producer's requests: past its budget the key is answered 429, and the others are served.
Found by a hostile test: a few hundred such events a second held other producers for minutes."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ringfence.bench.servers import EmbeddedServer, create_key, start_server
from ringfence.runtimes import ingest as ingest_module
from ringfence.runtimes.ingest import ValidationBudget
from ringfence.testing import FixedClock, event

SLOW_TEXT = ("4%252525252525252520" * 20)[:256]


def slow_event() -> dict[str, object]:
    return event(
        "card.authorization",
        event_id=uuid.uuid4().hex,
        customer_id=SLOW_TEXT[:120] + uuid.uuid4().hex[:8],
        merchant={"id": SLOW_TEXT[:128], "name": SLOW_TEXT, "mcc": "5411", "country": "DE"},
        decline_reason=SLOW_TEXT,
    )


@pytest.fixture(params=["true", "false"], ids=["ingest-process", "ingest-in-server"])
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EmbeddedServer]:
    srv = start_server(tmp_path / "data", env={"RINGFENCE_INGEST_PROCESS": request.param})
    yield srv
    srv.stop()


def test_a_key_sending_costly_events_is_turned_away_and_others_are_served(server: EmbeddedServer) -> None:
    attacker = create_key(server.data_dir, "costly", "events:write")
    other = create_key(server.data_dir, "ordinary", "events:write")
    body = "\n".join(json.dumps(slow_event()) for _ in range(1000)).encode()
    ndjson = {"Content-Type": "application/x-ndjson"}
    statuses = []
    with httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {attacker}"}) as c:
        for _ in range(8):
            answer = c.post("/v1/events", content=body, headers=ndjson)
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                assert answer.json()["error"]["code"] == "validation_budget"
                assert int(answer.headers["retry-after"]) >= 1
                break
    assert statuses[0] == 202
    assert statuses[-1] == 429, statuses
    with httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {other}"}) as c:
        started = time.monotonic()
        answer = c.post("/v1/events", json=[event("card.authorization", event_id=uuid.uuid4().hex)])
        assert answer.status_code == 202, answer.text
        assert time.monotonic() - started < 2.0


def test_ordinary_events_spend_no_budget_at_any_rate() -> None:
    clock = FixedClock(1_000.0)
    budget = ValidationBudget(clock)
    for _ in range(10_000):  # 5,000 events a request, each within an ordinary event's time
        budget.charge("k", 5_000 * ingest_module.ORDINARY_EVENT_S * 0.9, 5_000)
        budget.check("k")
    budget.charge("k", ingest_module.COSTLY_BURST_S + 1.0, 1)  # one costly request: over the burst
    with pytest.raises(Exception, match="slower to validate") as refused:
        budget.check("k")
    assert refused.value.details["retry_after"] >= 1  # type: ignore[attr-defined]
    budget.check("another key")  # others are not held
    clock.advance((1.0 + 0.01) / ingest_module.COSTLY_RATE)  # paid back at the rate
    budget.check("k")
