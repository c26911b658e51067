"""Alert groups in the alerts table: each :class:`~ringfence.alerts.grouping.GroupState`
one item, versioned (dispatchers write it conditionally and read again when they lose),
in ``by_active`` under ``~group`` at its next flush. An alert's membership items let a
resolution find its groups. When a group flushes and what it says is decided in
:mod:`ringfence.alerts.grouping`. One more item notes when the dispatcher is due to wake
(:meth:`GroupItems.schedule_wake`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from ringfence.alerts.grouping import NEVER, GroupState
from ringfence.runtimes.aws.items import DUE_GROUP, TableItems, n, s

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(GroupState)


@dataclass
class StoredGroup:
    """A group as read, with the version a write of it is conditional on (0: new)."""

    state: GroupState
    version: int = 0


def _stored(item: dict[str, Any]) -> StoredGroup:
    return StoredGroup(_decoder.decode(item["state"]["S"]), int(item["v"]["N"]))


class GroupItems(TableItems):
    def group(self, key: str) -> StoredGroup | None:
        item = self.get(f"g|{key}", "g")
        return _stored(item) if item else None

    def group_write(self, group: StoredGroup) -> dict[str, Any]:
        """The transaction item saving ``group`` over the version it was read at."""
        state = group.state
        item = {
            "pk": s(f"g|{state.key}"),
            "sk": s("g"),
            "state": s(_encoder.encode(state).decode()),
            "v": n(group.version + 1),
        }
        if state.next_flush_at < NEVER:
            item |= {"act": s(DUE_GROUP), "updated_at": n(state.next_flush_at)}
        put: dict[str, Any] = {"TableName": self.table, "Item": item}
        if group.version:
            put |= {"ConditionExpression": "v = :v", "ExpressionAttributeValues": {":v": n(group.version)}}
        else:
            put["ConditionExpression"] = "attribute_not_exists(pk)"
        return {"Put": put}

    def group_drop(self, group: StoredGroup) -> dict[str, Any]:
        """The transaction item deleting ``group``, if it is still the version read."""
        return {
            "Delete": {
                "TableName": self.table,
                "Key": {"pk": s(f"g|{group.state.key}"), "sk": s("g")},
                "ConditionExpression": "v = :v",
                "ExpressionAttributeValues": {":v": n(group.version)},
            }
        }

    def membership_put(self, alert_id: str, key: str) -> dict[str, Any]:
        """The transaction item recording that ``alert_id`` joined group ``key``."""
        item = {"pk": s(f"a|{alert_id}"), "sk": s(f"g|{key}")}
        return {"Put": {"TableName": self.table, "Item": item}}

    def joined(self, alert_id: str, prefix: str = "") -> list[str]:
        """The keys of the groups ``alert_id`` joined (whose keys start with ``prefix``), by its
        membership items: it may have left one since (its state says)."""
        return [
            i["sk"]["S"].removeprefix("g|")
            for page in self.pages(
                KeyConditionExpression="pk = :pk AND begins_with(sk, :g)",
                ExpressionAttributeValues={":pk": s(f"a|{alert_id}"), ":g": s(f"g|{prefix}")},
                ConsistentRead=True,
            )
            for i in page
        ]

    def groups_with(self, alert_id: str) -> list[StoredGroup]:
        """The groups ``alert_id`` is in."""
        groups = [_stored(i) for i in self.get_many([(f"g|{key}", "g") for key in self.joined(alert_id)])]
        return [g for g in groups if alert_id in g.state.alert_ids]

    def due_groups(self, now: float, limit: int = 100) -> list[StoredGroup]:
        groups = [_stored(i) for i in self.get_many(self.due(DUE_GROUP, now, limit))]
        return [g for g in groups if g.state.next_flush_at <= now]

    def next_flush(self) -> float | None:
        """When the earliest group is due to flush."""
        return self.earliest(DUE_GROUP)

    def schedule_wake(self, at: float, now: float) -> bool:
        """Note that the dispatcher will wake at ``at``: False if a wake-up by then is already
        due (so racing dispatchers schedule one each time, not one each)."""
        return self.update_if(
            {"pk": s("dispatch"), "sk": s("wake")},
            UpdateExpression="SET #w = :at",
            ConditionExpression="attribute_not_exists(#w) OR #w <= :now OR #w > :at",
            ExpressionAttributeNames={"#w": "at"},
            ExpressionAttributeValues={":at": n(at), ":now": n(now)},
        )
