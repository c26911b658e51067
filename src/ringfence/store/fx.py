"""FX rate tables in the store: every load a new version (audited), the newest one in force.

A load replaces the whole table: a bank sends its day's rates, and a currency left out has no
rate from then on (its events are flagged, not converted at a forgotten rate).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from ringfence.config import Settings
from ringfence.errors import FieldError
from ringfence.events.fx import FxRate, FxTable, check_reference, invalid, read_file
from ringfence.metrics import Metrics
from ringfence.store.connection import Connection
from ringfence.store.sql import SqlStore

log = logging.getLogger("ringfence.fx")
FOLLOW_EVERY_S = 5.0  # how soon a load made by another process reaches this one's ingest
_NEWEST = "SELECT version, reference, rates, loaded_at, loaded_by FROM fx_tables ORDER BY version DESC LIMIT 1"


class FxRepository:
    """The stored rate tables of one reference currency."""

    def __init__(self, store: SqlStore, reference: str, max_age_days: int) -> None:
        self._store = store
        self.reference = check_reference(reference)
        self.max_age_days = max_age_days
        self._warned = False

    def version(self) -> int:
        """The newest table's version (0: none loaded); cheap, to follow loads made elsewhere."""
        row = self._store.conn().execute("SELECT MAX(version) FROM fx_tables").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def current(self) -> FxTable:
        """The newest table, or one with no rates if none was loaded for this reference (its
        version still the stored one, so a follower does not read it again and again)."""
        return self._table(self._store.conn().execute(_NEWEST).fetchone())

    def _table(self, row: Any) -> FxTable:
        if row is None:
            return FxTable(self.reference, max_age_days=self.max_age_days)
        version, reference, rates, loaded_at, loaded_by = row
        if reference != self.reference:
            if not self._warned:
                log.warning(
                    "the stored FX rates (version %d) are against %s, not the reference currency %s: "
                    "no rates in force until a table for %s is loaded",
                    version,
                    reference,
                    self.reference,
                    self.reference,
                )
                self._warned = True
            return FxTable(self.reference, {}, int(version), self.max_age_days)
        table = {c: FxRate(c, Decimal(r), dt.date.fromisoformat(d)) for c, r, d in msgspec.json.decode(rates)}
        return FxTable(self.reference, table, int(version), self.max_age_days, float(loaded_at), str(loaded_by))

    def load(self, rates: list[FxRate], actor: str, now: float, file_digest: str = "") -> FxTable:
        """Store ``rates`` (checked by :func:`~ringfence.events.fx.parse_rates`) as the new table,
        audited with the currencies added, removed and changed against the one before."""
        rows = sorted((r.currency, str(r.rate), r.as_of.isoformat()) for r in rates)
        after = {r.currency: r for r in rates}
        with self._store.transaction() as conn:
            before = self._table(conn.execute(_NEWEST).fetchone()).rates  # in the transaction: its own
            if before and not after:  # a CSV of its header only: every amount would lose its reference value
                message = (
                    f"no rate of a currency other than {self.reference}: it would replace the {len(before)} in force"
                )
                raise invalid([FieldError("rates", message)])
            cur = conn.execute(
                "INSERT INTO fx_tables (reference, rates, loaded_at, loaded_by, file_digest) "
                "VALUES (?, ?, ?, ?, ?) RETURNING version",
                (self.reference, msgspec.json.encode(rows).decode(), now, actor, file_digest),
            )
            version = int(cur.fetchone()[0])
            detail = {
                "version": version,
                "reference": self.reference,
                "rates": len(rates),
                "added": sorted(set(after) - set(before)),
                "removed": sorted(set(before) - set(after)),
                "changed": sorted(c for c in set(after) & set(before) if after[c] != before[c]),
            }
            self._store.audit(conn, now, actor, "fx.load", self.reference, detail)
        return FxTable(self.reference, after, version, self.max_age_days, now, actor)

    def startup(self, file: Path | None, now: float) -> FxTable:
        """The table a starting service converts with. ``file`` (the settings' ``fx_rates``) is
        loaded when it changed since it was last loaded, not whenever it differs from the table
        in force: a later load through the API or the CLI survives a restart."""
        if file is None:
            return self.current()
        rates, digest = read_file(file, self.reference, now)
        with self._store.transaction() as conn:
            if _last_file(conn) == digest:
                return self.current()
        return self.load(rates, f"settings ({file})", now, digest)


def _last_file(conn: Connection) -> str | None:
    row = conn.execute(
        "SELECT file_digest FROM fx_tables WHERE file_digest != '' ORDER BY version DESC LIMIT 1"
    ).fetchone()
    return str(row[0]) if row else None


class FollowedRates:
    """The table in force in one process, re-read when another process (the CLI, another API
    instance) loads a newer one. Reading :attr:`table` is a plain attribute read: ingest asks
    on every request."""

    def __init__(self, repo: FxRepository, table: FxTable) -> None:
        self.repo = repo
        self.table = table
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def load(self, rates: list[FxRate], actor: str, now: float) -> FxTable:
        """Store ``rates`` as the new table (audited) and convert with it from now on."""
        table = self.repo.load(rates, actor, now)
        self._adopt(table)
        return table

    def refresh(self) -> None:
        if self.repo.version() != self.table.version:
            self._adopt(self.repo.current())

    def _adopt(self, table: FxTable) -> None:
        with self._lock:  # a read that raced a load must not put an older table back
            if table.version > self.table.version:
                self.table = table

    def expose(self, metrics: Metrics, now: Callable[[], float]) -> None:
        """Count the stale rates of the table in force on every scrape."""
        metrics.fx_rates_stale.set_function(lambda: len(self.table.stale(now())))

    def start(self, every_s: float = FOLLOW_EVERY_S) -> None:
        self._thread = threading.Thread(target=self._follow, args=(every_s,), name="ringfence-fx", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _follow(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                self.refresh()
            except Exception:  # the store away for a moment: keep the table in force
                log.warning("cannot read the FX rates from the store", exc_info=True)


def followed_rates(store: SqlStore, settings: Settings, now: float) -> FollowedRates:
    """The rates a starting service converts with: the settings' ``fx_rates`` file (loaded if
    new), else the stored table; then followed (call ``start``)."""
    repo = FxRepository(store, settings.reference_currency, settings.fx_max_age_days)
    return FollowedRates(repo, repo.startup(settings.fx_rates, now))
