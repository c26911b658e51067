"""The embedded runtime's store: every repository in one SQLite file (see :mod:`.sql`).

Beside the file: the audit key (``audit.key``, unless ``RINGFENCE_SECRET_AUDIT_KEY`` is set)
and the audit anchor (``<file>-audit-anchor``), both 0600; see :mod:`ringfence.store.audit`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ringfence.alerts.lifecycle import SYSTEM_ACTOR
from ringfence.clock import iso
from ringfence.errors import StoreError, StoreUnavailable
from ringfence.store import audit as audit_chain
from ringfence.store.connection import FileIdentity, WalBound, connect, file_identity
from ringfence.store.schema import MIGRATIONS, SCHEMA_VERSION
from ringfence.store.sql import SqlStore

__all__ = ["SqliteStore"]

log = logging.getLogger("ringfence.store")

AUDIT_KEY_FILE = "audit.key"
ANCHOR_SUFFIX = "-audit-anchor"


ANCHOR_RESTART = "audit.anchor.restart"


class SqliteStore(SqlStore):
    """Thread-safe (one connection per thread) SQLite store.

    ``audit_key``: the configured secret; without one, the key kept beside the file (made on
    first start). Raises StoreError if the audit trail was made with another key.
    """

    def __init__(self, path: Path, audit_key: bytes | None = None) -> None:
        made = False
        key_file = path.with_name(AUDIT_KEY_FILE)
        if audit_key is None:
            audit_key, made = audit_chain.load_or_create_key(key_file)
        super().__init__(audit_key)
        self._key_id = audit_chain.key_id(audit_key)
        self.path = path
        self.anchor = audit_chain.Anchor(path.with_name(path.name + ANCHOR_SUFFIX))
        self._local = threading.local()
        self._file: FileIdentity | None = None  # the file connected to
        self._wal = WalBound(path)
        try:
            self._migrate()
            self._adopt_audit_trail(key_made=made)
        except StoreError:
            if made:  # a key made for a trail it cannot extend would only hide the real one
                key_file.unlink(missing_ok=True)
            raise

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit; use :meth:`transaction` to write)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, "full")
            self._local.conn = conn
            if self._file is None and str(self.path) != ":memory:":
                self._file = file_identity(self.path)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An immediate (write-locking) transaction, committed on success; StoreError if the
        file was deleted or replaced under the server (the commit would go into an unlinked
        file, lost, and the processor would move past the events it holds)."""
        conn = self.conn()
        if self._file is not None and file_identity(self.path) != self._file:
            # the file's name only: the message reaches any caller (503), and a path tells of the host
            raise StoreUnavailable(f"{self.path.name} was deleted or replaced under the server: restart it")
        conn.execute("BEGIN IMMEDIATE")
        self._local.audited = False
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        if self._local.audited:  # anchored once committed: a rolled-back entry never is
            self._anchor_head(conn)
        self._wal.committed(conn)

    def audit(self, conn: Any, now: float, actor: str, action: str, target: str, detail: dict[str, Any]) -> None:
        super().audit(conn, now, actor, action, target, detail)
        self._local.audited = True

    def verify_audit(self) -> audit_chain.Verdict:
        """The chain in the file, and the file against the anchor (truncation, rollback)."""
        verdict = super().verify_audit()
        problems = audit_chain.check_anchored(self.conn(), self.anchor.heads())
        restarts = self.conn().execute("SELECT seq, at FROM audit WHERE action = ? ORDER BY seq", (ANCHOR_RESTART,))
        notes = tuple(
            f"the anchor was restarted at entry {seq} ({iso(at)}) because its file was missing: entries "
            "cut off before then are not detected; check against a logged head (--head)"
            for seq, at in restarts
        )
        return audit_chain.Verdict(verdict.entries, verdict.problems + problems, notes)

    def _anchor_head(self, conn: sqlite3.Connection) -> None:
        head = audit_chain.head(conn)
        if head is not None:
            anchored = audit_chain.Head(head.seq, head.hash, self._key_id)
            self.anchor.record(anchored, time.time())

    def check_anchored_head(self) -> None:
        """Refuse a store whose audit trail does not hold the newest head its anchor recorded:
        it was emptied, replaced or rolled back (a crash cannot do it: a head is anchored once
        committed). Served, it would have lost its keys and acknowledgements and would process
        the log again from its start, sending every notification again. ``audit verify`` reads
        such a store all the same, to say what happened."""
        heads = self.anchor.heads()
        if not heads:
            return
        newest = max(heads, key=lambda head: head.seq)
        found = self.conn().execute("SELECT hash FROM audit WHERE seq = ?", (newest.seq,)).fetchone()
        if found is None or found[0] != newest.hash:
            raise StoreError(
                f"{self.path} does not hold audit entry {newest.seq}, which {self.anchor.path.name} recorded: the "
                "store was emptied, replaced or rolled back. Put back the store kept with that anchor, or, to serve "
                "this one knowingly, move the anchor file aside first"
            )

    def _adopt_audit_trail(self, *, key_made: bool) -> None:
        """Check the trail is keyed with this store's key; anchor it if it is not yet; re-key
        once a trail made with the legacy public key (an audit entry says so)."""
        heads = self.anchor.heads()
        if heads:
            if heads[-1].key_id != self._key_id:
                raise StoreError(
                    f"the audit trail of {self.path} was made with another key: run with the same "
                    "RINGFENCE_SECRET_AUDIT_KEY (or none) as the server"
                )
            return
        conn = self.conn()
        if audit_chain.head(conn) is None:
            return  # an empty trail: its first entry starts the anchor
        if audit_chain.verify(conn, self.audit_key).ok:
            # a trail from before anchors, or an anchor deleted (perhaps with entries cut off):
            # restarting it is itself audited, so `audit verify` always tells the reader
            log.warning("audit anchor %s was missing; restarted it at the current head", self.anchor.path)
            with self.transaction() as tx:
                reason = "the anchor file was missing: entries before this one were not checked against it"
                self.audit(tx, time.time(), SYSTEM_ACTOR, ANCHOR_RESTART, self.anchor.path.name, {"reason": reason})
        elif audit_chain.verify(conn, audit_chain.LEGACY_KEY).ok:
            with self.transaction() as tx:
                count = audit_chain.rehash(tx, self.audit_key)
                reason = (
                    "chained with a public constant before audit keys existed; re-keyed with this store's audit key"
                )
                self.audit(
                    tx,
                    time.time(),
                    SYSTEM_ACTOR,
                    "audit.rekey",
                    str(self.path.name),
                    {"entries": count, "reason": reason},
                )
            log.warning("audit trail of %s re-keyed (%d entries): it was chained with a public key", self.path, count)
        elif key_made:
            raise StoreError(
                f"the audit trail of {self.path} was not made with a key this process has: run with the "
                "RINGFENCE_SECRET_AUDIT_KEY it was made with"
            )
        else:  # edited while unanchored: `audit verify` names the entries; nothing is hidden
            log.error("the audit trail of %s does not verify: run `ringfence audit verify`", self.path)

    def _migrate(self) -> None:
        with self.transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} has schema {version}, newer than this Ringfence ({SCHEMA_VERSION})")
            for step in range(version + 1, SCHEMA_VERSION + 1):
                # statement by statement: executescript() would commit the open transaction
                for statement in MIGRATIONS[step].split(";\n"):
                    if statement.strip():
                        conn.execute(statement)
                if step == 4:
                    audit_chain.rehash(conn, self.audit_key)
                conn.execute(f"PRAGMA user_version={step}")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
