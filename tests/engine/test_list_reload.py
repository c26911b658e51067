"""A list's values across a hot reload: a pack version's own values for the lists nobody
edited at run time, the edited values for the others; as after a restart, on both engines."""

from __future__ import annotations

import pytest

from ringfence.engine.engine import Engine
from ringfence.engine.pack import RulePack, load_pack
from ringfence.events.model import Event
from tests.helpers.differential import engine_factory

PACK = """
version: "{version}"
types: [acme.bag]
lists:
  blocked: [{blocked}]
  watched: [{watched}]
rules:
  - id: blocked
    on: [acme.bag]
    when: data.country in lists.blocked
    severity: high
    audience: fraud
    title: blocked
  - id: watched
    on: [acme.bag]
    when: data.country in lists.watched
    severity: low
    audience: fraud
    title: watched
"""


def pack(version: str, blocked: str, watched: str) -> RulePack:
    return load_pack(PACK.format(version=version, blocked=blocked, watched=watched))


def fired(engine: Engine, country: str, n: int) -> list[str]:
    bag = Event(f"e{n}", "acme.bag", 1_800_000_000.0 + n, "acme", {"country": country}, "cus_1")
    return sorted(s.rule_id for s in engine.process(bag, n, 0, 0.0))


@pytest.mark.parametrize("kind", ["python", "native"])
def test_a_new_pack_versions_lists_apply_where_nobody_edited_them(kind: str) -> None:
    engine = engine_factory(kind)(pack("1", "KP", "IR"))
    engine.set_list("watched", frozenset({"VE"}))  # PUT /v1/lists/watched
    assert fired(engine, "KP", 1) == ["blocked"]
    reloaded = engine.reloaded(pack("2", "XZ", "SY"))
    assert reloaded.lists == {"blocked": frozenset({"XZ"}), "watched": frozenset({"VE"})}
    assert fired(reloaded, "XZ", 2) == ["blocked"]  # the new version's sanctions list
    assert fired(reloaded, "KP", 3) == []
    assert fired(reloaded, "VE", 4) == ["watched"]  # the edit stands, as after a restart
    assert fired(reloaded, "SY", 5) == []
    again = reloaded.fresh().reloaded(pack("3", "YY", "QQ"))  # a restart's engine, then a reload
    assert again.lists == {"blocked": frozenset({"YY"}), "watched": frozenset({"VE"})}
    assert fired(again, "YY", 6) == ["blocked"]
