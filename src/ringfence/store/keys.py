"""API keys: created by the CLI, stored only as salted hashes, checked on every request.

A key reads ``rf_<key id>_<secret>``. The key id is public and indexes the row; the
secret is 32 random bytes, stored as SHA-256(salt + secret) and compared in constant
time. Lookups go to the database each time, so a key created or revoked by
``ringfence keys`` counts at once in a running server.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from ringfence.errors import AuthError, ForbiddenError, NotFound, StoreError
from ringfence.store.sqlite import SqliteStore

SCOPES = ("events:write", "alerts:read", "alerts:write", "rules:read", "rules:write", "admin")
_KEY = re.compile(r"^rf_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
LAST_USED_RESOLUTION_S = 60.0


@dataclass(frozen=True)
class KeyInfo:
    """A key as listed (never its secret)."""

    key_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: float
    revoked_at: float | None
    last_used_at: float | None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def _hash(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


class ApiKeys:
    """The API key repository, over the store's ``api_keys`` table."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._last_used_written: dict[str, float] = {}

    def create(self, name: str, scopes: list[str], now: float, actor: str = "cli") -> str:
        """Create a key and return it; this is the only time the secret is seen."""
        if not _NAME.match(name):
            raise StoreError(f"invalid key name {name!r}: use letters, digits, '.', '_' or '-'")
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise StoreError(f"unknown or missing scope(s) {unknown}; choose from {', '.join(SCOPES)}")
        key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_bytes(16)
        with self._store.transaction() as conn:
            if conn.execute("SELECT 1 FROM api_keys WHERE name = ? AND revoked_at IS NULL", (name,)).fetchone():
                raise StoreError(f"a key named {name!r} exists; revoke it or choose another name")
            conn.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, NULL, NULL)",
                (key_id, name, salt, _hash(salt, secret), " ".join(sorted(set(scopes))), now),
            )
            self._store.audit(conn, now, actor, "key.create", name, {"key_id": key_id, "scopes": sorted(scopes)})
        return f"rf_{key_id}_{secret}"

    def revoke(self, name: str, now: float, actor: str = "cli") -> None:
        with self._store.transaction() as conn:
            cur = conn.execute("UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (now, name))
            if cur.rowcount == 0:
                raise NotFound(f"no active key named {name!r}")
            self._store.audit(conn, now, actor, "key.revoke", name, {})

    def list(self) -> list[KeyInfo]:
        rows = self._store.conn().execute(
            "SELECT key_id, name, scopes, created_at, revoked_at, last_used_at FROM api_keys ORDER BY created_at"
        )
        return [KeyInfo(k, n, tuple(s.split()), c, r, u) for k, n, s, c, r, u in rows]

    def authenticate(self, token: str, now: float) -> KeyInfo:
        """The key behind ``token``. Raises AuthError if it is malformed, unknown or revoked."""
        match = _KEY.match(token)
        if match is None:
            raise AuthError("malformed API key")
        key_id, secret = match.groups()
        row = (
            self._store.conn()
            .execute(
                "SELECT name, salt, hash, scopes, created_at, revoked_at, last_used_at FROM api_keys WHERE key_id = ?",
                (key_id,),
            )
            .fetchone()
        )
        if row is None:
            hmac.compare_digest(b"\0" * 32, _hash(b"\0" * 16, secret))  # same work as a real check
            raise AuthError("invalid API key")
        name, salt, digest, scopes, created, revoked, last_used = row
        if not hmac.compare_digest(digest, _hash(salt, secret)):
            raise AuthError("invalid API key")
        if revoked is not None:
            raise AuthError("API key has been revoked")
        if now - self._last_used_written.get(key_id, 0.0) > LAST_USED_RESOLUTION_S:
            self._last_used_written[key_id] = now
            self._store.conn().execute("UPDATE api_keys SET last_used_at = ? WHERE key_id = ?", (now, key_id))
        return KeyInfo(key_id, name, tuple(scopes.split()), created, revoked, last_used)

    @staticmethod
    def require(key: KeyInfo, scope: str) -> None:
        if not key.allows(scope):
            raise ForbiddenError(scope)
