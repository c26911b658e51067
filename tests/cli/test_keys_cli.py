"""``ringfence keys``: works on fresh and running data dirs; the server honours changes at once."""

from __future__ import annotations

from pathlib import Path

import httpx

from ringfence.bench.servers import create_key, ringfence_cli, run_embedded


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
    assert "unknown scope(s) root" in bad_scope.stderr
    no_scope = ringfence_cli("keys", "create", "--name", "x", data_dir=tmp_path / "d", check=False)
    assert no_scope.returncode == 2
    assert "--scope" in no_scope.stderr
    assert "--role" in no_scope.stderr
    assert "[]" not in no_scope.stderr
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


def test_keys_create_binds_a_producer_to_its_sources_and_list_says_who_is_unbound(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    options = ["--scope", "events:write", "--source", "web", "--source", "mobile-app"]
    bound = ringfence_cli("keys", "create", "--name", "app", *options, data_dir=data_dir)
    assert "sources mobile-app, web" in bound.stderr
    assert "any source" not in bound.stderr
    legacy = ringfence_cli("keys", "create", "--name", "legacy", "--scope", "events:write", data_dir=data_dir)
    assert "it may send events of any source; bind a producer's key with --source" in legacy.stderr
    create_key(data_dir, "reader", "alerts:read")
    rows = {
        cells[0]: cells
        for line in ringfence_cli("keys", "list", data_dir=data_dir).stdout.splitlines()
        if len(cells := [c.strip() for c in line.strip("│").split("│")]) > 4
    }
    assert rows["app"][4] == "mobile-app web"
    assert rows["legacy"][4] == "any (unbound)"
    assert rows["reader"][4] == "-"  # writes no events
    bad = ringfence_cli(
        "keys", "create", "--name", "x", "--scope", "events:write", "--source", "a b", data_dir=data_dir, check=False
    )
    assert bad.returncode == 2
    assert "invalid source" in bad.stderr


def test_a_damaged_store_is_one_line_naming_it_not_a_traceback(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    data_dir.mkdir(mode=0o700)
    (data_dir / "store.sqlite3").write_bytes(b"not a database " * 100)
    done = ringfence_cli("keys", "list", data_dir=data_dir, check=False)
    assert (done.returncode, "Traceback" in done.stderr) == (1, False), done.stderr
    assert "error: a SQLite file of the data dir is damaged (file is not a database)" in done.stderr
