"""Silences in the alerts table (:class:`~ringfence.alerts.ports.SilenceStore`): one
partition, one item each, kept 30 days after they end. What a silence may be is
:func:`~ringfence.alerts.silences.check_silence`'s to say; a refused one is never stored."""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Any

import msgspec

from ringfence.alerts.matchers import parse_stored_matchers
from ringfence.alerts.silences import Silence, check_silence
from ringfence.clock import iso
from ringfence.errors import NotFound, StoreError
from ringfence.runtimes.aws.audit import AuditTrail
from ringfence.runtimes.aws.items import TableItems, json_s, n, s

SILENCE_TTL_S = 30 * 86400.0  # an ended silence is kept this long, then DynamoDB deletes it
EXPIRE_ATTEMPTS = 8


def _silence(item: dict[str, Any]) -> Silence:
    return Silence(
        item["sk"]["S"],
        parse_stored_matchers(msgspec.json.decode(item["matchers"]["S"])),
        float(item["starts_at"]["N"]),
        float(item["ends_at"]["N"]),
        item["created_by"]["S"],
        item["comment"]["S"],
        float(item["created_at"]["N"]),
    )


class SilenceItems(TableItems):
    audit: AuditTrail

    def create_silence(
        self, matchers: list[str], starts_at: float, ends_at: float, actor: str, comment: str, now: float
    ) -> Silence:
        """Store an acceptable silence, audited; SilenceError (nothing stored) if it is not."""
        silence = Silence(
            f"sil_{secrets.token_hex(8)}",
            check_silence(matchers, starts_at, ends_at, comment, now),
            starts_at,
            ends_at,
            actor,
            comment,
            now,
        )
        item = {
            "pk": s("silences"),
            "sk": s(silence.id),
            "matchers": json_s(matchers),
            "starts_at": n(starts_at),
            "ends_at": n(ends_at),
            "created_by": s(actor),
            "comment": s(comment),
            "created_at": n(now),
            "ttl": n(int(ends_at + SILENCE_TTL_S)),
        }
        detail = {"matchers": matchers, "ends_at": iso(ends_at), "comment": comment}
        put = {"Put": {"TableName": self.table, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}}
        if not self.audit.record([put], actor, "silence.create", silence.id, detail, now):
            raise StoreError(f"silence id {silence.id} is taken")  # 64 random bits: never in practice
        return silence

    def silences(self, current_at: float | None = None) -> list[Silence]:
        """Every silence newest first, or with ``current_at`` those not expired then."""
        items = [
            i
            for page in self.pages(
                KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": s("silences")}, ConsistentRead=True
            )
            for i in page
            if current_at is None or float(i["ends_at"]["N"]) > current_at
        ]
        return sorted((_silence(i) for i in items), key=lambda x: x.created_at, reverse=True)

    def expire_silence(self, silence_id: str, actor: str, now: float) -> Silence:
        """End an active or pending silence now (audited); NotFound if there is none."""
        for _ in range(EXPIRE_ATTEMPTS):
            item = self.get("silences", silence_id)
            if item is None or float(item["ends_at"]["N"]) <= now:
                raise NotFound(f"no active or pending silence {silence_id!r}")
            starts_at = min(float(item["starts_at"]["N"]), now)
            update = {
                "Update": {
                    "TableName": self.table,
                    "Key": {"pk": s("silences"), "sk": s(silence_id)},
                    "UpdateExpression": "SET starts_at = :st, ends_at = :now, #ttl = :ttl",
                    "ConditionExpression": "ends_at = :was",
                    "ExpressionAttributeNames": {"#ttl": "ttl"},
                    "ExpressionAttributeValues": {
                        ":st": n(starts_at),
                        ":now": n(now),
                        ":ttl": n(int(now + SILENCE_TTL_S)),
                        ":was": item["ends_at"],
                    },
                }
            }
            if self.audit.record([update], actor, "silence.expire", silence_id, {}, now):
                return replace(_silence(item), starts_at=starts_at, ends_at=now)
        raise StoreError(f"silence {silence_id} kept changing")
