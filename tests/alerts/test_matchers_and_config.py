"""Label matchers and the alerting config: parsing, validation, routing with inheritance."""

from __future__ import annotations

import time

import pytest

from ringfence.alerts.config import build_config
from ringfence.alerts.matchers import Matcher, MatcherError, parse_stored_matchers
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
        # values no receiver could send with: every attempt would fail, and only then be seen
        ({"receivers": [{"name": "x", "webhook": {"url": "http://h/", "timeout_s": float("nan")}}]}, "timeout_s"),
        ({"receivers": [{"name": "x", "slack": {"url": "http://h/", "timeout_s": -1}}]}, "> 0.0"),
        ({"receivers": [{"name": "x", "webhook": {"url": "file:///etc/passwd"}}]}, "url must be an http"),
        ({"receivers": [{"name": "x", "webhook": {"url": "not a url"}}]}, "url must be an http"),
        ({"receivers": [{"name": "x", "webhook": {"url": "https://h\n/x"}}]}, "url must be an http"),
        ({"receivers": [{"name": "x", "webhook": {"url": "https://h:99999/x"}}]}, "url must be an http"),
        ({"receivers": [{"name": "x", "webhook": {"url": " https://h/x"}}]}, "url must be an http"),
        ({"receivers": [{"name": "m", "email": {"host": "h", "to": ["a@b\u2028x"], "sender": "s@b"}}]}, "email.to"),
        ({"receivers": [{"name": "x", "pagerduty": {"url": "ftp://h/", "routing_key_env": "HOME"}}]}, "http"),
        (
            {"receivers": [{"name": "m", "email": {"host": "h", "to": ["a@b.example\r\nBcc: x@y"], "sender": "s@b"}}]},
            r"\$\.receivers\[0\]\.email\.to\[0\]",
        ),
        (
            {"receivers": [{"name": "m", "email": {"host": "h", "to": ["ops"], "sender": "s@b"}}]},
            "to 'ops' holds no email",
        ),
        ({"receivers": [{"name": "m", "email": {"host": "h", "to": [], "sender": "s@b"}}]}, "length >= 1"),
        (
            {"receivers": [{"name": "m", "email": {"host": "h", "to": ["a@b"], "sender": "s@b", "port": 999999}}]},
            "65535",
        ),
        # credentials over a network in clear (found by a hostile audit: AUTH PLAIN seen on the wire)
        (
            {
                "receivers": [
                    {
                        "name": "m",
                        "email": {
                            "host": "smtp.bank.example",
                            "to": ["a@b"],
                            "sender": "s@b",
                            "username": "u",
                            "password_env": "HOME",
                        },
                    }
                ]
            },
            "SMTP password would be sent in clear: set starttls: true",
        ),
        (
            {
                "receivers": [
                    {
                        "name": "p",
                        "pagerduty": {"url": "http://events.pagerduty.com/v2/enqueue", "routing_key_env": "HOME"},
                    }
                ]
            },
            "routing key would be sent in clear",
        ),
        ({"receivers": [{"name": "s", "slack": {"url": "http://hooks.slack.com/services/T/B/x"}}]}, "in clear"),
        ({"receivers": [{"name": "w", "webhook": {"url": "http://ops:pw@hooks.bank.example/x"}}]}, "user and password"),
        ({"retry": {"max_attempts": 0}}, ">= 1"),
        ({"retry": {"max_attempts": 10**23}}, "<= 100"),
        ({"retry": {"base_delay": "10m", "max_delay": "1m"}}, "base_delay must not be longer than max_delay"),
    ],
)
def test_bad_configs_fail_at_start_naming_the_place(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config({**CONFIG, **change})


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST.", "::1", "::ffff:127.0.0.1"])
def test_credentials_may_go_unencrypted_only_to_this_host(host: str) -> None:
    url_host = f"[{host}]" if ":" in host else host
    email_doc = {"host": host, "to": ["a@b"], "sender": "s@b", "username": "u", "password_env": "HOME"}
    pagerduty = {"url": f"http://{url_host}:8125/v2/enqueue", "routing_key_env": "HOME"}
    config = build_config(
        {
            "receivers": [
                {"name": "relay", "email": email_doc},
                {"name": "pd", "pagerduty": pagerduty},
                {"name": "sl", "slack": {"url": f"http://{url_host}:8126/hook"}},
            ]
        }
    )
    assert set(config.receivers) >= {"relay", "pd", "sl"}
    with_tls = {**email_doc, "host": "smtp.bank.example", "starttls": True}
    assert "m" in build_config({"receivers": [{"name": "m", "email": with_tls}]}).receivers


def test_an_email_address_may_carry_a_display_name() -> None:
    email = {"host": "h", "to": ["AML desk <aml@bank.example>"], "sender": "Ringfence Alerts <rf@bank.example>"}
    config = build_config({**CONFIG, "receivers": [{"name": "m", "email": email}], "route": {"receiver": "m"}})
    assert config.receivers["m"].options.sender == "Ringfence Alerts <rf@bank.example>"


def test_the_default_config_keeps_alerts_on_the_dashboard() -> None:
    config = build_config({})
    assert [r.receiver for r in config.route.match(LABELS)] == ["dashboard"]


EVIL = "(a|a)*b"  # exponential on a backtracking engine: each extra "a" doubles the time


@pytest.mark.parametrize("op", ["=~", "!~"])
@pytest.mark.serial  # < 1 s
def test_a_catastrophic_pattern_runs_in_linear_time_over_a_long_label(op: str) -> None:
    matcher = Matcher.parse(f'customer_id{op}"{EVIL}"')
    started = time.monotonic()
    # the short one first: before RE2 it alone took tens of seconds, the long ones for ever
    for value, found in [("a" * 26 + "c", False), ("a" * 50_000, False), ("a" * 50_000 + "b", True)]:
        assert matcher.matches({"customer_id": value}) is (found if op == "=~" else not found)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(?=a)a", "invalid perl operator"),  # lookahead
        (r"(a)\\1", "invalid escape sequence"),  # backreference
        ("(x{100}){100}", "invalid repetition size"),  # a program too large
        ("(", "missing"),
    ],
)
def test_patterns_re2_cannot_run_are_refused_naming_the_matcher(pattern: str, reason: str) -> None:
    text = f'customer_id=~"{pattern}"'
    with pytest.raises(MatcherError, match=rf"invalid regex in .*customer_id=~.*{reason}.*RE2 syntax"):
        Matcher.parse(text)


def test_patterns_and_matchers_are_bounded_in_length() -> None:
    with pytest.raises(MatcherError, match="longer than 512"):
        Matcher.parse("a=~" + "x" * 513)
    with pytest.raises(MatcherError, match="invalid matcher"):
        Matcher.parse("a=" + " " * 100_000 + "b")


def test_a_stored_matcher_re2_refuses_mutes_nothing_instead_of_failing_the_load() -> None:
    for op in ("=~", "!~"):
        (matcher,) = parse_stored_matchers([f'customer_id{op}"(?=c)cus_1"'])
        assert matcher.matches({"customer_id": "cus_1"}) is False
        assert matcher.matches({"customer_id": "other"}) is False


def test_quoted_values_keep_unicode_and_regex_escapes_and_print_back() -> None:
    assert Matcher.parse('merchant="Café 日本"').matches({"merchant": "Café 日本"})
    digits = Matcher.parse(r'customer_id=~"cus_\d+"')  # no "invalid escape" warning (an error in tests)
    assert digits.matches({"customer_id": "cus_42"})
    assert not digits.matches({"customer_id": "cus_x"})
    quoted = Matcher.parse(r'title="say \"hi\" \\ bye"')
    assert quoted.value == 'say "hi" \\ bye'
    for matcher in (digits, quoted):
        assert Matcher.parse(str(matcher)) == matcher


@pytest.mark.serial  # a match < 1 s
def test_config_matchers_use_re2_too() -> None:
    routes = {"route": {"receiver": "oncall", "routes": [{"matchers": ['customer_id=~"(a)\\\\1"']}]}}
    with pytest.raises(ConfigError, match=r"route.routes\[0\]: invalid regex"):
        build_config({**CONFIG, **routes})
    inhibit = {"inhibit_rules": [{"source_matchers": ["a=~(?!x)"], "target_matchers": ["b=c"]}]}
    with pytest.raises(ConfigError, match=r"inhibit_rules\[0\]: invalid regex"):
        build_config({**CONFIG, **inhibit})
    evil = {"route": {"receiver": "oncall", "routes": [{"matchers": [f"customer_id=~{EVIL}"], "receiver": "bank"}]}}
    config = build_config({**CONFIG, **evil})
    started = time.monotonic()
    assert [r.receiver for r in config.route.match({"customer_id": "a" * 50_000})] == ["oncall"]
    assert time.monotonic() - started < 1.0
