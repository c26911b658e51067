"""Rule pack versions and run-time list edits, kept in the store and audited.

Every pack that was ever active is kept; the newest active one is what a restart loads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import msgspec

from ringfence.engine.pack import RulePack, load_pack, pack_digest, read_pack_file
from ringfence.errors import NotFound
from ringfence.store.sql import SqlStore

log = logging.getLogger("ringfence.store")


@dataclass(frozen=True)
class PackVersion:
    """A stored rule pack version."""

    seq: int
    version: str
    digest: str
    text: str
    created_at: float
    created_by: str


@dataclass(frozen=True)
class ListValues:
    """A list's values as edited at run time."""

    name: str
    values: tuple[str, ...]
    version: int
    updated_at: float
    updated_by: str


class PackRepository:
    """Rule pack versions and list edits, over the store's tables."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    @property
    def store(self) -> SqlStore:
        return self._store

    def activate(self, pack: RulePack, actor: str, now: float) -> PackVersion:
        """Record ``pack`` as a new version and make it the active one (audited)."""
        with self._store.transaction() as conn:
            conn.execute("UPDATE rule_packs SET active = 0 WHERE active = 1")
            cur = conn.execute(
                "INSERT INTO rule_packs (version, digest, text, created_at, created_by, active) "
                "VALUES (?, ?, ?, ?, ?, 1) RETURNING seq",
                (pack.version, pack.digest, pack.text, now, actor),
            )
            seq = int(cur.fetchone()[0])
            self._store.audit(conn, now, actor, "rules.activate", pack.version, {"seq": seq, "digest": pack.digest})
        return PackVersion(seq, pack.version, pack.digest, pack.text, now, actor)

    def record_backtest(self, candidate: RulePack, limit: int, actor: str, now: float) -> None:
        """Audit a back-test as it starts: its hit counts tell what stored events hold, so who
        asked what of them is on the trail."""
        with self._store.transaction() as conn:
            detail = {"digest": candidate.digest, "limit": limit, "detections": len(candidate.detection_ids)}
            self._store.audit(conn, now, actor, "rules.backtest", candidate.version, detail)

    def startup_pack(self, rule_pack: Path | None, now: float) -> RulePack:
        """The pack a starting service runs: the file given in the settings if it is new to the
        store (a deployment of it: activated), else the last one activated, else the packaged
        default. A file that was active once and has been replaced since (through the API, or by
        a newer file) does not take the store back: a service still set to it, restarted, would
        undo a newer activation for every service. Going back is a ``PUT /v1/rules`` (audited)."""
        active = self.active()
        if rule_pack is None and active is not None:
            return load_pack(active.text, stored=True)
        text = read_pack_file(rule_pack)
        # a file stored before (running since) is not refused by a check added since, as any stored pack
        pack = load_pack(text, stored=self._was_active(pack_digest(text)))
        if active is not None and active.digest != pack.digest and self._was_active(pack.digest):
            log.error(  # an operator who meant to go back to it must hear of it
                "the rule pack file %s (version %s) was active before and has been replaced since: "
                "running the active pack (version %s, activated by %s); PUT /v1/rules to go back to the file",
                rule_pack,
                pack.version,
                active.version,
                active.created_by,
            )
            return load_pack(active.text, stored=True)
        if active is None or active.digest != pack.digest:
            self.activate(pack, f"settings ({rule_pack or 'the default pack'})", now)
        return pack

    def _was_active(self, digest: str) -> bool:
        query = "SELECT 1 FROM rule_packs WHERE digest = ? LIMIT 1"
        return self._store.conn().execute(query, (digest,)).fetchone() is not None

    def active(self) -> PackVersion | None:
        row = (
            self._store.conn()
            .execute("SELECT seq, version, digest, text, created_at, created_by FROM rule_packs WHERE active = 1")
            .fetchone()
        )
        return PackVersion(*row) if row else None

    def history(self) -> list[PackVersion]:
        rows = self._store.conn().execute(
            "SELECT seq, version, digest, '', created_at, created_by FROM rule_packs ORDER BY seq DESC"
        )
        return [PackVersion(*row) for row in rows]

    def put_list(
        self, name: str, values: list[str], actor: str, now: float, defaults: frozenset[str] = frozenset()
    ) -> ListValues:
        """Replace the values of list ``name`` (audited with the counts added and removed
        against its last values, or against the pack's ``defaults`` on its first edit)."""
        with self._store.transaction() as conn:
            row = conn.execute("SELECT items, version FROM lists WHERE name = ?", (name,)).fetchone()
            before = set(msgspec.json.decode(row[0])) if row else set(defaults)
            version = (row[1] if row else 0) + 1
            items = sorted(set(values))
            conn.execute(
                "INSERT OR REPLACE INTO lists VALUES (?, ?, ?, ?, ?)",
                (name, msgspec.json.encode(items).decode(), version, now, actor),
            )
            detail = {"version": version, "added": len(set(items) - before), "removed": len(before - set(items))}
            self._store.audit(conn, now, actor, "list.put", name, detail)
        return ListValues(name, tuple(items), version, now, actor)

    def get_list(self, name: str) -> ListValues:
        row = (
            self._store.conn()
            .execute("SELECT items, version, updated_at, updated_by FROM lists WHERE name = ?", (name,))
            .fetchone()
        )
        if row is None:
            raise NotFound(f"list {name!r} has not been edited")
        return ListValues(name, tuple(msgspec.json.decode(row[0])), row[1], row[2], row[3])

    def lists(self) -> dict[str, frozenset[str]]:
        """Every edited list's values."""
        rows = self._store.conn().execute("SELECT name, items FROM lists")
        return {name: frozenset(msgspec.json.decode(items)) for name, items in rows}
