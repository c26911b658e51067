"""Reads DynamoDB throttles (provisioned capacity used up, a hot partition): the keys a
``BatchGetItem`` leaves unprocessed are asked for again after a growing pause, never at once."""

from __future__ import annotations

from typing import Any

import pytest

from ringfence.runtimes.aws import resources
from ringfence.runtimes.aws.resources import batch_get


class Throttling:
    """A table of ``items`` that leaves all but one key unprocessed, ``times`` times in a row."""

    def __init__(self, items: dict[str, dict[str, Any]], times: int) -> None:
        self.items, self.times, self.requests = items, times, 0

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.requests += 1
        ((table, request),) = RequestItems.items()
        keys = request["Keys"]
        served, left = (keys[:1], keys[1:]) if self.times > 0 else (keys, [])
        self.times -= 1
        reply: dict[str, Any] = {
            "Responses": {table: [self.items[k["pk"]["S"]] for k in served if k["pk"]["S"] in self.items]}
        }
        if left:
            reply["UnprocessedKeys"] = {table: {**request, "Keys": left}}
        return reply


def test_unprocessed_keys_are_read_after_pauses_doubling_to_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(resources.time, "sleep", pauses.append)
    items = {f"k{i}": {"pk": {"S": f"k{i}"}} for i in range(10)}
    db = Throttling(items, times=7)
    keys = [{"pk": {"S": f"k{i}"}} for i in range(12)]  # two that do not exist

    found = batch_get(db, "state", {"Keys": keys, "ConsistentRead": True})

    assert sorted(item["pk"]["S"] for item in found) == sorted(items)
    assert db.requests == 8
    assert pauses == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
