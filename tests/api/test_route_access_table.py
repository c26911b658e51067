"""Every route of the OpenAPI document, called by every role, an audience-limited key and an
anonymous client against a real server, answers as ONE table says.

A route in the document but not in the table fails the test (and so does a stale row): a new
route is not done until its row says who may call it. To add a route, add one row to ``TABLE``
and, if its path has a new placeholder or it needs a body, a line to ``PLACEHOLDERS``/``BODIES``.

Cells, one per column of ``ROLES``:
  ``Y`` allowed: a 2xx answer      ``A`` 401: no valid credentials
  ``N`` 403: forbidden             ``H`` 404: past the access checks, the object is hidden or absent
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from ringfence.api.app import ROUTES
from ringfence.bench.servers import EmbeddedServer, create_key, ringfence_cli, start_server
from ringfence.testing import event
from tests.helpers.http import risky_transfer, uid

OPENAPI = Path(__file__).resolve().parents[2] / "src" / "ringfence" / "api" / "openapi.json"

ROLES = ("anonymous", "viewer", "analyst", "producer", "rules_editor", "admin", "fraud_analyst")
# fmt: off
TABLE: dict[tuple[str, str], str] = {
    # route                                                    anon view anal prod rule admn fraud-only
    ("GET", "/healthz"):                                        "Y    Y    Y    Y    Y    Y    Y",
    ("GET", "/readyz"):                                         "A    Y    Y    Y    Y    Y    Y",
    ("GET", "/metrics"):                                        "A    Y    Y    N    N    Y    N",
    ("GET", "/openapi.json"):                                   "A    Y    Y    Y    Y    Y    Y",
    ("POST", "/v1/events"):                                     "A    N    N    Y    N    Y    N",
    ("GET", "/v1/events/late"):                                 "A    Y    Y    N    N    Y    N",
    ("GET", "/v1/alerts"):                                      "A    Y    Y    N    N    Y    Y",
    ("GET", "/v1/alerts/counts"):                               "A    Y    Y    N    N    Y    Y",
    ("GET", "/v1/alerts/stream"):                               "A    Y    Y    N    N    Y    Y",
    ("GET", "/v1/alerts/{alert_id}"):                           "A    Y    Y    N    N    Y    H",
    ("GET", "/v1/alerts/{alert_id}/events"):                    "A    Y    Y    N    N    Y    H",
    ("POST", "/v1/alerts/{alert_id}/ack"):                      "A    N    Y    N    N    Y    H",
    ("POST", "/v1/alerts/{alert_id}/resolve"):                  "A    N    Y    N    N    Y    H",
    ("POST", "/v1/alerts/{alert_id}/assign"):                   "A    N    Y    N    N    Y    H",
    ("POST", "/v1/alerts/{alert_id}/comments"):                 "A    N    Y    N    N    Y    H",
    ("GET", "/v1/silences"):                                    "A    Y    Y    N    N    Y    N",
    ("POST", "/v1/silences"):                                   "A    N    Y    N    N    Y    N",
    ("DELETE", "/v1/silences/{silence_id}"):                    "A    N    Y    N    N    Y    N",
    ("GET", "/v1/notifications"):                               "A    Y    Y    N    N    Y    N",
    ("POST", "/v1/notifications/{notification_id}/redrive"):    "A    N    H    N    N    H    N",
    ("GET", "/v1/rules"):                                       "A    Y    Y    N    Y    Y    Y",
    ("PUT", "/v1/rules"):                                       "A    N    N    N    Y    Y    N",
    ("POST", "/v1/rules/validate"):                             "A    N    N    N    Y    Y    N",
    ("POST", "/v1/rules/backtest"):                             "A    Y    Y    N    N    Y    N",
    ("GET", "/v1/lists/{name}"):                                "A    Y    Y    N    Y    Y    Y",
    ("PUT", "/v1/lists/{name}"):                                "A    N    N    N    Y    Y    N",
    ("GET", "/v1/fx/rates"):                                    "A    Y    Y    N    Y    Y    Y",
    ("PUT", "/v1/fx/rates"):                                    "A    N    N    N    Y    Y    N",
    ("GET", "/v1/customers/{customer_id}/features"):            "A    Y    Y    N    N    Y    N",
    ("GET", "/v1/customers/{customer_id}/events"):              "A    Y    Y    N    N    Y    N",
    ("GET", "/v1/stats"):                                       "A    Y    Y    N    N    Y    N",
    ("GET", "/v1/audit"):                                       "A    N    N    N    N    Y    N",
    ("GET", "/v1/quarantine"):                                  "A    N    N    N    N    Y    N",
    ("POST", "/v1/quarantine/{entry_id}/redrive"):              "A    N    N    N    N    H    N",
    ("POST", "/v1/session"):                                    "A    Y    Y    Y    Y    Y    Y",
    ("DELETE", "/v1/session"):                                  "A    Y    Y    Y    Y    Y    Y",
    ("GET", "/v1/session"):                                     "A    A    A    A    A    A    A",  # keys: no session
}
# fmt: on
STATUS_CLASS = {"Y": "2xx", "A": "401", "N": "403", "H": "404"}


def document_routes() -> set[tuple[str, str]]:
    paths = json.loads(OPENAPI.read_text())["paths"]
    methods = ("get", "put", "post", "delete", "patch")
    return {(m.upper(), path) for path, operations in paths.items() for m in operations if m in methods}


def status_class(status: int) -> str:
    return "2xx" if 200 <= status < 300 else str(status)


@dataclass
class Fixture:
    """The server, a key per role, and objects to act on (a fresh alert or silence per call)."""

    server: EmbeddedServer
    keys: dict[str, str | None]
    customer: str
    pack: str
    alerts: Iterator[str]
    silences: Iterator[str]
    extra: dict[str, Any] = field(default_factory=dict)


PLACEHOLDERS: dict[str, Callable[[Fixture], str]] = {
    "alert_id": lambda f: next(f.alerts),
    "silence_id": lambda f: next(f.silences),
    "customer_id": lambda f: f.customer,
    "name": lambda f: "blocked_merchants",
    "notification_id": lambda f: "n_none",
    "entry_id": lambda f: "999999999",
}
FUTURE = datetime.fromtimestamp(time.time() + 86_400, UTC).isoformat()  # silences last a year at most
TODAY = datetime.now(UTC).date().isoformat()
BODIES: dict[tuple[str, str], Callable[[Fixture, str], dict[str, Any]]] = {
    ("POST", "/v1/events"): lambda f, role: {"json": [event("login.succeeded", customer_id=uid("cus"))]},
    ("POST", "/v1/alerts/{alert_id}/assign"): lambda f, role: {"json": {"assignee": "someone"}},
    ("POST", "/v1/alerts/{alert_id}/comments"): lambda f, role: {"json": {"text": "looked at it"}},
    ("POST", "/v1/silences"): lambda f, role: {"json": {"matchers": ["rule_id=x"], "ends_at": FUTURE, "comment": "t"}},
    ("PUT", "/v1/rules"): lambda f, role: yaml(f.pack),
    ("POST", "/v1/rules/validate"): lambda f, role: yaml(f.pack),
    ("POST", "/v1/rules/backtest"): lambda f, role: {**yaml(f.pack), "params": {"limit": 10}},
    ("PUT", "/v1/lists/{name}"): lambda f, role: {"json": {"values": ["mer_bad"]}},
    ("PUT", "/v1/fx/rates"): lambda f, role: {"json": {"rates": [{"currency": "USD", "rate": "0.92", "as_of": TODAY}]}},
    ("POST", "/v1/session"): lambda f, role: {"json": {"key": f.keys[role] or "rf_000000000000_" + "A" * 43}},
}


def yaml(text: str) -> dict[str, Any]:
    return {"content": text.encode(), "headers": {"Content-Type": "application/yaml"}}


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixture]:
    data_dir = tmp_path_factory.mktemp("routes") / "data"
    keys: dict[str, str | None] = {
        "anonymous": None,
        "producer": create_key(data_dir, "producer", "events:write"),
        "rules_editor": create_key(data_dir, "rules-editor", "rules:read", "rules:write"),
    }
    for role in ("viewer", "analyst", "admin"):
        keys[role] = role_key(data_dir, role, role)
    keys["fraud_analyst"] = role_key(data_dir, "fraud-analyst", "analyst", "fraud")
    unlimited = {
        "RINGFENCE_RATE_LIMIT_PER_S": "100000",
        "RINGFENCE_RATE_LIMIT_BURST": "100000",
        "RINGFENCE_SIGNIN_ATTEMPTS_PER_MIN": "100000",
        "RINGFENCE_AUTH_FAILURES_PER_MIN": "100000",
    }
    server = start_server(data_dir, env=unlimited)
    try:
        wanted = len(ROLES) * sum(1 for _, path in TABLE if "{alert_id}" in path)
        customers = [uid("cus") for _ in range(wanted)]  # one aml alert each: hidden from the fraud-only key
        with server.client(keys["producer"]) as c:
            sent = c.post("/v1/events", json=[risky_transfer(customer) for customer in customers])
            assert sent.status_code == 202, sent.text
        server.wait_processed(str(keys["admin"]))
        with server.client(keys["admin"]) as c:
            listed = c.get("/v1/alerts", params={"audience": "aml", "limit": 500}).json()["items"]
            alerts = [a["id"] for a in listed]
            assert len(alerts) == wanted
            silence = {"matchers": ["rule_id=none"], "ends_at": FUTURE, "comment": "table"}
            silences = [c.post("/v1/silences", json=silence).json()["id"] for _ in ROLES]
            pack = c.get("/v1/rules").json()["text"]
        yield Fixture(server, keys, customers[0], pack, iter(alerts), iter(silences))
    finally:
        assert server.stop(), server.log_path.read_text()[-3000:]


def role_key(data_dir: Path, name: str, role: str, *audiences: str) -> str:
    args = ["keys", "create", "--name", name, "--role", role, *itertools.chain(*(("--audience", a) for a in audiences))]
    return ringfence_cli(*args, data_dir=data_dir).stdout.strip().splitlines()[-1]


def call(f: Fixture, method: str, path: str, role: str) -> int:
    """Make the row's request as ``role``; return the status (a stream is closed once it answers)."""
    url = path
    for name, value in PLACEHOLDERS.items():
        if "{" + name + "}" in url:
            url = url.replace("{" + name + "}", value(f))
    assert "{" not in url, f"add the placeholder of {path} to PLACEHOLDERS"
    kwargs = BODIES.get((method, path), lambda f, role: {})(f, role)
    with f.server.client(f.keys[role]) as client:
        if path == "/v1/alerts/stream":
            with client.stream(method, url, **kwargs) as response:
                return response.status_code
        return client.request(method, url, **kwargs).status_code


def test_every_route_of_the_document_has_a_row_and_no_row_is_stale() -> None:
    documented = document_routes()
    assert sorted(documented - set(TABLE)) == [], "add these routes to TABLE: who may call them?"
    assert sorted(set(TABLE) - documented) == [], "these rows name no route of openapi.json"
    assert all(len(cells.split()) == len(ROLES) for cells in TABLE.values())


def test_every_api_route_of_the_app_is_in_the_document() -> None:
    # a template's convertor ({customer_id:path}: an id may hold "/") is not OpenAPI's to say
    served = {(m, re.sub(r":\w+}", "}", route.path)) for route in ROUTES for m in route.methods or () if m != "HEAD"}
    assert sorted(served - document_routes()) == []


def test_every_route_answers_every_role_as_the_table_says(fixture: Fixture) -> None:
    wrong = []
    for (method, path), cells in TABLE.items():
        for role, cell in zip(ROLES, cells.split(), strict=True):
            got = status_class(call(fixture, method, path, role))
            if got != STATUS_CLASS[cell]:
                wrong.append(f"{method} {path} as {role}: {got}, table says {STATUS_CLASS[cell]}")
    assert wrong == []
    assert httpx.get(f"{fixture.server.url}/healthz").status_code == 200
