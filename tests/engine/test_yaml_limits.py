"""YAML from outside is loaded with bounds: no anchors or aliases ("billion laughs"), bounded
nodes and nesting, and bounded memory for any document that is accepted."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ringfence import safe_yaml
from ringfence.alerts.config import load_alerting
from ringfence.engine import load_pack
from ringfence.engine.pack import MAX_PACK_BYTES
from ringfence.errors import ConfigError, RulePackError
from tests.helpers.hostile_yaml import ACCEPTED_WORST_CASES, billion_laughs, many_rules

MAX_ACCEPTED_MB = 50


def peak_mb(fn: Callable[[], Any]) -> float:
    tracemalloc.start()
    try:
        fn()
    except (RulePackError, ConfigError):
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 1e6


@pytest.mark.serial  # < 1 s
def test_a_billion_laughs_pack_is_refused_quickly_naming_aliases_and_the_line() -> None:
    text = billion_laughs()
    started = time.monotonic()
    with pytest.raises(RulePackError, match=r"anchors and aliases .*\(line 3,"):
        load_pack(text)
    assert time.monotonic() - started < 1.0
    assert peak_mb(lambda: load_pack(text)) < 5


@pytest.mark.parametrize(
    "text",
    [
        "version: x\ndescription: &d text\n",  # an anchor alone is refused too: it exists only to be aliased
        "version: x\nlists:\n  a: [x]\n  b: *a\n",  # an alias to an undefined anchor
        "version: x\nrules:\n- &r {id: a}\n- *r\n",
    ],
)
def test_any_anchor_or_alias_is_refused(text: str) -> None:
    with pytest.raises(RulePackError, match="anchors and aliases"):
        load_pack(text)


def test_a_key_given_twice_in_one_mapping_is_refused_naming_it_and_its_line(tmp_path: Path) -> None:
    """YAML keeps the last of two equal keys: a reviewer reading the first ``when`` would approve a
    rule the engine never runs."""
    pack = (
        'version: "dup"\nrules:\n  - id: r1\n    on: [transfer.initiated]\n'
        "    when: data.payee_country == 'KP'\n    severity: high\n    audience: aml\n"
        "    title: t\n    when: 'false'\n"
    )
    with pytest.raises(RulePackError, match=r"the key 'when' is given twice .*\(line 9,"):
        load_pack(pack)
    assert load_pack(pack, stored=True).rules[0].when.source == "false"  # one that ran before still loads
    # keys equal as YAML builds them, not as written: 1 and '1' differ, 1 and 0x1 do not
    assert safe_yaml.load("1: x\n'1': y\n") == {1: "x", "1": "y"}
    with pytest.raises(safe_yaml.UnsafeYAMLError, match="given twice"):
        safe_yaml.load("1: x\n0x1: y\n")
    # a merge key's keys land beside the mapping's own: a second 'when' nobody sees as one
    merged = pack.replace("    when: 'false'\n", "    <<: {when: 'false'}\n")
    with pytest.raises(RulePackError, match="merge keys"):
        load_pack(merged)
    with pytest.raises(RulePackError, match="'l' is given twice"):
        load_pack("version: x\nlists: {l: [a], l: [b]}\n")
    path = tmp_path / "alerting.yaml"
    path.write_text("receivers: []\nroute: {receiver: dashboard}\nreceivers: []\n")
    with pytest.raises(ConfigError, match="'receivers' is given twice"):
        load_alerting(path)
    # the same key in sibling mappings, and equal values, are ordinary YAML
    assert safe_yaml.load("x: [{a: 1, b: 1}, {a: 1}]\nc: [1, 1]\n") == {
        "x": [{"a": 1, "b": 1}, {"a": 1}],
        "c": [1, 1],
    }


def test_too_many_nodes_or_too_deep_a_nesting_is_refused_without_recursion() -> None:
    many = "version: x\nlists:\n  l: [" + ",".join("a" for _ in range(safe_yaml.MAX_NODES)) + "]\n"
    with pytest.raises(RulePackError, match=f"more than {safe_yaml.MAX_NODES} YAML values"):
        load_pack(many)
    deep = "version: x\ndescription: " + "[" * 500 + "]" * 500
    with pytest.raises(RulePackError, match=f"nested deeper than {safe_yaml.MAX_DEPTH} levels"):
        load_pack(deep)
    deepest = "version: x\ndescription: " + "[" * 200_000 + "]" * 200_000  # 400 KB: a 400, never a RecursionError
    with pytest.raises(RulePackError, match="invalid YAML"):
        load_pack(deepest)
    block = "version: x\ndescription:\n" + "".join(" " * i + "- \n" for i in range(1, 500))
    with pytest.raises(RulePackError, match="invalid YAML"):
        load_pack(block)


@pytest.mark.parametrize("name", sorted(ACCEPTED_WORST_CASES))
def test_memory_for_the_largest_structures_the_loader_accepts_stays_bounded(name: str) -> None:
    text = ACCEPTED_WORST_CASES[name]
    assert len(text.encode()) <= MAX_PACK_BYTES
    safe_yaml.check_structure(text)  # within every bound: the structure itself is accepted
    assert peak_mb(lambda: load_pack(text)) < MAX_ACCEPTED_MB


def test_yaml_one_point_two_booleans_still_apply_to_packs() -> None:
    pack = load_pack(many_rules(1))
    assert pack.rules[0].on == frozenset({"login.failed"})  # ``on`` is a key, not True


def test_the_plain_loader_accepts_ordinary_yaml() -> None:
    assert safe_yaml.load("a: [1, 2]\nb: {c: true}\n") == {"a": [1, 2], "b": {"c": True}}
    with pytest.raises(yaml.YAMLError):
        safe_yaml.load("a: [1, 2\n")


def test_the_alerting_config_refuses_aliases_and_oversized_files(tmp_path: Path) -> None:
    path = tmp_path / "alerting.yaml"
    path.write_text("receivers: &r []\nroute: {receiver: dashboard}\n")
    with pytest.raises(ConfigError, match=r"anchors and aliases .*\(line 1,"):
        load_alerting(path)
    path.write_text("# " + "x" * (2 * 1024 * 1024) + "\n")
    with pytest.raises(ConfigError, match="larger than"):
        load_alerting(path)
    path.write_text("route: {receiver: dashboard, group_wait: 5s}\n")
    assert load_alerting(path).route.group_wait == 5.0


def test_the_pure_python_parser_is_bounded_the_same_way() -> None:
    """Without libyaml in the wheel the same checks apply."""
    with pytest.raises(safe_yaml.UnsafeYAMLError, match="anchors and aliases"):
        safe_yaml.check_structure(billion_laughs(), yaml.SafeLoader)
    with pytest.raises(safe_yaml.UnsafeYAMLError, match="nested deeper"):
        safe_yaml.check_structure("a: " + "[" * 100 + "]" * 100, yaml.SafeLoader)
