"""Label matchers and the alerting config: parsing, validation, routing with inheritance."""

from __future__ import annotations

import pytest

from ringfence.alerts.config import build_config
from ringfence.alerts.matchers import Matcher, MatcherError
from ringfence.errors import ConfigError

LABELS = {"severity": "critical", "audience": "fraud", "customer_id": "cus_1", "category": "card_fraud"}


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("severity=critical", True),
        ('severity="critical"', True),
        ("severity!=critical", False),
        ("severity=~crit.*", True),
        ("severity=~crit", False),  # regexes are anchored
        ('severity=~"high|critical"', True),
        ("severity!~low|info", True),
        ("missing=", True),  # an absent label is empty
        ("missing!=", False),
    ],
)
def test_matchers(text: str, matches: bool) -> None:
    assert Matcher.parse(text).matches(LABELS) is matches


@pytest.mark.parametrize("text", ["severity", "=x", "1abc=x", "severity=~(", "sev erity=x"])
def test_bad_matchers_are_named(text: str) -> None:
    with pytest.raises(MatcherError, match="invalid"):
        Matcher.parse(text)


CONFIG = {
    "receivers": [
        {"name": "fraud-hook", "webhook": {"url": "http://127.0.0.1:1/hook"}},
        {"name": "oncall", "slack": {"url": "http://127.0.0.1:1/slack"}},
        {"name": "bank", "webhook": {"url": "http://127.0.0.1:1/notify"}},
    ],
    "route": {
        "receiver": "oncall",
        "group_by": ["rule_id"],
        "group_wait": "10s",
        "routes": [
            {"matchers": ["audience=customer"], "receiver": "bank", "group_by": ["alert_id"], "group_wait": "0s"},
            {
                "matchers": ["audience=fraud"],
                "receiver": "fraud-hook",
                "continue": True,
                "routes": [{"matchers": ["severity=critical"], "group_interval": "1m"}],
            },
            {"matchers": ["category=card_fraud"], "receiver": "oncall"},
        ],
    },
    "inhibit_rules": [
        {"source_matchers": ["severity=critical"], "target_matchers": ["severity=medium"], "equal": ["customer_id"]}
    ],
}


def test_routes_inherit_and_continue() -> None:
    config = build_config(CONFIG)
    routes = config.route.match(LABELS)
    assert [(r.receiver, r.id) for r in routes] == [
        ("fraud-hook", "route.routes[1].routes[0]"),  # the deepest match, receiver inherited
        ("oncall", "route.routes[2]"),  # continue: later siblings are tried too
    ]
    assert routes[0].group_wait == 10.0
    assert routes[0].group_interval == 60.0
    assert [r.receiver for r in config.route.match({"audience": "ops"})] == ["oncall"]  # nothing matched: the root
    customer = config.route.match({"audience": "customer"})
    assert [(r.receiver, r.group_by, r.group_wait) for r in customer] == [("bank", ("alert_id",), 0.0)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"route": {"receiver": "nobody"}}, "route: unknown receiver 'nobody'"),
        ({"route": {"receiver": "oncall", "routes": [{"matchers": ["sev~x"]}]}}, r"route.routes\[0\]: invalid matcher"),
        ({"route": {"receiver": "oncall", "group_wait": "soon"}}, "route: invalid duration"),
        ({"route": {"receiver": "oncall", "matchers": ["a=b"]}}, "root route matches every alert"),
        ({"receivers": [{"name": "x"}]}, r"receivers\[0\] \(x\): give exactly one of"),
        (
            {"receivers": [{"name": "x", "webhook": {"url": "u", "secret_env": "RINGFENCE_NOT_SET_ANYWHERE"}}]},
            "environment variable RINGFENCE_NOT_SET_ANYWHERE is not set",
        ),
        ({"inhibit_rules": [{"source_matchers": ["a"], "target_matchers": []}]}, r"inhibit_rules\[0\]"),
        ({"route": {"receiver": "oncall", "bogus": 1}}, "unknown field"),
    ],
)
def test_bad_configs_fail_at_start_naming_the_place(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config({**CONFIG, **change})


def test_the_default_config_keeps_alerts_on_the_dashboard() -> None:
    config = build_config({})
    assert [r.receiver for r in config.route.match(LABELS)] == ["dashboard"]
