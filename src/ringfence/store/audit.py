"""The tamper-evident audit trail: each entry carries an HMAC-SHA256 chained over the one
before it, and ``audit_head`` remembers the newest. Editing an entry breaks its link,
deleting one leaves a gap in the sequence, and deleting the newest ones no longer matches
the head: ``ringfence audit verify`` reports which.

The chain is keyed with a secret: ``RINGFENCE_SECRET_AUDIT_KEY`` when it is set, else (embedded
runtime) a random key made on first start and kept 0600 beside the data (:func:`load_or_create_key`).
Someone who can write the database but does not hold the key cannot forge a consistent chain.

Someone who can write the database can still cut the newest entries off and move the head
back, or empty the table. So the head is also anchored outside the database: after every
change, its sequence number and hash are appended to an :class:`Anchor` file and logged, and
``audit verify`` checks the trail against them (truncation and rollback are reported).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ringfence.errors import StoreError
from ringfence.private_files import checked_own_file, give_to_dir_owner, private_file
from ringfence.store.connection import Connection

log = logging.getLogger("ringfence.audit")

GENESIS = "0" * 64
# The public constant chains were keyed with before audit keys existed: only to recognise
# such a chain and re-key it once (see SqliteStore); nothing is ever chained with it.
LEGACY_KEY = b"ringfence-audit-chain"
KEY_BYTES = 32


def _require(key: bytes | None) -> bytes:
    if not key:
        raise StoreError("the audit trail needs a key: set RINGFENCE_SECRET_AUDIT_KEY")
    return key


def key_id(key: bytes) -> str:
    """A fingerprint of ``key`` that says which key a chain was made with, and reveals nothing of it."""
    return hmac.new(key, b"ringfence audit key id", hashlib.sha256).hexdigest()[:16]


def load_or_create_key(path: Path) -> tuple[bytes, bool]:
    """The audit key kept in ``path`` (0600), made at random if there is none yet; and whether
    it was made now. Two processes starting together agree: the file appears whole, once."""
    made = False
    if not path.exists():
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            give_to_dir_owner(fd, draft)
            os.write(fd, secrets.token_hex(KEY_BYTES).encode() + b"\n")
            os.fsync(fd)  # whole on disk before it has its name
        finally:
            os.close(fd)
        try:
            os.link(draft, path)  # fails if another process made it first: then use theirs
            made = True
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    key = private_file(path).read_bytes().strip()
    if len(key) < KEY_BYTES:
        raise StoreError(f"{path} does not hold an audit key (at least {KEY_BYTES} characters)")
    return key, made


@dataclass(frozen=True)
class Head:
    """The newest entry of the chain at some moment: its sequence number and hash."""

    seq: int
    hash: str
    key_id: str = ""


def log_head(head: Head) -> None:
    """Log a committed head: the anchor's copy off the machine (the only one for PostgreSQL)."""
    log.info("audit head: entry %d, hash %s", head.seq, head.hash)


class Anchor:
    """An append-only file (0600) of the chain's successive heads, one JSON line each, kept
    beside the database; every line is logged too, for a second copy off the machine."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, head: Head, at: float) -> None:
        line = msgspec.json.encode({"seq": head.seq, "hash": head.hash, "key_id": head.key_id, "at": at})
        private_file(self.path)  # no link, FIFO or another user's file in its place
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
        try:
            os.write(fd, line + b"\n")  # one write: lines of two processes never interleave
            os.fsync(fd)
        finally:
            os.close(fd)
        log_head(head)

    def heads(self) -> list[Head]:
        """Every head recorded, in file order (a line torn by a crash is skipped). The file must be
        Ringfence's own: a link (to another anchor), a FIFO or another user's file is refused."""
        try:
            checked_own_file(self.path)
            with open(self.path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NOFOLLOW)) as anchor:
                lines = anchor.read().splitlines()
        except FileNotFoundError:
            return []
        found = []
        for line in lines:
            try:
                item = msgspec.json.decode(line)
                found.append(Head(int(item["seq"]), str(item["hash"]), str(item.get("key_id", ""))))
            except (msgspec.DecodeError, KeyError, TypeError, ValueError):
                continue
        return found


def head(conn: Connection) -> Head | None:
    """The chain's newest entry as ``audit_head`` records it."""
    row = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    return Head(int(row[0]), str(row[1])) if row else None


def check_anchored(conn: Connection, heads: list[Head]) -> list[str]:
    """Problems of the trail against the anchored ``heads``: entries cut off, or rewritten."""
    if not heads:
        return []
    stored = dict(conn.execute("SELECT seq, hash FROM audit").fetchall())
    newest = max(heads, key=lambda h: h.seq)
    last = max(stored, default=0)
    problems = []
    if last < newest.seq:
        problems.append(
            f"the trail was truncated: it ends at entry {last}, "
            f"but entry {newest.seq} was recorded outside the database"
        )
    rewritten = next((h for h in heads if h.seq in stored and stored[h.seq] != h.hash), None)
    if rewritten is not None:
        problems.append(
            f"the trail was rolled back and rewritten: entry {rewritten.seq} "
            "is not the one recorded outside the database"
        )
    return problems


def link(key: bytes, previous: str, row: tuple[Any, ...]) -> str:
    """The hash of entry ``row`` chained to the ``previous`` entry's: the chain's one link, for every trail."""
    canonical = msgspec.json.encode([previous, *row])
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


MAX_CLOCK_LAG_S = 10.0  # how far behind the trail's newest entry a change's clock may be moved on


def change_time(conn: Connection, now: float) -> float:
    """When a change made in the caller's write transaction happens, in the trail's order:
    ``now``, but not before the trail's newest entry, if that is at most ``MAX_CLOCK_LAG_S``
    later. A request reads the clock before it waits for the write lock, so of two, the later
    may write first: its history entry would sort after the other's, its expiry would leave a
    silence current for the other to expire again, and the trail's times would go back. An
    entry further ahead is another host's clock running ahead: followed, it would date every
    change after it in its future."""
    head = conn.execute("SELECT at FROM audit WHERE seq = (SELECT seq FROM audit_head WHERE id = 1)").fetchone()
    return now if head is None else max(now, min(float(head[0]), now + MAX_CLOCK_LAG_S))


def append(conn: Connection, key: bytes | None, at: float, actor: str, action: str, target: str, detail: str) -> None:
    """Add one entry inside the caller's (write) transaction (StoreError without a key), at
    :func:`change_time`, so the trail's times never go back."""
    key = _require(key)
    head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    previous = head[1] if head else GENESIS
    at = change_time(conn, at)
    cur = conn.execute(
        "INSERT INTO audit (at, actor, action, target, detail, hash) VALUES (?, ?, ?, ?, ?, '') RETURNING seq",
        (at, actor, action, target, detail),
    )
    seq = cur.fetchone()[0]
    digest = link(key, previous, (seq, at, actor, action, target, detail))
    conn.execute("UPDATE audit SET hash = ? WHERE seq = ?", (digest, seq))
    conn.execute("INSERT OR REPLACE INTO audit_head VALUES (1, ?, ?)", (seq, digest))


def rehash(conn: Connection, key: bytes | None) -> int:
    """Chain every entry anew with ``key``: entries written before the chain existed (run
    once, by the migration), or a chain made with the legacy key. Returns how many."""
    key = _require(key)
    previous = GENESIS
    last = 0
    for seq, at, actor, action, target, detail in conn.execute(
        "SELECT seq, at, actor, action, target, detail FROM audit ORDER BY seq"
    ).fetchall():
        previous = link(key, previous, (seq, at, actor, action, target, detail))
        conn.execute("UPDATE audit SET hash = ? WHERE seq = ?", (previous, seq))
        last = seq
    if last:
        conn.execute("INSERT OR REPLACE INTO audit_head VALUES (1, ?, ?)", (last, previous))
    return last


@dataclass(frozen=True)
class Verdict:
    """The result of checking the chain: ``problems`` is empty when it is intact."""

    entries: int
    problems: list[str]
    notes: tuple[str, ...] = ()  # facts a reader of the trail should know (an anchor restarted)

    @property
    def ok(self) -> bool:
        return not self.problems


Row = tuple[int, float, str, str, str, str, str]  # seq, at, actor, action, target, detail, hash


def verify(conn: Connection, key: bytes | None) -> Verdict:
    """Recompute the chain in the database (the anchor is checked by :func:`check_anchored`)."""
    key = _require(key)
    rows = conn.execute("SELECT seq, at, actor, action, target, detail, hash FROM audit ORDER BY seq")
    return check_chain(key, rows, head(conn))


def check_chain(key: bytes, rows: Iterable[Row], head: Head | None) -> Verdict:
    """Problems of the chain ``rows`` (in seq order) ending at ``head``: altered, forged or
    deleted entries; whichever store holds them."""
    problems: list[str] = []
    previous, expected_seq, count = GENESIS, 1, 0
    for seq, at, actor, action, target, detail, stored in rows:
        count += 1
        if seq != expected_seq:
            problems.append(f"entries {expected_seq}..{seq - 1} were deleted")
        digest = link(key, previous, (seq, at, actor, action, target, detail))
        if not hmac.compare_digest(digest, stored):
            problems.append(f"entry {seq} ({action} {target}) was altered, or its chain was forged")
            digest = stored  # check the rest against what is there
        previous, expected_seq = digest, seq + 1
    if head is not None and (head.seq != expected_seq - 1 or head.hash != previous):
        problems.append(f"the newest entries after {expected_seq - 1} were deleted (the head is entry {head.seq})")
    if head is None and count:
        problems.append("the chain head is missing")
    return Verdict(count, problems)
