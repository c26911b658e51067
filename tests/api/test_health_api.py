"""Health, readiness, metrics, OpenAPI and the headers every response carries."""

from __future__ import annotations

import json
import re
from importlib import resources

import httpx

from ringfence.api.app import ROUTES
from ringfence.bench.servers import EmbeddedServer
from tests.helpers.keys import Keys


def test_healthz_needs_no_key(server: EmbeddedServer) -> None:
    response = httpx.get(f"{server.url}/healthz")
    assert response.json() == {"status": "ok"}


def test_every_other_endpoint_needs_a_key(server: EmbeddedServer) -> None:
    for path in ("/readyz", "/metrics", "/openapi.json", "/v1/alerts", "/v1/alerts/x", "/v1/events/late"):
        response = httpx.get(f"{server.url}{path}")
        assert response.status_code == 401, path
    for path in ("/v1/events", "/v1/alerts/x/ack", "/v1/alerts/x/resolve"):
        assert httpx.post(f"{server.url}{path}").status_code == 401, path


def test_readyz_reports_lag(server: EmbeddedServer, keys: Keys) -> None:
    body = server.wait_processed(keys.producer)
    assert body["ready"] is True
    assert body["lag_events"] == 0
    assert body["rule_pack_version"]


def test_metrics_expose_the_documented_series(server: EmbeddedServer, keys: Keys) -> None:
    with server.client(keys.reader) as c:
        text = c.get("/metrics").text
    for name in (
        "ringfence_events_ingested_total",
        "ringfence_events_duplicate_total",
        "ringfence_events_rejected_total",
        "ringfence_events_late_total",
        "ringfence_events_processed_total",
        "ringfence_processor_lag_events",
        "ringfence_ingest_to_alert_seconds_bucket",
    ):
        assert name in text, name


def test_openapi_served_is_the_committed_document_and_covers_every_route(server: EmbeddedServer, keys: Keys) -> None:
    with server.client(keys.reader) as c:
        served = c.get("/openapi.json").json()
    committed = json.loads(resources.files("ringfence.api").joinpath("openapi.json").read_text())
    assert served == committed
    documented = {(path, method.upper()) for path, ops in committed["paths"].items() for method in ops}
    # a template's convertor ({customer_id:path}: an id may hold "/") is not OpenAPI's to say
    routed = {(re.sub(r":\w+}", "}", r.path), m) for r in ROUTES for m in (r.methods or ()) if m != "HEAD"}
    assert documented == routed


def test_security_headers_and_json_errors_on_unknown_paths(server: EmbeddedServer) -> None:
    response = httpx.get(f"{server.url}/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert "server" not in response.headers
    # another site's window keeps no handle on ours, nor loads our answers as its resources
    assert response.headers["cross-origin-opener-policy"] == "same-origin"
    assert response.headers["cross-origin-resource-policy"] == "same-origin"
    assert "camera=()" in response.headers["permissions-policy"]


def test_wrong_method_is_405(server: EmbeddedServer, keys: Keys) -> None:
    with server.client(keys.admin) as c:
        assert c.delete("/v1/events").status_code == 405
