"""Paging the aws runtime's listings through the HTTP API: a cursor is honoured only by the
listing that gave it out (same index, same customer), anything else is a 400, never a 500; and
a filter that matches little costs a bounded read, its pages short (even empty) with a cursor
that clients follow to the end."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from ringfence.alerts.model import AlertQuery
from ringfence.errors import InvalidCursor
from ringfence.runtimes.aws.items import LIST_PAGES
from tests.helpers.aws import READER, Deployment, DeploymentFactory, http_event
from tests.helpers.store import signal

NOW = 1_700_000_000.0


@pytest.fixture
def d(deploy: DeploymentFactory) -> Deployment:
    return deploy(shards=1)


def body(reply: dict[str, Any]) -> Any:
    return json.loads(reply["body"])


def raise_alerts(d: Deployment, count: int, critical: frozenset[int] = frozenset(), **kw: Any) -> None:
    """``count`` alerts, one a second, of severity high but those numbered in ``critical``."""
    for i in range(count):
        hit = signal(i, key=f"k{i}", severity="critical" if i in critical else "high", **kw)
        assert d.runtime.alerts.apply([(f"{i:08d}", hit)], "test", NOW + i) is not None


def owe_notifications(d: Deployment, count: int) -> None:
    table = d.runtime.alerts
    for i in range(count):
        payload = {"notification_id": f"n_{i}", "alerts": []}
        assert table.transact([table.notification_put(f"n_{i}", "g_1", "hook", payload, NOW + i)])


def get(d: Deployment, path: str, query: str, claims: dict[str, Any] = READER) -> dict[str, Any]:
    return d.call(http_event(f"GET {path}", claims, query=query))


def crafted(key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def assert_invalid_cursor(reply: dict[str, Any]) -> None:
    assert reply["statusCode"] == 400, reply
    assert body(reply)["error"]["code"] == "invalid_cursor"


ALERT_KEY = {"pk": {"S": "a|al_x"}, "sk": {"S": "alert"}, "gp": {"S": "alerts"}, "gs": {"S": "0|al_x"}}


@pytest.mark.parametrize(
    "key",
    [
        {"pk": "x", "sk": "x", "gp": "x", "gs": "x"},  # plain strings, not attribute values
        {**ALERT_KEY, "gs": {"N": "1"}},  # the index's sort key is a string
        {**ALERT_KEY, "gs": {"S": 1}},
        {**ALERT_KEY, "gs": {"S": "x", "N": "1"}},
        {**ALERT_KEY, "gs": {"S": ""}},  # DynamoDB refuses an empty key
        {**ALERT_KEY, "gs": {"M": {}}},
        {**ALERT_KEY, "gp": {"S": "notifications"}},  # another partition of the index
        {**ALERT_KEY, "sk": {"S": "n"}},  # not an alert's item
        {k: v for k, v in ALERT_KEY.items() if k != "gs"},
        {**ALERT_KEY, "zz": {"NULL": "true"}},  # another attribute beside the key's (found by a hostile test)
        {**ALERT_KEY, "zz": {"N": "1"}},
        {**ALERT_KEY, "zz": {"B": "AA=="}},
        [ALERT_KEY],
    ],
)
def test_a_crafted_cursor_is_a_bad_request(d: Deployment, key: Any) -> None:
    raise_alerts(d, 2)
    assert_invalid_cursor(get(d, "/v1/alerts", f"cursor={crafted(key)}"))
    assert_invalid_cursor(get(d, "/v1/notifications", f"cursor={crafted(key)}"))


def test_a_cursor_holding_a_key_longer_than_dynamodb_takes_is_refused(d: Deployment) -> None:
    # the API's bound on a cursor's length keeps such a key out; the table refuses it all the same
    too_long = crafted({**ALERT_KEY, "gs": {"S": "é" * 513}})
    with pytest.raises(InvalidCursor):
        d.runtime.alerts.list_alerts(AlertQuery(cursor=too_long))


def test_a_customers_cursor_pages_only_that_customers_alerts(d: Deployment) -> None:
    raise_alerts(d, 3, customer_id="c1")
    raise_alerts(d, 1, customer_id="c2")
    first = body(get(d, "/v1/alerts", "customer_id=c1&limit=1"))
    cursor = first["next_cursor"]
    assert cursor is not None
    assert_invalid_cursor(get(d, "/v1/alerts", f"cursor={cursor}"))  # not a customer's listing
    assert_invalid_cursor(get(d, "/v1/alerts", f"customer_id=c2&cursor={cursor}"))  # another customer's
    assert get(d, "/v1/alerts", f"customer_id=c1&limit=1&cursor={cursor}")["statusCode"] == 200
    # and the other way round: a cursor of all alerts is no customer's
    everyone = body(get(d, "/v1/alerts", "limit=1"))["next_cursor"]
    assert_invalid_cursor(get(d, "/v1/alerts", f"customer_id=c1&cursor={everyone}"))


def test_a_cursor_of_one_listing_is_refused_by_the_other(d: Deployment) -> None:
    raise_alerts(d, 2)
    owe_notifications(d, 2)
    alerts = body(get(d, "/v1/alerts", "limit=1"))["next_cursor"]
    notifications = body(get(d, "/v1/notifications", "limit=1"))["next_cursor"]
    assert alerts is not None
    assert notifications is not None
    assert_invalid_cursor(get(d, "/v1/alerts", f"cursor={notifications}"))
    assert_invalid_cursor(get(d, "/v1/notifications", f"cursor={alerts}"))


class QueryCounter:
    """Counts the DynamoDB queries of the deployment's client."""

    def __init__(self, d: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        db = d.runtime.clients.dynamodb
        query = db.query

        def counted(**kwargs: Any) -> Any:
            self.calls += 1
            return query(**kwargs)

        monkeypatch.setattr(db, "query", counted)

    def take(self) -> int:
        calls, self.calls = self.calls, 0
        return calls


def follow(
    d: Deployment, path: str, query: str, counter: QueryCounter, claims: dict[str, Any] = READER
) -> tuple[list[str], int]:
    """Every id a listing gives out, following its cursors to the end, each request reading at
    most :data:`LIST_PAGES` pages; and how many requests that took."""
    ids: list[str] = []
    cursor, requests = None, 0
    while True:
        reply = get(d, path, query + (f"&cursor={cursor}" if cursor else ""), claims)
        assert reply["statusCode"] == 200, reply
        assert counter.take() <= LIST_PAGES
        requests += 1
        page = body(reply)
        ids += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids, requests


# one request reads at most LIST_PAGES pages of 20 items: this many alerts take more than one
MANY = LIST_PAGES * 20 + 10


def test_a_filter_matching_nothing_reads_a_bounded_number_of_pages(
    d: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    raise_alerts(d, MANY, audience="fraud")
    owe_notifications(d, MANY)
    counter = QueryCounter(d, monkeypatch)
    desk = {**READER, "ringfence_audiences": "[aml]"}  # a desk with no alerts
    assert follow(d, "/v1/alerts", "limit=1", counter, desk) == ([], 2)
    assert follow(d, "/v1/alerts", "limit=1&rule_id=nonexistent", counter) == ([], 2)
    assert follow(d, "/v1/notifications", "limit=1&status=dead", counter) == ([], 2)


def test_sparse_matches_are_all_found_newest_first(d: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    raise_alerts(d, MANY, critical=frozenset({0, 55, MANY - 1}))  # the oldest, one midway, the newest
    counter = QueryCounter(d, monkeypatch)
    ids, _ = follow(d, "/v1/alerts", "limit=2&severity=critical", counter)
    assert [v["title"] for v in d.runtime.alerts.views(ids)] == [f"title {i}" for i in (MANY - 1, 55, 0)]
    everything, requests = follow(d, "/v1/alerts", "limit=50", counter)
    assert len(set(everything)) == len(everything) == MANY
    assert requests == 3


def test_a_cursor_tells_a_desk_nothing_of_the_alerts_it_may_not_see(d: Deployment) -> None:
    """A page ends where DynamoDB's reading stopped, often on another desk's alert: the cursor
    must not name it (an alert's id is a digest of its rule and dedup key: a customer's, guessed)."""
    raise_alerts(d, MANY, audience="aml")
    desk = {**READER, "ringfence_audiences": "[fraud]"}  # a desk that sees none of them
    page = body(get(d, "/v1/alerts", "limit=1", desk))
    assert page["items"] == []
    cursor = page["next_cursor"]
    assert cursor is not None  # more to read: sealed, not plain JSON naming an aml alert
    raw = base64.urlsafe_b64decode(cursor.encode())
    assert b"al_" not in raw
    assert b"alerts" not in raw
    assert get(d, "/v1/alerts", f"limit=1&cursor={cursor}", desk)["statusCode"] == 200
    tampered = bytearray(raw)
    tampered[-1] ^= 1
    assert_invalid_cursor(get(d, "/v1/alerts", f"cursor={base64.urlsafe_b64encode(bytes(tampered)).decode()}"))
