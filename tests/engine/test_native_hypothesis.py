"""The compiled core against the reference engine on generated packs and events (issue 17's
differential test, its Hypothesis half; the simulator half is test_native_differential.py).

Packs hold features of every aggregate, windowed and lifetime, with ``where`` and ``of``
expressions; robust z-scores; rules over the whole expression language; sequences, absences
and heartbeats. Events are of built-in types and a custom one, with text, whole and decimal
numbers, booleans, nulls, missing fields and money as decimal strings, out of order and late,
on two partitions. A JSON object or array is never a key or a template's value: the core
renders those as JSON, the reference as Python's repr (a documented difference); objects and
arrays, nested, are compared with each other and looked for in each other.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import msgspec
import pytest
import yaml
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from ringfence.bench.differential import Factory
from ringfence.clock import iso
from ringfence.engine.engine import Engine
from ringfence.engine.pack import RulePack, load_pack
from ringfence.engine.rules import AlertSignal
from ringfence.errors import RulePackError
from ringfence.events.decode import validate_event
from ringfence.events.model import Event
from tests.helpers.differential import every_state_row, first_mismatch, native_candidate

CUSTOM = "acme.ping"
NUMBER, STRING, BOOL, ANY = "number", "string", "bool", "any"
COMPOUND = "compound"  # nested objects and arrays: only compared (never a key, a text or a number)
# the data fields of each type the generated packs use, by kind (a custom type's are free-form)
TYPES: dict[str, dict[str, list[str]]] = {
    "card.authorization": {
        NUMBER: ["data.amount", "data.geo.lat", "data.geo.lon"],
        STRING: ["data.card_id", "data.currency", "data.merchant.country", "data.merchant.mcc", "data.channel"],
        BOOL: ["data.approved"],
    },
    "transfer.initiated": {NUMBER: ["data.amount"], STRING: ["data.currency", "data.payee_id", "data.payee_country"]},
    "login.succeeded": {
        NUMBER: ["data.geo.lat", "data.geo.lon"],
        STRING: ["data.device_id", "data.ip", "data.geo.country", "data.method"],
    },
    "api.request": {NUMBER: ["data.status", "data.latency_ms"], STRING: ["data.service", "data.endpoint"]},
    "balance.updated": {NUMBER: ["data.balance"], STRING: ["data.currency"]},
    CUSTOM: {
        NUMBER: ["data.n", "data.amount"],
        STRING: ["data.s", "data.currency"],
        BOOL: ["data.flag"],
        ANY: ["data.v", "data.o.x"],
        COMPOUND: ["data.c", "data.d"],
    },
}
ENVELOPE = {NUMBER: ["occurred_at"], STRING: ["customer_id", "source", "type", "event_id", "account_id"]}
KEYS: list[str | list[str]] = [
    "customer_id",
    "source",
    "global",
    ["customer_id", "data.currency"],
    "data.card_id",
    "data.s",
    "data.v",
    "data.geo.country",
    "data.service",
    "type",
]
AGGS = [
    "count", "sum", "avg", "min", "max", "distinct_count", "last", "first", "time_since", "stats", "ewma", "quantile",
]  # fmt: skip
NUMERIC_OF = {"sum", "avg", "min", "max", "stats", "ewma", "quantile"}
WINDOWS = ["10s", "1m", "5m", "1h"]
LISTS = {"hot": ["FR", "GB", "tok_a", "1", "x", "s1"], "cold": []}
STRING_LITERALS = ["'FR'", "'EUR'", "'x'", "''", "'tok_a'", "'1'", "'s1'", "'/a'", "'SS'", "'é'"]
NUMBER_LITERALS = ["0", "1", "2", "3", "10", "100", "2.5", "0.1", "-1", "-7", "0.125", "2.675", "1e3", "4099"]
# whole numbers in events and literals stay within 2**15, so a generated product (of at most four
# of them) stays within 64 bits: past them a kept value is a float in both engines
# (test_native_edges.py::test_no_number_in_an_event_makes_a_state_the_checkpoint_cannot_write)
INTS = st.integers(-(2**15), 2**15)
TEXTS = ["x", "FR", "s1", "tok_a", "é", "ß", "İ", "😀", 'a"b', "a\\b", "", " x "]
T0 = 1_800_000_000.0


@dataclass
class Scope:
    """What a generated expression may read, by kind."""

    fields: dict[str, list[str]]
    features: dict[str, list[str]] = field(default_factory=dict)


def fields_for(on: list[str] | None) -> dict[str, list[str]]:
    types = on if on is not None else [t for t in TYPES if t != CUSTOM]  # no 'on': every built-in type
    out: dict[str, list[str]] = {kind: list(paths) for kind, paths in ENVELOPE.items()}
    for t in types:
        for kind, paths in TYPES[t].items():
            out.setdefault(kind, []).extend(p for p in paths if p not in out.get(kind, []))
    return out


Draw = Callable[[st.SearchStrategy[Any]], Any]


def expression(draw: Draw, kind: str, scope: Scope, depth: int = 2) -> str:
    """A well-typed expression of ``kind`` (the loader still refuses a few; those are skipped)."""
    pool = {k: list(v) for k, v in scope.fields.items()}
    for k, names in scope.features.items():
        pool.setdefault(k, []).extend(names)
    anys = pool.get(ANY, [])  # texts too where a number is wanted: a numeric aggregate skips them
    leaf = depth <= 0 or draw(st.integers(0, 2)) == 0
    if kind == NUMBER:
        if leaf:
            return str(draw(st.sampled_from(pool.get(NUMBER, []) + anys + NUMBER_LITERALS)))

        def sub(k: str = NUMBER) -> str:
            return expression(draw, k, scope, depth - 1)

        form = draw(st.integers(0, 9))
        if form == 0:
            return f"({sub()} {draw(st.sampled_from(['+', '-', '*', '/', '%']))} {sub()})"
        if form == 1:
            return f"-{sub()}"
        if form == 2:
            return f"{draw(st.sampled_from(['abs', 'round']))}({sub()})"
        if form == 3:
            return f"round({sub()}, {draw(st.integers(0, 3))})"
        if form == 4:
            return f"{draw(st.sampled_from(['min', 'max', 'coalesce']))}({sub()}, {sub()})"
        if form == 5:
            return f"len({sub(STRING)})"
        if form == 6:
            return f"distance_km({sub()}, {sub()}, {sub()}, {sub()})"
        if form == 7:
            return f"hours_between({sub()}, {sub()})"
        if form == 8:
            return f"({sub()} if {sub(BOOL)} else {sub()})"
        return str(draw(st.sampled_from(pool.get(NUMBER, []) + NUMBER_LITERALS)))
    if kind == STRING:
        if leaf:
            return str(draw(st.sampled_from(pool.get(STRING, []) + anys + STRING_LITERALS)))

        def sub(k: str = STRING) -> str:
            return expression(draw, k, scope, depth - 1)

        form = draw(st.integers(0, 3))
        if form == 0:
            return f"{draw(st.sampled_from(['lower', 'upper']))}({sub()})"
        if form == 1:
            return f"coalesce({sub()}, {draw(st.sampled_from(STRING_LITERALS))})"
        if form == 2:
            return f"({sub()} + {sub()})"
        return f"({sub()} if {sub(BOOL)} else {sub()})"
    # a condition
    if leaf:
        return str(draw(st.sampled_from([*pool.get(BOOL, []), *pool.get(ANY, []), "true", "false"])))
    num, text, cond = (partial(expression, draw, k, scope, depth - 1) for k in (NUMBER, STRING, BOOL))
    form = draw(st.integers(0, 12))
    cmp = draw(st.sampled_from(["<", "<=", ">", ">=", "==", "!="]))
    if form in (0, 1):
        return f"{num()} {cmp} {num()}"
    if form == 2:
        return f"{num()} < {num()} <= {num()}"
    if form == 3:
        return f"{text()} {cmp} {text()}"
    if form == 4:
        anything = draw(st.sampled_from([*pool.get(NUMBER, []), *pool.get(STRING, []), *pool.get(ANY, [])]))
        return f"{anything} {draw(st.sampled_from(['==', '!=']))} null"
    if form == 5:
        negation = draw(st.sampled_from(["in", "not in"]))
        container = draw(st.sampled_from(["lists.hot", "lists.cold", "['FR', 'x', '1']", "text"]))
        return f"{text()} {negation} {text() if container == 'text' else container}"
    if form == 6:
        return f"{num()} in [1, 2.5, 3, 100]"
    if form == 7:  # truthiness of every kind
        return f"not {draw(st.sampled_from([cond, num, text]))()}"
    if form == 8:
        return f"({cond()} {draw(st.sampled_from(['and', 'or']))} {cond()})"
    if form == 9:
        return f"startswith({text()}, {text()})"
    if form == 11 and pool.get(COMPOUND):  # objects and arrays against each other, at any depth
        left, right = (draw(st.sampled_from([*pool[COMPOUND], "[1, 'x']"])) for _ in range(2))
        return f"{left} {draw(st.sampled_from(['==', '!=', '<', '>=', 'in', 'not in']))} {right}"
    if form == 10 and pool.get(ANY):  # free-form values against every kind of literal
        literal = draw(st.sampled_from([*STRING_LITERALS, *NUMBER_LITERALS, "true", "lists.hot", "[1, 'x']"]))
        op = "in" if literal.startswith(("lists", "[")) else cmp
        return f"{draw(st.sampled_from(pool[ANY]))} {op} {literal}"
    return cond()


@st.composite
def pack_docs(draw: Draw) -> dict[str, Any]:
    """A rule pack as a document: features, scores, rules and patterns over the types above."""
    doc: dict[str, Any] = {"version": "gen-1", "types": [CUSTOM], "lists": copy.deepcopy(LISTS)}
    type_sets = st.one_of(st.none(), st.lists(st.sampled_from(sorted(TYPES)), min_size=1, max_size=2, unique=True))
    kinds: dict[str, list[str]] = {}  # feature and score names by kind, for rules
    features = []
    for i in range(draw(st.integers(1, 5))):
        agg = draw(st.sampled_from(AGGS))
        on = draw(type_sets)
        scope = Scope(fields_for(on))
        f: dict[str, Any] = {"name": f"f{i}", "agg": agg, "by": draw(st.sampled_from(KEYS))}
        if on is not None:
            f["on"] = on
        if agg == "quantile" or (agg != "ewma" and draw(st.booleans())):
            f["window"] = draw(st.sampled_from(WINDOWS))
        kind = NUMBER
        if agg in NUMERIC_OF:
            f["of"] = expression(draw, NUMBER, scope)
        elif agg in ("last", "first", "distinct_count"):
            of_kind = draw(st.sampled_from([NUMBER, STRING, *([ANY] if scope.fields.get(ANY) else [])]))
            f["of"] = expression(draw, STRING if of_kind == ANY else of_kind, scope, 1)
            if of_kind == ANY:
                f["of"] = draw(st.sampled_from(scope.fields[ANY]))
            kind = of_kind if agg != "distinct_count" else NUMBER
        if draw(st.booleans()):
            f["where"] = expression(draw, BOOL, Scope(fields_for(on)))
        if agg == "ewma":
            f["alpha"] = draw(st.sampled_from([0.1, 0.5, 1.0]))
        if agg == "quantile":
            f["q"] = draw(st.sampled_from([0.5, 0.9, 0.99]))
        if agg == "stats":
            kinds.setdefault(NUMBER, []).extend(f"f{i}.{part}" for part in ("mean", "std", "count"))
        else:
            kinds.setdefault(kind, []).append(f"f{i}")
        features.append(f)
    doc["features"] = features
    anomalies = []
    for i in range(draw(st.integers(0, 2))):
        on = draw(type_sets)
        a: dict[str, Any] = {
            "name": f"z{i}",
            "kind": "robust_zscore",
            "by": draw(st.sampled_from(KEYS)),
            "of": expression(draw, NUMBER, Scope(fields_for(on), kinds), 1),
            "min_samples": draw(st.integers(1, 4)),
            "samples": draw(st.integers(3, 8)),
        }
        if on is not None:
            a["on"] = on
        if draw(st.booleans()):
            a["window"] = draw(st.sampled_from(WINDOWS))
        if draw(st.booleans()):
            a["where"] = expression(draw, BOOL, Scope(fields_for(on)), 1)
        anomalies.append(a)
    kinds.setdefault(NUMBER, []).extend(a["name"] for a in anomalies)
    doc["anomaly"] = anomalies
    doc["rules"] = []
    for i in range(draw(st.integers(1, 4))):
        on = draw(st.lists(st.sampled_from(sorted(TYPES)), min_size=1, max_size=2, unique=True))
        scope = Scope(fields_for(on), kinds)
        rule = {"id": f"r{i}", "on": on, "when": expression(draw, BOOL, scope, 3), **output(draw, scope)}
        doc["rules"].append(rule)
    doc["patterns"] = [pattern(draw, i, kinds) for i in range(draw(st.integers(0, 2)))]
    customers_told_their_own(doc)
    return doc


def customers_told_their_own(doc: dict[str, Any]) -> None:
    """A detection told to the customer is keyed by, and quotes, only what is the customer's
    (packs refuse others): any other drawn so is made the fraud desk's."""

    def own(by: str | list[str]) -> bool:
        return "customer_id" in ([by] if isinstance(by, str) else by)

    def names(*texts: str) -> set[str]:
        return {m for text in texts for m in re.findall(r"\b([a-z]\w*)", text)}

    shared = {f["name"] for f in doc["features"] if not own(f["by"])}
    shared |= {a["name"] for a in doc["anomaly"] if not own(a["by"]) or names(str(a["of"])) & shared}
    for d in (*doc["rules"], *doc["patterns"]):
        texts = [str(d.get(k, "")) for k in ("title", "summary", "dedup")] + list(d.get("labels", {}).values())
        quoted = names(*texts)
        if d["audience"] == "customer" and (("by" in d and not own(d["by"])) or quoted & shared):
            d["audience"] = "fraud"


def output(draw: Draw, scope: Scope) -> dict[str, Any]:
    """Severity, audience, mode and templates whose placeholders are paths and feature names
    (never an object: see the module docstring)."""
    names = [
        n for kind in (NUMBER, STRING, BOOL, ANY) for n in scope.fields.get(kind, []) + scope.features.get(kind, [])
    ]
    place = st.sampled_from(names).map(lambda n: "{" + n + "}")
    text = st.lists(st.one_of(place, st.sampled_from(["x", " ", ": ", "-"])), min_size=1, max_size=5).map("".join)
    out: dict[str, Any] = {
        "severity": draw(st.sampled_from(["info", "low", "medium", "high", "critical"])),
        "audience": draw(st.sampled_from(["fraud", "aml", "security", "ops", "customer"])),
        "title": draw(text),
        "mode": draw(st.sampled_from(["live", "shadow"])),
    }
    for optional in ("summary", "dedup"):
        if draw(st.booleans()):
            out[optional] = draw(text)
    if draw(st.booleans()):
        out["labels"] = {"a": draw(text), "b": draw(text)}
    return out


def step_fields(name: str, on: list[str]) -> dict[str, list[str]]:
    return {kind: [f"{name}.{p}" for p in paths] for kind, paths in fields_for(on).items()}


def with_steps(scope: Scope, *steps: dict[str, list[str]]) -> Scope:
    merged = {kind: list(paths) for kind, paths in scope.fields.items()}
    for fields in steps:
        for kind, paths in fields.items():
            merged.setdefault(kind, []).extend(paths)
    return Scope(merged, scope.features)


def pattern(draw: Draw, i: int, kinds: dict[str, list[str]]) -> dict[str, Any]:
    """A sequence of 2-3 steps, an absence after an event, or a heartbeat."""
    kind = draw(st.sampled_from(["sequence", "absence", "heartbeat"]))
    p: dict[str, Any] = {
        "id": f"p{i}",
        "kind": "sequence" if kind == "sequence" else "absence",
        "by": draw(st.sampled_from(KEYS)),
        "within": draw(st.sampled_from(["5s", "30s", "2m", "10m"])),
    }
    types = st.lists(st.sampled_from(sorted(TYPES)), min_size=1, max_size=2, unique=True)
    captured: list[dict[str, list[str]]] = []
    if kind == "sequence":
        steps = []
        for j in range(draw(st.integers(2, 3))):
            on = draw(types)
            step: dict[str, Any] = {"name": f"s{j}", "on": on}
            if draw(st.booleans()):
                step["when"] = expression(draw, BOOL, with_steps(Scope(fields_for(on), kinds), *captured), 2)
            steps.append(step)
            captured.append(step_fields(f"s{j}", on))
        p["steps"] = steps
        final = steps[-1]["on"]
    else:
        if kind == "absence":
            on = draw(types)
            p["after"] = {"name": "first", "on": on}
            if draw(st.booleans()):
                p["after"]["when"] = expression(draw, BOOL, Scope(fields_for(on), kinds), 1)
            captured.append(step_fields("first", on))
            final = on
        expect_on = draw(types)
        p["expect"] = {"on": expect_on}
        if draw(st.booleans()):
            p["expect"]["when"] = expression(draw, BOOL, with_steps(Scope(fields_for(expect_on), kinds), *captured))
        if kind == "heartbeat":
            final = expect_on
    p.update(output(draw, with_steps(Scope(fields_for(final), kinds), *captured)))
    return p


# -- events ----------------------------------------------------------------------------------------


def money(draw: Draw, currency: str, signed: bool = False) -> Any:
    minor = draw(st.integers(-500_000 if signed else 0, 2_000_000))
    digits = {"JPY": 0, "KWD": 3}.get(currency, 2)
    text = f"{minor / 10**digits:.{digits}f}"
    if draw(st.booleans()):
        return text  # a decimal string, as most producers send money
    return minor if digits == 0 else float(text)


def geo(draw: Draw) -> dict[str, Any]:
    out: dict[str, Any] = {
        "lat": draw(st.one_of(st.sampled_from([48.85, 51.5, -33.87]), st.floats(-90, 90))),
        "lon": draw(st.one_of(st.sampled_from([2.35, -0.12, 151.21]), st.floats(-180, 180))),
    }
    if draw(st.booleans()):
        out["country"] = draw(st.sampled_from(["FR", "GB", "AU"]))
    return out


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    INTS,
    st.sampled_from([0, 1, 2, 3, 100]),
    st.floats(-1e9, 1e9, allow_nan=False),
    st.sampled_from([1.0, 0.5, 2.5, 1e-7, 1e16, 123456789.125, -0.0]),
    st.text(alphabet="abxFR1 éß😀", max_size=4),
    st.sampled_from(["x", "FR", "1", "1.0", "True", "s1", "0", ""]),
)
COMPOUNDS = st.recursive(
    st.one_of(st.none(), st.sampled_from([0, 1, 1.0, "x", True])),
    lambda inner: st.one_of(
        st.lists(inner, max_size=2), st.dictionaries(st.sampled_from(["k", "j"]), inner, max_size=2)
    ),
    max_leaves=4,
)


def data_of(draw: Draw, type_: str) -> dict[str, Any]:
    def pick(*values: Any) -> Any:
        return draw(st.sampled_from(values))

    def maybe() -> bool:
        return bool(draw(st.booleans()))

    if type_ == "card.authorization":
        currency = pick("EUR", "JPY", "USD")
        data: dict[str, Any] = {
            "card_id": pick("tok_a", "tok_b"),
            "amount": money(draw, currency),
            "currency": currency,
            "merchant": {"id": pick("m1", "m2"), "mcc": pick("5411", "7995"), "country": pick("FR", "GB", "KP")},
            "channel": pick("pos", "ecom", "atm", "contactless"),
            "approved": maybe(),
        }
        if maybe():
            data["geo"] = geo(draw)
        if maybe():
            data["decline_reason"] = pick("funds", "x")
        return data
    if type_ == "transfer.initiated":
        currency = pick("EUR", "KWD")
        data = {"amount": money(draw, currency), "currency": currency, "payee_id": pick("p1", "p2")}
        if maybe():
            data["payee_country"] = pick("FR", "KP")
        return data
    if type_ == "login.succeeded":
        data = {"device_id": pick("d1", "d2"), "ip": pick("10.0.0.1", "203.0.113.7")}
        if maybe():
            data["geo"] = geo(draw)
        if maybe():
            data["method"] = pick("password", "x")
        return data
    if type_ == "api.request":
        return {
            "service": pick("s1", "s2"),
            "endpoint": pick("/a", "/b"),
            "status": pick(200, 404, 503),
            "latency_ms": draw(st.one_of(st.sampled_from([30, 1000.5]), st.floats(0, 5000))),
        }
    if type_ == "balance.updated":
        return {"balance": money(draw, "EUR", signed=True), "currency": "EUR"}
    data = {}
    for name, values in (
        ("n", st.one_of(st.none(), st.booleans(), INTS, st.floats(-1e9, 1e9))),
        ("s", st.one_of(st.none(), st.sampled_from(TEXTS))),
        ("flag", st.one_of(st.none(), st.booleans())),
        ("v", SCALARS),
        ("o", st.fixed_dictionaries({}, optional={"x": SCALARS, "y": st.just({"z": [1, "a", None]})})),
        ("arr", st.lists(SCALARS, max_size=3)),  # carried into evidence (related events), never read
        ("c", COMPOUNDS),
        ("d", COMPOUNDS),
    ):
        if maybe():
            data[name] = draw(values)
    if maybe():
        data["currency"] = "EUR"
        data["amount"] = money(draw, "EUR")
    return data


@st.composite
def event_lists(draw: Draw, types: list[str]) -> list[tuple[Event, int, float, bool]]:
    """Events with their partition, ingested-at time and whether the candidate reads their JSON:
    mostly in time order, some out of order or late (behind the 5 s allowed lateness)."""
    out = []
    t = T0
    for i in range(draw(st.integers(1, 30))):
        t += draw(st.sampled_from([0.0, 0.25, 1.0, 3.0, 10.0, 45.0, 200.0, -1.0, -8.0, -30.0]))
        type_ = draw(st.sampled_from(types))
        raw: dict[str, Any] = {
            "event_id": f"e{i}",
            "type": type_,
            "occurred_at": iso(t),
            "source": draw(st.sampled_from(["web", "partner-01", "mobile-app"])),
            "data": data_of(draw, type_),
        }
        if type_ != "api.request" or draw(st.booleans()):
            raw["customer_id"] = draw(st.sampled_from(["c1", "c2", "c3"]))
        if draw(st.booleans()):
            raw["account_id"] = draw(st.sampled_from(["a1", "a2"]))
        event = validate_event(msgspec.json.encode(raw), now=t, custom_types=[CUSTOM])
        out.append((event, draw(st.integers(0, 1)), t + draw(st.sampled_from([0.0, 0.125, 2.0])), draw(st.booleans())))
    return out


class _Dumper(yaml.SafeDumper):
    """Writes a value used twice twice: packs refuse YAML anchors and aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def loaded(doc: dict[str, Any]) -> RulePack | None:
    try:
        return load_pack(yaml.dump(doc, Dumper=_Dumper, sort_keys=False))
    except RulePackError:
        return None


def changed(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with a new version and its first feature's definition changed (others kept)."""
    variant = copy.deepcopy(doc)
    variant["version"] = "gen-2"
    first = variant["features"][0]
    if first["agg"] == "ewma":
        first["alpha"] = 0.25 if first.get("alpha") != 0.25 else 0.75
    else:
        first["window"] = "2m" if first.get("window") != "2m" else "3m"
    return variant


@pytest.fixture(scope="module")
def candidate() -> Factory:
    return native_candidate()


def example(data: st.DataObject) -> tuple[RulePack, dict[str, Any], list[tuple[Event, int, float, bool]]]:
    doc = data.draw(pack_docs(), label="pack")
    pack = loaded(doc)
    assume(pack is not None)
    assert pack is not None
    return pack, doc, data.draw(event_lists(sorted(mentioned(doc) | {CUSTOM, "api.request"})), label="events")


def mentioned(value: Any) -> set[str]:
    """The event types named in a pack document's ``on`` lists, wherever they are."""
    if isinstance(value, list):
        return set().union(*map(mentioned, value)) if value else set()
    if not isinstance(value, dict):
        return set()
    named = set(value.get("on") or [])
    return named.union(*(mentioned(v) for k, v in value.items() if k != "on"))


SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # no slow "explain" of a failure
)


@settings(SETTINGS, max_examples=120)
@given(st.data())
def test_the_core_matches_the_reference_on_generated_packs_and_events(candidate: Factory, data: st.DataObject) -> None:
    pack, doc, events = example(data)
    reload = loaded(changed(doc)) if data.draw(st.booleans(), label="reload") else None
    restore_at = data.draw(st.one_of(st.none(), st.integers(0, len(events))), label="restore before event")
    last = max(e.occurred_at for e, *_ in events)
    marks = [None, last + 20.0, last + 700.0]
    mismatch = first_mismatch(pack, events, candidate, marks=marks, reload=reload, restore_at=restore_at)
    assert mismatch is None, f"{mismatch}\n\npack:\n{pack.text}"


class ShoutsTitles(Engine):
    def process(self, event: Event, offset: int, partition: int, ingested_at: float) -> list[AlertSignal]:
        signals = super().process(event, offset, partition, ingested_at)
        return [msgspec.structs.replace(s, title=s.title.upper()) for s in signals]


@settings(SETTINGS, max_examples=25)
@given(st.data())
def test_the_generated_comparison_catches_a_difference(data: st.DataObject) -> None:
    pack, _, events = example(data)
    reference = Engine(pack)
    titles = [s.title for e, p, at, _ in events for s in reference.process(e, 1, p, at)]
    assume(any(t != t.upper() for t in titles))
    mismatch = first_mismatch(pack, events, ShoutsTitles)
    assert mismatch is not None
    assert mismatch.step in ("process", "process_raw") or mismatch.step.startswith("process_raw_many of events #")
    assert any(".title:" in d for d in mismatch.diffs)


def _run(engine: Engine, events: list[tuple[Event, int, float, bool]], first: int, marks: list[float]) -> list[Any]:
    """What ``events`` (offsets from ``first``) then the timers at ``marks`` give: each event's
    signals, or the name of what it raised."""
    out: list[Any] = []
    for i, (event, partition, ingested_at, _) in enumerate(events):
        try:
            out.append(engine.process(event, first + i, partition, ingested_at))
        except Exception as error:
            out.append(type(error).__name__)
    out += [engine.advance(mark) for mark in marks]
    return out


@settings(SETTINGS, max_examples=80)
@given(st.data())
def test_an_undo_puts_back_what_events_changed_and_the_core_runs_on_as_if_they_never_ran(
    candidate: Factory, data: st.DataObject
) -> None:
    # the embedded processor undoes a batch a poison event failed instead of reloading the
    # whole state: the states, event times and timers at the last take, exactly
    pack, _, events = example(data)
    cut = data.draw(st.integers(0, len(events)), label="taken after event")
    undone = data.draw(st.integers(cut, len(events)), label="undone after event")
    last = max(e.occurred_at for e, *_ in events)
    fired_then = data.draw(st.sampled_from([[], [last + 20.0], [last + 700.0]]), label="timers fired, then undone")
    marks = [last + 20.0, last + 700.0]
    straight, core = candidate(pack, 5.0), candidate(pack, 5.0)
    core.undo_point()  # from here on it keeps copies
    for engine in (straight, core):
        _run(engine, events[:cut], 1, [])
    expected = _run(straight, events[cut:], cut + 1, marks)
    core.take_changes()
    core.changes_committed()  # the point moves to the take
    at_take = (every_state_row(core), core.max_event_time, core.late_events)
    _run(core, events[cut:undone], cut + 1, fired_then)
    assert core.undo()
    assert (every_state_row(core), core.max_event_time, core.late_events) == at_take
    assert _run(core, events[cut:], cut + 1, marks) == expected
    assert every_state_row(core) == every_state_row(straight)
