"""The rule pack lifecycle and run-time lists over real HTTP: validate, hot reload, audit."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from ringfence.bench.servers import EmbeddedServer, create_key, run_embedded
from ringfence.engine import default_pack_text
from ringfence.testing import event
from tests.helpers.http import post, uid
from tests.helpers.keys import Keys

YAML = {"Content-Type": "application/yaml"}


def test_get_rules_shows_the_pack_with_every_detection(server: EmbeddedServer, keys: Keys) -> None:
    with server.client(keys.admin) as c:
        body = c.get("/v1/rules").json()
    assert body["version"]
    assert len(body["detections"]) >= 20
    kinds = {d["kind"] for d in body["detections"]}
    assert kinds == {"rule", "sequence", "absence"}
    assert body["text"] == default_pack_text()
    assert "high_risk_countries" in body["lists"]


def test_validate_reports_errors_naming_the_rule_and_position(server: EmbeddedServer, keys: Keys) -> None:
    broken = default_pack_text().replace("when: card_auths_10m >= 8", "when: card_auths_10m >= 8 and nope > 1")
    with server.client(keys.admin) as c:
        response = c.post("/v1/rules/validate", content=broken, headers=YAML)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid_rule_pack"
        assert "rules[0] (card_velocity)" in error["message"]
        assert "unknown name 'nope'" in error["message"]
        assert "column" in error["message"]
        ok = c.post("/v1/rules/validate", content=default_pack_text(), headers=YAML).json()
        assert ok["valid"] is True
        assert ok["state_reset"] == []
        assert (
            c.post("/v1/rules/validate", content="{}", headers={"Content-Type": "application/json"}).status_code == 415
        )


def test_rule_changes_need_rules_write(server: EmbeddedServer, keys: Keys) -> None:
    with server.client(keys.analyst) as c:
        assert c.put("/v1/rules", content=default_pack_text(), headers=YAML).status_code == 403
        assert c.put("/v1/lists/high_risk_countries", json={"values": []}).status_code == 403


def test_lists_edited_at_run_time_apply_without_restart_and_are_audited(server: EmbeddedServer, keys: Keys) -> None:
    customer = uid("cus")
    transfer = {"payee_id": "pay_1", "payee_country": "PA", "amount": "100.00"}
    with server.client(keys.admin) as c:
        before = c.get("/v1/lists/high_risk_countries").json()["values"]
        assert "PA" not in before
        response = c.put("/v1/lists/high_risk_countries", json={"values": [*before, "PA"]})
        assert response.status_code == 200
        assert "PA" in response.json()["values"]
        post(server, keys.producer, [event("transfer.initiated", customer_id=customer, **transfer)])
        server.wait_processed(keys.admin)
        alerts = c.get("/v1/alerts", params={"customer_id": customer}).json()["items"]
        assert [a["rule_id"] for a in alerts] == ["transfer_high_risk_country"]
        assert c.put("/v1/lists/high_risk_countries", json={"values": before}).status_code == 200
        entries = c.get("/v1/audit", params={"limit": 50}).json()["items"]
        edits = [e for e in entries if e["action"] == "list.put" and e["target"] == "high_risk_countries"]
        assert [e["detail"]["added"] for e in edits[:2]] == [0, 1]  # newest first: removed PA, added PA
        assert edits[0]["actor"] == "key:admin"
        assert c.get("/v1/lists/nope").status_code == 404
        assert c.put("/v1/lists/high_risk_countries", json={"values": [""]}).status_code == 400
        assert c.put("/v1/lists/high_risk_countries", json={"vals": []}).status_code == 400


def test_customer_features_explain_the_current_values(server: EmbeddedServer, keys: Keys) -> None:
    customer = uid("cus")
    events = [event("login.failed", customer_id=customer) for _ in range(3)]
    post(server, keys.producer, events)
    server.wait_processed(keys.reader)
    with server.client(keys.reader) as c:
        body = c.get(f"/v1/customers/{customer}/features").json()
    assert body["customer_id"] == customer
    assert body["features"]["failed_logins_10m"] == 3


def test_a_hot_reload_keeps_unchanged_state_resets_changed_and_survives_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    key = create_key(data_dir, "admin", "admin")
    headers = {"Authorization": f"Bearer {key}"}
    customer = uid("cus")
    cards = [event("card.authorization", customer_id=customer, card_id="tok_hot") for _ in range(5)]
    failures = [event("login.failed", customer_id=customer) for _ in range(2)]
    block = "  - name: card_auths_10m\n    on: [card.authorization]\n    by: data.card_id\n    agg: count\n"
    new_pack = (
        default_pack_text()
        .replace('version: "', 'version: "hot-')
        .replace(block + "    window: 10m", block + "    window: 15m")
    )
    assert new_pack != default_pack_text()
    with run_embedded(data_dir) as server:
        httpx.post(f"{server.url}/v1/events", json=cards + failures, headers=headers).raise_for_status()
        server.wait_processed(key)
        reload = httpx.put(f"{server.url}/v1/rules", content=new_pack, headers={**headers, **YAML})
        assert reload.status_code == 200, reload.text
        assert reload.json()["state_reset"] == ["card_auths_10m"]
        deadline = time.monotonic() + 10
        while (
            httpx.get(f"{server.url}/readyz", headers=headers).json()["rule_pack_version"] != reload.json()["version"]
        ):
            assert time.monotonic() < deadline
            httpx.post(
                f"{server.url}/v1/events", json=[event("login.succeeded", customer_id=uid("c"))], headers=headers
            )
            time.sleep(0.05)
        features = httpx.get(f"{server.url}/v1/customers/{customer}/features", headers=headers).json()["features"]
        assert features["failed_logins_10m"] == 2  # unchanged definition: state kept
        version = reload.json()["version"]
    with run_embedded(data_dir) as server:  # the activated pack is what a restart loads
        rules = httpx.get(f"{server.url}/v1/rules", headers=headers).json()
        assert rules["version"] == version
        assert rules["activated_by"] == "key:admin"
        trail = httpx.get(f"{server.url}/v1/audit", headers=headers).json()["items"]
        assert any(e["action"] == "rules.activate" and e["target"] == version for e in trail)
        features = httpx.get(f"{server.url}/v1/customers/{customer}/features", headers=headers).json()["features"]
        assert features["failed_logins_10m"] == 2


@pytest.mark.parametrize("limit", ["0", "abc"])
def test_backtest_checks_its_parameters(server: EmbeddedServer, keys: Keys, limit: str) -> None:
    with server.client(keys.admin) as c:
        response = c.post("/v1/rules/backtest", params={"limit": limit}, content=default_pack_text(), headers=YAML)
    assert response.status_code == 400


def test_backtest_compares_a_candidate_with_the_live_pack(server: EmbeddedServer, keys: Keys) -> None:
    customer = uid("cus")
    post(server, keys.producer, [event("balance.updated", customer_id=customer, balance="70.00")])
    server.wait_processed(keys.admin)
    candidate = default_pack_text().replace("when: data.balance_ref < 50", "when: data.balance_ref < 100")
    with server.client(keys.admin) as c:
        body = c.post("/v1/rules/backtest", content=candidate, headers=YAML).json()
    assert body["events"] >= 1
    hits = body["hits"]["notify_low_balance"]
    assert hits["candidate"] >= hits["live"] + 1


def test_a_pack_the_engine_setting_cannot_run_is_refused_before_it_is_stored(tmp_path: Path) -> None:
    """An input assessment: with ``engine: native``, a pack with a half_space_trees score (River's
    model, Python only) was accepted (200) and stored as live; the processor failed to reload it
    and ran on with the old pack, and the next start refused the stored one (exit 2)."""
    data_dir = tmp_path / "d"
    key = create_key(data_dir, "admin", "admin")
    headers = {"Authorization": f"Bearer {key}"}
    hst = "  - name: amount_hst\n    kind: half_space_trees\n    by: global\n    of: [data.amount]\n"
    pack = default_pack_text().replace('version: "', 'version: "hst-').replace("anomaly:\n", "anomaly:\n" + hst, 1)
    assert "amount_hst" in pack
    native = {"RINGFENCE_ENGINE": "native"}
    with run_embedded(data_dir, env=native) as server:
        before = httpx.get(f"{server.url}/v1/rules", headers=headers).json()["digest"]
        for answer in (
            httpx.post(f"{server.url}/v1/rules/validate", content=pack, headers={**headers, **YAML}),
            httpx.put(f"{server.url}/v1/rules", content=pack, headers={**headers, **YAML}),
        ):
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["code"] == "invalid_rule_pack"
            assert "half_space_trees" in answer.json()["error"]["message"]
            assert "engine setting" in answer.json()["error"]["message"]
        assert httpx.get(f"{server.url}/v1/rules", headers=headers).json()["digest"] == before
    with run_embedded(data_dir, env=native) as server:  # starts: nothing was stored
        assert httpx.get(f"{server.url}/v1/rules", headers=headers).json()["digest"] == before
    with run_embedded(data_dir) as server:  # ``auto`` runs it (on the Python engine)
        # builds the model before storing the pack: River's first import, 2 s here
        answer = httpx.put(f"{server.url}/v1/rules", content=pack, headers={**headers, **YAML}, timeout=30)
        assert answer.status_code == 200, answer.text


def test_a_pack_whose_model_cannot_be_built_is_refused_and_not_stored(tmp_path: Path) -> None:
    """River there but failing to import (a binary built for another numpy, say): the check
    finds River and passes the pack; the PUT builds its model before storing it, and refuses
    it (400) rather than storing a pack the processor's reload and the next start would fail on."""
    broken = tmp_path / "site" / "river"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('numpy.dtype size changed')\n")
    data_dir = tmp_path / "d"
    key = create_key(data_dir, "admin", "admin")
    headers = {"Authorization": f"Bearer {key}", **YAML}
    hst = "  - name: amount_hst\n    kind: half_space_trees\n    by: global\n    of: [data.amount]\n"
    pack = default_pack_text().replace('version: "', 'version: "hst-').replace("anomaly:\n", "anomaly:\n" + hst, 1)
    with run_embedded(data_dir, env={"PYTHONPATH": str(broken.parent)}) as server:
        before = httpx.get(f"{server.url}/v1/rules", headers=headers).json()["digest"]
        assert httpx.post(f"{server.url}/v1/rules/validate", content=pack, headers=headers).status_code == 200
        answer = httpx.put(f"{server.url}/v1/rules", content=pack, headers=headers, timeout=30)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "invalid_rule_pack"
        assert "numpy.dtype size changed" in answer.json()["error"]["message"]
        assert httpx.get(f"{server.url}/v1/rules", headers=headers).json()["digest"] == before
        assert httpx.get(f"{server.url}/healthz").status_code == 200
    with run_embedded(data_dir) as server:  # starts, on the pack it had
        assert httpx.get(f"{server.url}/v1/rules", headers=headers).json()["digest"] == before
