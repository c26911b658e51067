"""The tamper-evident audit trail: each entry carries an HMAC-SHA256 chained over the one
before it, and ``audit_head`` remembers the newest. Editing an entry breaks its link,
deleting one leaves a gap in the sequence, and deleting the newest ones no longer matches
the head: ``ringfence audit verify`` reports which.

The chain is keyed with ``RINGFENCE_SECRET_AUDIT_KEY`` when it is set, so someone who can
write the database file but does not hold the key cannot forge a consistent chain.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import msgspec

from ringfence.store.connection import Connection

GENESIS = "0" * 64
DEFAULT_KEY = b"ringfence-audit-chain"


def _digest(key: bytes, previous: str, row: tuple[Any, ...]) -> str:
    canonical = msgspec.json.encode([previous, *row])
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def append(conn: Connection, key: bytes | None, at: float, actor: str, action: str, target: str, detail: str) -> None:
    """Add one entry inside the caller's (write) transaction."""
    head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    previous = head[1] if head else GENESIS
    cur = conn.execute(
        "INSERT INTO audit (at, actor, action, target, detail, hash) VALUES (?, ?, ?, ?, ?, '') RETURNING seq",
        (at, actor, action, target, detail),
    )
    seq = cur.fetchone()[0]
    digest = _digest(key or DEFAULT_KEY, previous, (seq, at, actor, action, target, detail))
    conn.execute("UPDATE audit SET hash = ? WHERE seq = ?", (digest, seq))
    conn.execute("INSERT OR REPLACE INTO audit_head VALUES (1, ?, ?)", (seq, digest))


def rehash(conn: Connection, key: bytes | None) -> None:
    """Chain entries written before the chain existed (run once, by the migration)."""
    previous = GENESIS
    last = 0
    for seq, at, actor, action, target, detail in conn.execute(
        "SELECT seq, at, actor, action, target, detail FROM audit ORDER BY seq"
    ).fetchall():
        previous = _digest(key or DEFAULT_KEY, previous, (seq, at, actor, action, target, detail))
        conn.execute("UPDATE audit SET hash = ? WHERE seq = ?", (previous, seq))
        last = seq
    if last:
        conn.execute("INSERT OR REPLACE INTO audit_head VALUES (1, ?, ?)", (last, previous))


@dataclass(frozen=True)
class Verdict:
    """The result of checking the chain: ``problems`` is empty when it is intact."""

    entries: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(conn: Connection, key: bytes | None) -> Verdict:
    problems: list[str] = []
    previous, expected_seq, count = GENESIS, 1, 0
    rows = conn.execute("SELECT seq, at, actor, action, target, detail, hash FROM audit ORDER BY seq")
    for seq, at, actor, action, target, detail, stored in rows:
        count += 1
        if seq != expected_seq:
            problems.append(f"entries {expected_seq}..{seq - 1} were deleted")
        digest = _digest(key or DEFAULT_KEY, previous, (seq, at, actor, action, target, detail))
        if not hmac.compare_digest(digest, stored):
            problems.append(f"entry {seq} ({action} {target}) was altered, or its chain was forged")
            digest = stored  # check the rest against what is there
        previous, expected_seq = digest, seq + 1
    head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    if head is not None and (head[0] != expected_seq - 1 or head[1] != previous):
        problems.append(f"the newest entries after {expected_seq - 1} were deleted (the head is entry {head[0]})")
    if head is None and count:
        problems.append("the chain head is missing")
    return Verdict(count, problems)
