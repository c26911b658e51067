"""Producer request signing: a key registered with an Ed25519 public key only ingests
requests signed with the matching private key, fresh, over the exact body."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ringfence.bench.servers import ringfence_cli, run_embedded
from ringfence.testing import event


def sign(private: ed25519.Ed25519PrivateKey, body: bytes, timestamp: int) -> dict[str, str]:
    signature = private.sign(str(timestamp).encode() + b"." + body)
    return {
        "X-Ringfence-Timestamp": str(timestamp),
        "X-Ringfence-Signature": "ed25519=" + base64.b64encode(signature).decode(),
    }


def public_key_file(private: ed25519.Ed25519PrivateKey, path: Path) -> Path:
    """``private``'s public key, as a producer hands it over (PEM), at ``path``."""
    path.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path


def test_signed_requests(tmp_path: Path) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    pem = public_key_file(private, tmp_path / "producer.pub")
    data_dir = tmp_path / "d"
    out = ringfence_cli(
        "keys", "create", "--name", "signed", "--scope", "events:write", "--signing-key", str(pem), data_dir=data_dir
    )
    key = out.stdout.strip().splitlines()[-1]
    body = json.dumps([event()]).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with run_embedded(data_dir) as server:
        url = f"{server.url}/v1/events"
        now = int(time.time())
        assert httpx.post(url, content=body, headers={**headers, **sign(private, body, now)}).status_code == 202
        unsigned = httpx.post(url, content=body, headers=headers)
        assert unsigned.status_code == 401
        assert "must sign" in unsigned.json()["error"]["message"]
        tampered = body.replace(b"12.50", b"99.99")
        assert httpx.post(url, content=tampered, headers={**headers, **sign(private, body, now)}).status_code == 401
        stale = httpx.post(url, content=body, headers={**headers, **sign(private, body, now - 3600)})
        assert stale.status_code == 401
        assert "window" in stale.json()["error"]["message"]
        other = ed25519.Ed25519PrivateKey.generate()
        assert httpx.post(url, content=body, headers={**headers, **sign(other, body, now)}).status_code == 401
        # a browser session with the same key does not escape the signature either: it opens none
        refused = httpx.post(f"{server.url}/v1/session", json={"key": key})
        assert refused.status_code == 403
        assert "set-cookie" not in refused.headers


def test_only_ed25519_public_keys_are_accepted(tmp_path: Path) -> None:
    pem = tmp_path / "not-a-key.pem"
    pem.write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    result = ringfence_cli(
        "keys",
        "create",
        "--name",
        "x",
        "--scope",
        "events:write",
        "--signing-key",
        str(pem),
        data_dir=tmp_path / "d",
        check=False,
    )
    assert result.returncode == 2
    assert "not a PEM public key" in result.stderr


def test_a_signing_key_is_a_producers_and_its_bearer_alone_opens_no_other_route(tmp_path: Path) -> None:
    """Only ingest checks signatures: a signing key with other scopes would read and change
    alerts with its bearer token alone."""
    private = ed25519.Ed25519PrivateKey.generate()
    pem = public_key_file(private, tmp_path / "producer.pub")
    data_dir = tmp_path / "d"
    refused = ringfence_cli(
        "keys",
        "create",
        "--name",
        "both",
        "--role",
        "analyst",
        "--scope",
        "events:write",
        "--signing-key",
        str(pem),
        data_dir=data_dir,
        check=False,
    )
    assert refused.returncode == 2
    assert "give it only the events:write scope" in refused.stderr
    out = ringfence_cli(
        "keys", "create", "--name", "signed", "--scope", "events:write", "--signing-key", str(pem), data_dir=data_dir
    )
    key = out.stdout.strip().splitlines()[-1]
    raw = sqlite3.connect(data_dir / "store.sqlite3")  # as a key made before the rule: more scopes
    raw.execute("UPDATE api_keys SET scopes = 'events:write alerts:read alerts:write' WHERE name = 'signed'")
    raw.commit()
    raw.close()
    with run_embedded(data_dir) as server, httpx.Client(base_url=server.url) as client:
        bearer = {"Authorization": f"Bearer {key}"}
        listed = client.get("/v1/alerts", headers=bearer)
        assert listed.status_code == 403
        assert "sends events (POST /v1/events) and nothing else" in listed.json()["error"]["message"]
        assert client.post("/v1/alerts/al_x/ack", headers=bearer, json={"reason": "x"}).status_code == 403
        body = json.dumps([event()]).encode()
        signed = {**bearer, "Content-Type": "application/json", **sign(private, body, int(time.time()))}
        assert client.post("/v1/events", content=body, headers=signed).status_code == 202
