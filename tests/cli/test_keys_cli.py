"""``ringfence keys``: works on fresh and running data dirs; the server honours changes at once."""

from __future__ import annotations

from pathlib import Path

import httpx

from ringfence.testing import create_key, ringfence_cli, run_embedded


def test_keys_create_on_a_fresh_data_dir_prints_the_key_last(tmp_path: Path) -> None:
    out = ringfence_cli("keys", "create", "--name", "producer", "--scope", "events:write", data_dir=tmp_path / "d")
    assert out.stdout.strip().splitlines()[-1].startswith("rf_")
    assert "not shown again" in out.stderr


def test_keys_list_shows_names_and_scopes_but_no_secret(tmp_path: Path) -> None:
    key = create_key(tmp_path / "d", "reader", "alerts:read")
    out = ringfence_cli("keys", "list", data_dir=tmp_path / "d").stdout
    assert "reader" in out
    assert "alerts:read" in out
    assert key.split("_", 2)[2] not in out


def test_bad_requests_fail_with_a_clear_message(tmp_path: Path) -> None:
    bad_scope = ringfence_cli("keys", "create", "--name", "x", "--scope", "root", data_dir=tmp_path / "d", check=False)
    assert bad_scope.returncode == 2
    assert "scope" in bad_scope.stderr
    missing = ringfence_cli("keys", "revoke", "ghost", data_dir=tmp_path / "d", check=False)
    assert missing.returncode == 2
    assert "no active key named 'ghost'" in missing.stderr


def test_a_running_server_honours_new_and_revoked_keys_at_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    with run_embedded(data_dir) as server:
        key = create_key(data_dir, "late-reader", "alerts:read")
        headers = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{server.url}/v1/alerts", headers=headers).status_code == 200
        ringfence_cli("keys", "revoke", "late-reader", data_dir=data_dir)
        refused = httpx.get(f"{server.url}/v1/alerts", headers=headers)
        assert refused.status_code == 401
        assert refused.json()["error"]["message"] == "API key has been revoked"
