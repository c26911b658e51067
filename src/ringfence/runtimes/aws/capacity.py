"""What DynamoDB charges for the calls a client makes, in request units, by AWS's published
rules: a write unit per KB written (two in a transaction), a read unit per 4 KB read
strongly consistently (half of one eventually consistently), an absent item read at the
price of the smallest. Counted through botocore's event hooks, so the benchmark can turn
the units into a cost per event and a test can keep them under their budget.

The count is of the requests and replies the client sees, which makes four estimates: an
update or a delete is charged on what it sends (AWS charges the larger of the item before
and after); a read on what it returns (AWS charges the whole item, not a projection); a
query or scan on the items it returns (AWS charges what it reads before a filter); and a
write that arms a timer (sets ``tp``) is charged two index writes, as if its timer moved
(an index entry deleted and put; AWS charges none when it stays, and one for an entry
dropped, which this count misses).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4096
INDEXED = "tp"  # the attribute that puts an item in the timers index (see state.py)


def item_size(item: Mapping[str, Any]) -> int:
    """An item's size as DynamoDB counts it: each attribute's name and value (boto3's
    low-level form, ``{"S": ...}``)."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: Mapping[str, Any]) -> int:
    ((kind, v),) = value.items()
    if kind == "S":
        return len(str(v).encode())
    if kind == "B":
        return len(v)
    if kind == "N":
        digits = str(v).lstrip("-").replace(".", "").strip("0")
        return (len(digits) + 1) // 2 + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + 1 + _value_size(x) for k, x in v.items())
    if kind == "L":
        return 3 + sum(1 + _value_size(x) for x in v)
    return sum(_value_size({kind[0]: x}) for x in v)  # SS, NS, BS


def _units(size: int, unit: int) -> int:
    return max(1, math.ceil(size / unit))


class UnitMeter:
    """Counts a DynamoDB client's calls and the request units they cost."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.write_units = 0.0
        self.read_units = 0.0
        self.items_written = 0
        self.bytes_written = 0
        self.keys_read = 0

    def attach(self, client: Any) -> None:
        client.meta.events.register("provide-client-params.dynamodb.*", self._sent)
        client.meta.events.register("after-call.dynamodb.*", self._answered)

    def detach(self, client: Any) -> None:
        client.meta.events.unregister("provide-client-params.dynamodb.*", self._sent)
        client.meta.events.unregister("after-call.dynamodb.*", self._answered)

    def _sent(self, params: Mapping[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        context["ringfence_params"] = params
        name, body = model.name, params
        self.calls[name] += 1
        if name == "TransactWriteItems":
            for entry in body["TransactItems"]:
                ((_, op),) = entry.items()
                self._written(op.get("Item") or op.get("Key") or {}, transactional=True)
        elif name == "PutItem":
            self._written(body["Item"], transactional=False)
        elif name in ("UpdateItem", "DeleteItem"):
            values = body.get("ExpressionAttributeValues", {})
            sent = {**body["Key"], **{k.lstrip(":"): v for k, v in values.items()}}
            self._written(sent, transactional=False)
        elif name == "BatchWriteItem":
            for requests in body["RequestItems"].values():
                for request in requests:
                    ((_, op),) = request.items()
                    self._written(op.get("Item") or op.get("Key") or {}, transactional=False)

    def _written(self, item: Mapping[str, Any], *, transactional: bool) -> None:
        size = item_size(item)
        self.items_written += 1
        self.bytes_written += size
        self.write_units += _units(size, WRITE_UNIT_BYTES) * (2 if transactional else 1)
        if INDEXED in item:
            self.write_units += 2

    def _answered(self, parsed: Mapping[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        body: Mapping[str, Any] = context.get("ringfence_params", {})
        name = model.name
        if name == "BatchGetItem":
            for table, request in body.get("RequestItems", {}).items():
                found = parsed.get("Responses", {}).get(table, [])
                unprocessed = len(parsed.get("UnprocessedKeys", {}).get(table, {}).get("Keys", []))
                asked = len(request["Keys"]) - unprocessed
                self.keys_read += asked
                factor = 1.0 if request.get("ConsistentRead") else 0.5
                sizes = [item_size(item) for item in found] + [0] * (asked - len(found))
                self.read_units += factor * sum(_units(size, READ_UNIT_BYTES) for size in sizes)
        elif name == "GetItem":
            self.keys_read += 1
            factor = 1.0 if body.get("ConsistentRead") else 0.5
            self.read_units += factor * _units(item_size(parsed.get("Item", {})), READ_UNIT_BYTES)
        elif name in ("Query", "Scan"):
            factor = 1.0 if body.get("ConsistentRead") and "IndexName" not in body else 0.5
            total = sum(item_size(item) for item in parsed.get("Items", []))
            self.read_units += factor * _units(total, READ_UNIT_BYTES)
