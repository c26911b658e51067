"""FX rates over real HTTP and the CLI: loaded, versioned, audited, followed by a running
server, and used by ingest so amounts are compared in the reference currency."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import httpx

from ringfence.bench.servers import EmbeddedServer, ringfence_cli
from ringfence.testing import event
from tests.helpers.http import post, uid
from tests.helpers.keys import Keys

TODAY = dt.datetime.now(dt.UTC).date()
RATES = [
    {"currency": "HUF", "rate": "0.0025", "as_of": TODAY.isoformat()},
    {"currency": "JPY", "rate": "0.0061", "as_of": TODAY.isoformat()},
    {"currency": "KWD", "rate": "2.97", "as_of": (TODAY - dt.timedelta(days=30)).isoformat()},  # stale
]


def _alerts(c: httpx.Client, customer: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = c.get("/v1/alerts", params={"customer_id": customer}).json()["items"]
    return items


def test_rates_loaded_through_the_api_are_versioned_audited_and_shown(server: EmbeddedServer, keys: Keys) -> None:
    with server.client(keys.admin) as c:
        before = c.get("/v1/fx/rates").json()
        assert before["reference"] == "EUR"
        response = c.put("/v1/fx/rates", json={"rates": RATES})
        assert response.status_code == 200, response.text
        table = response.json()
        assert table["version"] > before["version"]
        assert [(r["currency"], r["rate"], r["stale"]) for r in table["rates"]] == [
            ("HUF", "0.0025", False),
            ("JPY", "0.0061", False),
            ("KWD", "2.97", True),
        ]
        assert table["stale"] == 1
        assert c.get("/v1/fx/rates").json() == table
        entries = c.get("/v1/audit", params={"limit": 20}).json()["items"]
        (load,) = [e for e in entries if e["action"] == "fx.load" and e["detail"]["version"] == table["version"]]
        assert load["actor"] == "key:admin"
        assert set(load["detail"]["added"]) >= {"HUF", "JPY", "KWD"} - {r["currency"] for r in before["rates"]}
        stats = c.get("/v1/stats").json()["fx"]
        assert (stats["version"], stats["rates"], stats["stale"]) == (table["version"], 3, 1)


def test_amounts_are_compared_in_the_reference_currency_with_the_rate_in_the_evidence(
    server: EmbeddedServer, keys: Keys
) -> None:
    with server.client(keys.admin) as c:
        assert c.put("/v1/fx/rates", json={"rates": RATES}).status_code == 200
        small, large = uid("cus"), uid("cus")
        transfer = {"payee_id": "pay_1", "currency": "HUF"}
        post(server, keys.producer, [event("transfer.initiated", customer_id=small, amount="2000.00", **transfer)])
        post(server, keys.producer, [event("transfer.initiated", customer_id=large, amount="1000000.00", **transfer)])
        server.wait_processed(keys.admin)
        assert _alerts(c, small) == []  # 2,000 HUF is about EUR 5: not a large payment
        (alert,) = [a for a in _alerts(c, large) if a["rule_id"] == "notify_large_transaction"]
        assert alert["title"] == "Large payment of 1000000 HUF"  # as the customer sent it
        full = c.get(f"/v1/alerts/{alert['id']}").json()
        assert full["evidence"]["events"][-1]["fx"] == {
            "reference": "EUR",
            "rate": "0.0025",
            "as_of": TODAY.isoformat(),
        }


def test_an_event_in_a_currency_with_no_rate_is_accepted_flagged_and_counted(
    server: EmbeddedServer, keys: Keys
) -> None:
    customer = uid("cus")
    with server.client(keys.admin) as c:
        missing_before = c.get("/v1/stats").json()["fx"]["missing_rate_events"]
        big = event("transfer.initiated", customer_id=customer, amount="5000000.00", currency="CHF", payee_id="pay_1")
        reply = post(server, keys.producer, [big])
        assert reply.status_code == 202
        assert reply.json()["accepted"] == 1
        server.wait_processed(keys.admin)
        # no threshold compared the raw amount: operations are told, nobody else
        assert {a["rule_id"] for a in _alerts(c, customer)} <= {"ops_fx_rate_missing"}
        ops = c.get("/v1/alerts", params={"rule_id": "ops_fx_rate_missing"}).json()["items"]
        assert any(a["labels"]["currency"] == "CHF" for a in ops)
        assert c.get("/v1/stats").json()["fx"]["missing_rate_events"] == missing_before + 1
        assert 'ringfence_fx_missing_rate_events_total{currency="CHF"}' in c.get("/metrics").text


def test_rates_load_from_csv_and_bad_tables_are_refused_naming_each_fault(server: EmbeddedServer, keys: Keys) -> None:
    csv = f"currency,rate,as_of,source\nUSD,0.92,{TODAY},ECB\nGBP,1.17,{TODAY},ECB\n"
    with server.client(keys.admin) as c:
        loaded = c.put("/v1/fx/rates", content=csv, headers={"Content-Type": "text/csv"})
        assert loaded.status_code == 200, loaded.text
        assert [r["currency"] for r in loaded.json()["rates"]] == ["GBP", "USD"]
        bad = c.put("/v1/fx/rates", json={"rates": [{"currency": "USD", "rate": "-1", "as_of": "2026-13-01"}]})
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "invalid_rates"
        assert [e["field"] for e in bad.json()["error"]["details"]["errors"]] == ["rates[0].rate", "rates[0].as_of"]
        assert c.put("/v1/fx/rates", json={"values": []}).status_code == 400
        assert c.put("/v1/fx/rates", content="currency\nUSD\n", headers={"Content-Type": "text/csv"}).status_code == 400
        too_big = c.put("/v1/fx/rates", content=b"x" * (300 * 1024), headers={"Content-Type": "text/csv"})
        assert too_big.status_code == 413
        assert c.get("/v1/fx/rates").json()["version"] == loaded.json()["version"]  # nothing refused was stored
    with server.client(keys.analyst) as c:  # alerts:read and alerts:write: rates need rules:write
        assert c.put("/v1/fx/rates", json={"rates": []}).status_code == 403


def test_a_cli_load_reaches_the_running_server(server: EmbeddedServer, keys: Keys, tmp_path: Path) -> None:
    rates = tmp_path / "rates.csv"
    rates.write_text(f"currency,rate,as_of\nSEK,0.087,{TODAY}\n")
    done = ringfence_cli("fx", "load", str(rates), data_dir=server.data_dir)
    assert "1 rates against EUR" in done.stdout
    version = int(done.stdout.split()[3].rstrip(":"))
    shown = ringfence_cli("fx", "show", data_dir=server.data_dir).stdout
    assert f"SEK\t0.087\t{TODAY}" in shown
    deadline = time.monotonic() + 15
    with server.client(keys.admin) as c:
        while c.get("/v1/fx/rates").json()["version"] != version:
            assert time.monotonic() < deadline, "the server did not follow the CLI's load"
            time.sleep(0.5)
    broken = tmp_path / "broken.csv"
    broken.write_text("currency,rate,as_of\nSEK,abc,2026-12-01\n")
    refused = ringfence_cli("fx", "load", str(broken), data_dir=server.data_dir, check=False)
    assert refused.returncode == 2
    assert "rates[0].rate" in refused.stderr
