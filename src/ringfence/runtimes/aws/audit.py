"""The aws runtime's audit trail: the embedded trail's keyed hash chain
(:mod:`ringfence.store.audit`, ``RINGFENCE_SECRET_AUDIT_KEY``) in the alerts table.

Entry ``seq`` is item ``audit|<seq // BLOCK>`` / ``<seq>`` (a block reads consistently and
in order without an index); item ``audit`` / ``head`` holds the newest entry's seq and hash.
An entry is written in one transaction with the change it records and a head update
conditional on the head it was chained to, so two writers cannot fork the chain: the one
that loses reads the new head and chains after it. Each new head is logged, as PostgreSQL's
are (CloudWatch Logs keeps that copy outside the table).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from ringfence.clock import iso
from ringfence.errors import StoreError
from ringfence.runtimes.aws.items import TableItems, n, s
from ringfence.store.audit import GENESIS, Head, Row, Verdict, check_chain, link, log_head

BLOCK = 10_000  # entries per partition
HEAD_ATTEMPTS = 20  # writers racing for the head: each loss means another entry went in
_json = msgspec.json.Encoder()


def _sk(seq: int) -> str:
    return f"{seq:020d}"


class AuditTrail(TableItems):
    """Appends, verifies and pages the chain; ``key`` None refuses to append (as embedded)."""

    def __init__(self, dynamodb: Any, table: str, key: bytes | None) -> None:
        super().__init__(dynamodb, table)
        self.key = key

    def head(self) -> Head | None:
        item = self.get("audit", "head")
        return Head(int(item["seq"]["N"]), item["hash"]["S"]) if item else None

    def record(
        self, changes: list[dict[str, Any]], actor: str, action: str, target: str, detail: dict[str, Any], now: float
    ) -> bool:
        """Write ``changes`` (transaction items) and their audit entry at once. False if a
        condition of ``changes`` failed (the caller reads again); a lost race for the head
        is retried here."""
        if not self.key:
            raise StoreError("the audit trail needs a key: set RINGFENCE_SECRET_AUDIT_KEY")
        for _ in range(HEAD_ATTEMPTS):
            head = self.head()
            appended, new_head = self._append(self.key, head, actor, action, target, detail, float(now))
            if self.transact([*changes, *appended]):
                log_head(new_head)
                return True
            if self.head() == head:
                return False  # the head held: one of the changes' conditions failed
        raise StoreError(f"the audit chain's head moved {HEAD_ATTEMPTS} times in a row")

    def _append(
        self, key: bytes, head: Head | None, actor: str, action: str, target: str, detail: dict[str, Any], at: float
    ) -> tuple[list[dict[str, Any]], Head]:
        seq = head.seq + 1 if head else 1
        text = _json.encode(detail).decode()
        digest = link(key, head.hash if head else GENESIS, (seq, at, actor, action, target, text))
        entry = {
            "pk": s(f"audit|{seq // BLOCK}"),
            "sk": s(_sk(seq)),
            "seq": n(seq),
            "at": n(at),
            "actor": s(actor),
            "action": s(action),
            "target": s(target),
            "detail": s(text),
            "hash": s(digest),
        }
        # The head is put whole, not updated: a reader never meets a head without its hash
        # (DynamoDB's writes are atomic either way; moto makes an updated item's key first).
        moved: dict[str, Any] = {
            "TableName": self.table,
            "Item": {"pk": s("audit"), "sk": s("head"), "seq": n(seq), "hash": s(digest)},
        }
        if head is None:
            moved["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            moved["ConditionExpression"] = "seq = :was"
            moved["ExpressionAttributeValues"] = {":was": n(head.seq)}
        put = {"Put": {"TableName": self.table, "Item": entry, "ConditionExpression": "attribute_not_exists(pk)"}}
        return [put, {"Put": moved}], Head(seq, digest)

    def _rows(self, block: int, *, before: int | None = None) -> Iterator[Row]:
        """A block's entries, oldest first (or, with ``before``, newest first below that seq)."""
        query: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": s(f"audit|{block}")},
            "ConsistentRead": True,
        }
        if before is not None:
            query["KeyConditionExpression"] += " AND sk < :before"
            query["ExpressionAttributeValues"][":before"] = s(_sk(before))
            query["ScanIndexForward"] = False
        for page in self.pages(**query):
            for i in page:
                yield (
                    int(i["seq"]["N"]),
                    float(i["at"]["N"]),
                    i["actor"]["S"],
                    i["action"]["S"],
                    i["target"]["S"],
                    i["detail"]["S"],
                    i["hash"]["S"],
                )

    def verify(self) -> Verdict:
        """Recompute the chain, as ``ringfence audit verify`` does for the embedded trail."""
        if not self.key:
            raise StoreError("the audit trail needs a key: set RINGFENCE_SECRET_AUDIT_KEY")
        head = self.head()
        last_block = head.seq // BLOCK if head else 0

        def rows() -> Iterator[Row]:
            block = 0
            while True:
                found = False
                for row in self._rows(block):
                    found = True
                    yield row
                if not found and block >= last_block:
                    return
                block += 1

        return check_chain(self.key, rows(), head)

    def list_audit(self, limit: int = 100, cursor: int | None = None) -> tuple[list[dict[str, Any]], int | None]:
        """One page of entries, newest first (those before entry ``cursor``), and the next page's cursor."""
        head = self.head()
        if head is None:
            return [], None
        # a cursor past the head reads from the head: the blocks below it are never empty, so a page
        # reads a block or two (a cursor of 10**9 walked 100,000 empty blocks)
        before = min(cursor, head.seq + 1) if cursor is not None else head.seq + 1
        found: list[Row] = []
        block = (before - 1) // BLOCK
        while block >= 0 and len(found) <= limit:
            for row in self._rows(block, before=before):
                found.append(row)
                if len(found) > limit:
                    break
            block -= 1
        items = [
            {"seq": q, "at": iso(at), "actor": a, "action": act, "target": t, "detail": msgspec.json.decode(d)}
            for q, at, a, act, t, d, _ in found[:limit]
        ]
        return items, (found[limit - 1][0] if len(found) > limit else None)
