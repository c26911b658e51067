"""Alert signals as the engine hands them to a store, and engine state as the store's
snapshot writer sees it, for store and dispatcher tests."""

from __future__ import annotations

from typing import Any

from ringfence.engine.packed import StateRow, pack_rows, unpack_rows
from ringfence.engine.rules import AlertSignal


class DictState:
    """Engine state as a dict of (name, key) -> state, with the snapshot walk of a real engine:
    the keys held at :meth:`snapshot_begin`, each read as it is when its part is written."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], bytes] = {}
        self._walk: list[tuple[str, str]] | None = None
        self._at = 0

    def apply(self, rows: list[StateRow]) -> tuple[bytes, int]:
        """Change the state as ``rows`` say; return them packed, as ``take_changes_packed``."""
        for name, key, state in rows:
            if state is None:
                self.rows.pop((name, key), None)
            else:
                self.rows[(name, key)] = state
        return pack_rows(rows), len(rows)

    def state_size(self) -> int:
        return len(self.rows)

    def snapshot_begin(self) -> None:
        self._walk, self._at = list(self.rows), 0

    def snapshot_next(self, max_rows: int) -> tuple[bytes, int, bool]:
        assert self._walk is not None, "no snapshot begun"
        part: list[StateRow] = []
        while self._at < len(self._walk) and len(part) < max_rows:
            name, key = self._walk[self._at]
            self._at += 1
            if (name, key) in self.rows:
                part.append((name, key, self.rows[(name, key)]))
        last = self._at >= len(self._walk)
        if last:
            self._walk = None
        return pack_rows(part), len(part), last

    def restore_packed(self, packed: bytes) -> int:
        rows = unpack_rows(packed)
        self.apply(rows)
        return len(rows)


def signal(
    offset: int, *, rule: str = "velocity", key: str = "tok_1", mode: str = "live", t: float = 100.0, **kw: Any
) -> AlertSignal:
    """The signal of event ``e{offset}``; keyword arguments override any field."""
    fields: dict[str, Any] = {
        "rule_id": rule,
        "rule_version": "t1",
        "severity": "high",
        "audience": "fraud",
        "mode": mode,
        "dedup_key": key,
        "title": f"title {offset}",
        "summary": "s",
        "labels": {"card": key},
        "event_id": f"e{offset}",
        "event_type": "card.authorization",
        "offset": offset,
        "occurred_at": t + offset,
        "ingested_at": t,
        "features": {"n": offset},
        "customer_id": "c1",
    }
    return AlertSignal(**{**fields, **kw})
