"""API keys: created by the CLI, stored only as salted hashes, checked on every request.

A key reads ``rf_<key id>_<secret>``. The key id is public and indexes the row; the
secret is 32 random bytes, stored as SHA-256(salt + secret) and compared in constant
time. Lookups go to the database each time, so a key created or revoked by
``ringfence keys`` counts at once in a running server.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ringfence.engine.rules import AUDIENCES
from ringfence.errors import AuthError, ForbiddenError, NotFound, StoreError
from ringfence.store.sql import SqlStore

log = logging.getLogger("ringfence.keys")

SCOPES = ("events:write", "alerts:read", "alerts:write", "rules:read", "rules:write", "admin")
# what they change or show decides or spans every desk's alerts: never a key limited to some
# (one with rules:write rewrote another desk's rules to its own audience, in a re-test)
DESK_WIDE_SCOPES = frozenset({"rules:write", "admin"})
# roles for people, as sets of scopes
ROLES: dict[str, tuple[str, ...]] = {
    "viewer": ("alerts:read", "rules:read"),
    "analyst": ("alerts:read", "alerts:write", "rules:read"),
    "admin": ("admin",),
}
_KEY = re.compile(r"^rf_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SOURCE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")  # as an event's ``source``
LAST_USED_RESOLUTION_S = 60.0
NOTES_IDLE_S = 5.0  # the last-used writer thread ends after this long with nothing to write
SESSION_TTL_S = 8 * 3600.0


@dataclass(frozen=True)
class Session:
    """A signed-in browser: its key and the CSRF token its state changes must carry."""

    key: KeyInfo
    csrf: str
    expires_at: float


@dataclass(frozen=True)
class KeyInfo:
    """A key as listed (never its secret)."""

    key_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: float
    revoked_at: float | None
    last_used_at: float | None
    audiences: tuple[str, ...] = ()  # the alerts it may see; empty: all
    signing_key: str = ""  # an Ed25519 public key (base64): its requests must be signed
    sources: tuple[str, ...] = ()  # the event sources it may write; empty: any (unbound)

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def sees(self, audience: str) -> bool:
        """Object-level check: may this key see and act on alerts of ``audience``?"""
        return not self.audiences or audience in self.audiences

    @property
    def unrestricted(self) -> bool:
        return not self.audiences

    @property
    def writable_sources(self) -> frozenset[str] | None:
        """The event sources this key may write; None: any (a key not bound to sources)."""
        return frozenset(self.sources) if self.sources else None


def _hash(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


def _key_info(
    key_id: str,
    name: str,
    scopes: str,
    created: float,
    revoked: float | None,
    last_used: float | None,
    audiences: str,
    signing_key: str,
    sources: str,
) -> KeyInfo:
    """A key as stored (space-separated lists) as a KeyInfo."""
    return KeyInfo(
        key_id,
        name,
        tuple(scopes.split()),
        created,
        revoked,
        last_used,
        tuple(audiences.split()),
        signing_key,
        tuple(sources.split()),
    )


class ApiKeys:
    """The API key repository, over the store's ``api_keys`` table."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self._last_used_written: dict[str, float] = {}
        self._notes = _LastUsedNotes(store)

    def create(
        self,
        name: str,
        scopes: list[str],
        now: float,
        actor: str = "cli",
        audiences: list[str] | None = None,
        signing_key: str = "",
        sources: list[str] | None = None,
    ) -> str:
        """Create a key and return it; this is the only time the secret is seen.

        ``audiences`` limits which alerts the key sees (default: all); ``sources`` binds a
        producer key to the event sources it may write (default: any).
        """
        if not _NAME.match(name):
            raise StoreError(f"invalid key name {name!r}: use letters, digits, '.', '_' or '-'")
        if not scopes:
            raise StoreError(f"a key needs at least one scope; choose from {', '.join(SCOPES)}")
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown:
            raise StoreError(f"unknown scope(s) {', '.join(unknown)}; choose from {', '.join(SCOPES)}")
        bad_audiences = sorted(set(audiences or ()) - set(AUDIENCES))
        if bad_audiences:
            raise StoreError(f"unknown audience(s) {bad_audiences}; choose from {', '.join(AUDIENCES)}")
        if audiences and set(scopes) & DESK_WIDE_SCOPES:
            raise StoreError(
                f"a key limited to audiences cannot have {' or '.join(sorted(set(scopes) & DESK_WIDE_SCOPES))}: "
                "rules, lists, rates, the audit trail and the quarantine span every desk"
            )
        if signing_key and set(scopes) != {"events:write"}:
            raise StoreError("a key that signs its requests is a producer's: give it only the events:write scope")
        bad_sources = sorted(s for s in set(sources or ()) if not _SOURCE.match(s))
        if bad_sources:
            raise StoreError(f"invalid source name(s) {bad_sources}: 1-64 letters, digits, '_', '.', ':' or '-'")
        key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_bytes(16)
        with self._store.transaction() as conn:
            if conn.execute("SELECT 1 FROM api_keys WHERE name = ? AND revoked_at IS NULL", (name,)).fetchone():
                raise StoreError(f"a key named {name!r} exists; revoke it or choose another name")
            conn.execute(
                "INSERT INTO api_keys (key_id, name, salt, hash, scopes, created_at, revoked_at, last_used_at, "
                "audiences, signing_key, sources) VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, ?, ?, ?)",
                (
                    key_id,
                    name,
                    salt,
                    _hash(salt, secret),
                    " ".join(sorted(set(scopes))),
                    now,
                    " ".join(sorted(set(audiences or ()))),
                    signing_key,
                    " ".join(sorted(set(sources or ()))),
                ),
            )
            detail = {
                "key_id": key_id,
                "scopes": sorted(scopes),
                "audiences": sorted(audiences or ()),
                "signed_requests": bool(signing_key),
                "sources": sorted(set(sources or ())),
            }
            self._store.audit(conn, now, actor, "key.create", name, detail)
        return f"rf_{key_id}_{secret}"

    def revoke(self, name: str, now: float, actor: str = "cli") -> None:
        with self._store.transaction() as conn:
            cur = conn.execute("UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (now, name))
            if cur.rowcount == 0:
                raise NotFound(f"no active key named {name!r}")
            self._store.audit(conn, now, actor, "key.revoke", name, {})

    def close(self) -> None:
        """Write the last-used times noted and not written yet (before the store closes)."""
        self._notes.close()

    def list(self) -> list[KeyInfo]:
        rows = self._store.conn().execute(
            "SELECT key_id, name, scopes, created_at, revoked_at, last_used_at, audiences, sources FROM api_keys "
            "ORDER BY created_at"
        )
        unwritten = self._notes.unwritten()
        return [
            KeyInfo(k, n, tuple(s.split()), c, r, unwritten.get(k, u), tuple(a.split()), sources=tuple(src.split()))
            for k, n, s, c, r, u, a, src in rows
        ]

    def authenticate(self, token: str, now: float) -> KeyInfo:
        """The key behind ``token``. Raises AuthError if it is malformed, unknown or revoked."""
        match = _KEY.match(token)
        if match is None:
            raise AuthError("malformed API key")
        key_id, secret = match.groups()
        row = (
            self._store.conn()
            .execute(
                "SELECT name, salt, hash, scopes, created_at, revoked_at, last_used_at, audiences, signing_key, "
                "sources FROM api_keys WHERE key_id = ?",
                (key_id,),
            )
            .fetchone()
        )
        if row is None:
            hmac.compare_digest(b"\0" * 32, _hash(b"\0" * 16, secret))  # same work as a real check
            raise AuthError("invalid API key")
        name, salt, digest, scopes, created, revoked, last_used, audiences, signing_key, sources = row
        if not hmac.compare_digest(digest, _hash(salt, secret)):
            raise AuthError("invalid API key")
        if revoked is not None:
            raise AuthError("API key has been revoked")
        if now - self._last_used_written.get(key_id, 0.0) > LAST_USED_RESOLUTION_S:
            self._last_used_written[key_id] = now
            self._notes.note(key_id, now)
        return _key_info(key_id, name, scopes, created, revoked, last_used, audiences, signing_key, sources)

    def by_id(self, key_id: str) -> KeyInfo | None:
        """An active key by its public id (for sessions)."""
        row = (
            self._store.conn()
            .execute(
                "SELECT name, scopes, created_at, revoked_at, last_used_at, audiences, signing_key, sources "
                "FROM api_keys WHERE key_id = ? AND revoked_at IS NULL",
                (key_id,),
            )
            .fetchone()
        )
        if row is None:
            return None
        return _key_info(key_id, *row)

    @staticmethod
    def require(key: KeyInfo, scope: str) -> None:
        if not key.allows(scope):
            raise ForbiddenError(scope)

    # -- browser sessions ----------------------------------------------------------------

    def create_session(
        self, token: str, now: float, ttl_s: float = SESSION_TTL_S, admit: Callable[[str], None] = lambda key_id: None
    ) -> tuple[str, Session]:
        """Sign in with an API key; return the session id (for the cookie) and the session.

        Only a hash of the session id is stored. Raises AuthError for a bad key; ``admit`` is
        called with the key's id once its secret is verified, and may raise to refuse it.
        """
        key = self.authenticate(token, now)
        if key.signing_key:  # a producer's: it signs events, it opens no session (nor any other route)
            raise ForbiddenError("signed")
        admit(key.key_id)
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self._store.transaction() as conn:
            conn.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))
            conn.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                (hashlib.sha256(session_id.encode()).digest(), key.key_id, csrf, now, now + ttl_s),
            )
            self._store.audit(conn, now, f"key:{key.name}", "session.login", key.name, {})
        return session_id, Session(key, csrf, now + ttl_s)

    def session(self, session_id: str, now: float) -> Session:
        """The live session behind a cookie. Raises AuthError if unknown, expired or its key revoked."""
        row = (
            self._store.conn()
            .execute(
                "SELECT key_id, csrf, expires_at FROM sessions WHERE id_hash = ?",
                (hashlib.sha256(session_id.encode()).digest(),),
            )
            .fetchone()
        )
        if row is None or row[2] < now:
            raise AuthError("not signed in, or the session expired")
        key = self.by_id(row[0])
        if key is None:
            raise AuthError("the session's API key has been revoked")
        return Session(key, row[1], row[2])

    def end_session(self, session_id: str, now: float) -> None:
        with self._store.transaction() as conn:
            row = conn.execute(
                "SELECT key_id FROM sessions WHERE id_hash = ?", (hashlib.sha256(session_id.encode()).digest(),)
            ).fetchone()
            conn.execute("DELETE FROM sessions WHERE id_hash = ?", (hashlib.sha256(session_id.encode()).digest(),))
            if row is not None:
                self._store.audit(conn, now, f"key-id:{row[0]}", "session.logout", row[0], {})


class _LastUsedNotes:
    """When each key was last used, written by a thread of its own: written on the request's
    thread, the event loop's, a key's first request of a minute waited for the store's write
    lock behind the processor's commits (1-2 s a request, and every other request with it, in a
    hostile test of 20 fresh keys). A note, not the check: one the writer could not write (a full
    disk) is logged and dropped, and a crash loses the few seconds not written yet; a stop
    (:meth:`close`) writes them first."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._pending: dict[str, float] = {}
        self._wake = threading.Event()
        self._writer: threading.Thread | None = None
        self._closed = False

    def note(self, key_id: str, now: float) -> None:
        with self._lock:
            if self._closed:  # the store is closing: nothing may open it again
                return
            self._pending[key_id] = now
            if self._writer is None:
                self._writer = threading.Thread(target=self._write, name="key-last-used", daemon=True)
                self._writer.start()
        self._wake.set()

    def unwritten(self) -> dict[str, float]:
        with self._lock:
            return dict(self._pending)

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is noted, then let the writer end (before the store closes)."""
        with self._lock:
            self._closed = True
            writer = self._writer
        self._wake.set()
        if writer is not None:
            writer.join(timeout_s)

    def _write(self) -> None:
        while True:
            woke = self._wake.wait(NOTES_IDLE_S)
            self._wake.clear()
            with self._lock:
                notes = list(self._pending.items())
                if not notes and (not woke or self._closed):
                    self._writer = None  # idle (a later note starts another) or closed
                    return
            for key_id, at in notes:
                try:
                    self._store.conn().execute("UPDATE api_keys SET last_used_at = ? WHERE key_id = ?", (at, key_id))
                except Exception as error:  # a full disk made every request a 500 when this was the check's (a re-test)
                    log.warning("could not note when key %s was last used (%s)", key_id, type(error).__name__)
                with self._lock:
                    if self._pending.get(key_id) == at:
                        del self._pending[key_id]
            if self._closed:
                self._wake.set()  # once more round: what came meanwhile, then the end
