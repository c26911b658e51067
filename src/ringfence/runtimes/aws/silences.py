"""Silences in the alerts table (:class:`~ringfence.alerts.ports.SilenceStore`): one
partition, one item each, kept :data:`~ringfence.alerts.silences.SILENCE_KEPT_S` after they
end (DynamoDB's TTL deletes them), listed newest first by ``by_created``. What a silence may
be is :func:`~ringfence.alerts.silences.check_silence`'s to say; a refused one is never stored.

The pipeline reads the current ones on every step, filtered by DynamoDB (an ended silence
costs a read, not a transfer). Items written before silences were listed by index have no
``gp``: that read, or a listing's first page, gives them one, once."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from ringfence.alerts.matchers import stored_matchers
from ringfence.alerts.silences import MAX_CURRENT_SILENCES, SILENCE_KEPT_S, Silence, TooManySilences, check_silence
from ringfence.clock import iso
from ringfence.errors import NotFound, StoreError
from ringfence.runtimes.aws.audit import AuditTrail
from ringfence.runtimes.aws.items import CREATED_INDEX, TableItems, json_s, n, s, sort_time

EXPIRE_ATTEMPTS = 8
_PARTITION = "silences"  # their ``pk``, and their ``gp`` in ``by_created``
_CURSOR = {"pk": _PARTITION, "sk": None, "gp": _PARTITION, "gs": None}  # the key of a page's last one


def _listed(silence_id: str, created_at: float) -> dict[str, dict[str, str]]:
    """The attributes that list a silence in ``by_created``."""
    return {"gp": s(_PARTITION), "gs": s(f"{sort_time(created_at)}|{silence_id}")}


def _silence(item: dict[str, Any]) -> Silence:
    return Silence(
        item["sk"]["S"],
        stored_matchers(item["matchers"]["S"]),
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
        """Store an acceptable silence, audited; SilenceError (nothing stored) if it is not,
        TooManySilences past the current ones' bound (counted before the write: DynamoDB has
        no count a transaction could hold)."""
        parsed = check_silence(matchers, starts_at, ends_at, comment, now)
        if self.current_count(now) >= MAX_CURRENT_SILENCES:
            raise TooManySilences()
        silence = Silence(
            f"sil_{secrets.token_hex(8)}",
            parsed,
            starts_at,
            ends_at,
            actor,
            comment,
            now,
        )
        item = {
            "pk": s(_PARTITION),
            "sk": s(silence.id),
            **_listed(silence.id, now),
            "matchers": json_s(matchers),
            "starts_at": n(starts_at),
            "ends_at": n(ends_at),
            "created_by": s(actor),
            "comment": s(comment),
            "created_at": n(now),
            "ttl": n(int(ends_at + SILENCE_KEPT_S)),
        }
        detail = {"matchers": matchers, "ends_at": iso(ends_at), "comment": comment}
        put = {"Put": {"TableName": self.table, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}}
        if not self.audit.record([put], actor, "silence.create", silence.id, detail, now):
            raise StoreError(f"silence id {silence.id} is taken")  # 64 random bits: never in practice
        return silence

    def silences(self, limit: int, cursor: str | None, now: float) -> tuple[list[Silence], str | None]:
        """By the index (newest first), then read again consistently: the index lags the table
        (a silence just expired would still show active)."""
        if cursor is None:  # what an older release wrote is listed before a first page is read
            for page in self._partition({}, FilterExpression="attribute_not_exists(gp)"):
                for item in page["Items"]:
                    self._list(item)
        query: dict[str, Any] = {
            "IndexName": CREATED_INDEX,
            "KeyConditionExpression": "gp = :gp",
            "FilterExpression": "ends_at > :kept",  # DynamoDB's TTL deletes them later, within days
            "ProjectionExpression": "pk, sk, gp, gs",
            "ExpressionAttributeValues": {":gp": s(_PARTITION), ":kept": n(now - SILENCE_KEPT_S)},
            "ScanIndexForward": False,
        }
        keys, next_cursor = self.listing(query, limit, cursor, _CURSOR)
        found = {i["sk"]["S"]: i for i in self.get_many([(_PARTITION, k["sk"]["S"]) for k in keys])}
        return [_silence(found[k["sk"]["S"]]) for k in keys if k["sk"]["S"] in found], next_cursor

    def current_count(self, now: float) -> int:
        replies = self._partition({":now": n(now)}, Select="COUNT", FilterExpression="ends_at > :now")
        return sum(reply["Count"] for reply in replies)

    def current_silences(self, now: float) -> list[Silence]:
        """The silences not expired at ``now``, newest first (and an unlisted item listed)."""
        found: list[Silence] = []
        for page in self._partition({":now": n(now)}, FilterExpression="ends_at > :now OR attribute_not_exists(gp)"):
            for item in page["Items"]:
                if "gp" not in item:
                    self._list(item)
                if float(item["ends_at"]["N"]) > now:
                    found.append(_silence(item))
        return sorted(found, key=lambda x: x.created_at, reverse=True)

    def _partition(self, values: dict[str, Any], **query: Any) -> Iterator[dict[str, Any]]:
        """The replies of a query of the silences' partition, filtered as ``query`` says with
        ``values``, read consistently."""
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": s(_PARTITION), **values},
            "ConsistentRead": True,
            **query,
        }
        while True:
            reply: dict[str, Any] = self.db.query(**request)
            yield reply
            if "LastEvaluatedKey" not in reply:
                return
            request["ExclusiveStartKey"] = reply["LastEvaluatedKey"]

    def _list(self, item: dict[str, Any]) -> None:
        listed = _listed(item["sk"]["S"], float(item["created_at"]["N"]))
        self.update_if(
            {"pk": item["pk"], "sk": item["sk"]},
            UpdateExpression="SET gp = :gp, gs = :gs",
            ConditionExpression="attribute_exists(pk) AND attribute_not_exists(gp)",
            ExpressionAttributeValues={":gp": listed["gp"], ":gs": listed["gs"]},
        )

    def expire_silence(self, silence_id: str, actor: str, now: float) -> Silence:
        """End an active or pending silence now (audited); NotFound if there is none. Expired
        once: a request that read the clock before another's expiry would find the silence
        still current at its ``now`` (marked ``expired_at``, a condition of the update)."""
        for _ in range(EXPIRE_ATTEMPTS):
            item = self.get(_PARTITION, silence_id)
            if item is None or "expired_at" in item or float(item["ends_at"]["N"]) <= now:
                raise NotFound(f"no active or pending silence {silence_id!r}")
            starts_at = min(float(item["starts_at"]["N"]), now)
            update = {
                "Update": {
                    "TableName": self.table,
                    "Key": {"pk": s(_PARTITION), "sk": s(silence_id)},
                    "UpdateExpression": "SET starts_at = :st, ends_at = :now, expired_at = :now, #ttl = :ttl",
                    "ConditionExpression": "ends_at = :was AND attribute_not_exists(expired_at)",
                    "ExpressionAttributeNames": {"#ttl": "ttl"},
                    "ExpressionAttributeValues": {
                        ":st": n(starts_at),
                        ":now": n(now),
                        ":ttl": n(int(now + SILENCE_KEPT_S)),
                        ":was": item["ends_at"],
                    },
                }
            }
            if self.audit.record([update], actor, "silence.expire", silence_id, {}, now):
                return replace(_silence(item), starts_at=starts_at, ends_at=now)
        raise StoreError(f"silence {silence_id} kept changing")
