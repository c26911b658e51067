"""Rule packs: the YAML document analysts write, loaded and checked as a whole.

A pack that fails any check never replaces the running one; the error names the
section, the rule, feature or pattern, and the position in the expression.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import yaml

from ringfence import safe_yaml
from ringfence.engine.anomaly import AnomalyKind, AnomalySpec, require_river
from ringfence.engine.durations import parse_duration
from ringfence.engine.expressions import ENVELOPE_FIELDS, STATS_FIELDS, Expression, Scope, compile_expression
from ringfence.engine.features import (
    BUCKETS,
    LIFETIME_ONLY,
    MAX_DISTINCT,
    NEEDS_OF,
    QUANTILE_SAMPLES,
    WINDOW_ONLY,
    Aggregation,
    FeatureSpec,
)
from ringfence.engine.keys import ESCAPE, SEPARATOR
from ringfence.engine.patterns import MAX_PARTIALS, PatternKind, PatternSpec, StepSpec
from ringfence.engine.rules import (
    AUDIENCES,
    SEVERITIES,
    Audience,
    Mode,
    Output,
    RuleSpec,
    Severity,
    Template,
    qualified_dedup,
)
from ringfence.engine.schema import ANY, NUMBER, FieldType, data_schema
from ringfence.errors import ExpressionError, FieldError, RulePackError
from ringfence.events.sensitive import PAN_MESSAGE, looks_like_pan, redact, scan
from ringfence.events.types import BUILTIN_TYPES
from ringfence.private_files import read_input

MAX_PACK_BYTES = 1024 * 1024
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}")  # a label people read: no invisible or look-alike text
# what one pack may ask of every event and of every key, whatever its YAML's size allows
MAX_STATEFUL_DEFINITIONS = 1_000  # features, anomaly scores and patterns: each keeps state per key
MAX_RULES = 2_000
MAX_PACK_NODES = 50_000  # the parts of all its expressions: an event runs at most these
MAX_KEY_VALUES = 100_000  # the values one entity's states may hold at their bounds, all definitions
DEFAULT_STATE_TTL = "400d"
MIN_WINDOW_S = 1.0  # a feature's or a score's window: 60 buckets of a sixtieth of it
_IDENT = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_RESERVED = ENVELOPE_FIELDS | {"data", "lists", "true", "false", "null"}
_E = TypeVar("_E", bound=StrEnum)


class _PackLoader(safe_yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false, so a key named ``on`` stays a string."""


_PackLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in safe_yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_PackLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class _Doc(msgspec.Struct, forbid_unknown_fields=True):
    pass


class FeatureDoc(_Doc):
    name: str
    agg: str
    by: str | list[str] = "customer_id"
    of: str | None = None
    window: str | None = None
    where: str | None = None
    on: list[str] | None = None
    alpha: float = 0.1
    q: float = 0.95


class AnomalyDoc(_Doc):
    name: str
    kind: str
    of: str | list[str]
    by: str | list[str] = "customer_id"
    where: str | None = None
    on: list[str] | None = None
    min_samples: int = 10
    samples: int = 32
    window: str | None = None


class OutputDoc(_Doc):
    id: str
    severity: str
    audience: str
    title: str
    description: str = ""
    summary: str = ""
    dedup: str = "{customer_id}"
    labels: dict[str, str] = {}
    mode: str = "live"
    auto_resolve: str | None = None


class RuleDoc(OutputDoc):
    on: list[str] = []
    when: str = ""


class StepDoc(_Doc):
    on: list[str]
    name: str | None = None
    when: str | None = None


class PatternDoc(OutputDoc):
    kind: str = "sequence"
    by: str | list[str] = "customer_id"
    within: str = ""
    steps: list[StepDoc] = []
    after: StepDoc | None = None
    expect: StepDoc | None = None


class PackDoc(_Doc):
    version: str
    description: str = ""
    state_ttl: str = DEFAULT_STATE_TTL
    types: list[str] = []
    lists: dict[str, list[str]] = {}
    features: list[FeatureDoc] = []
    anomaly: list[AnomalyDoc] = []
    rules: list[RuleDoc] = []
    patterns: list[PatternDoc] = []


@dataclass(frozen=True)
class RulePack:
    """A loaded, checked, compiled rule pack. ``digest`` identifies its exact text."""

    version: str
    digest: str
    description: str
    text: str
    custom_types: frozenset[str]
    lists: dict[str, frozenset[str]]
    features: tuple[FeatureSpec, ...]
    anomalies: tuple[AnomalySpec, ...]
    rules: tuple[RuleSpec, ...]
    patterns: tuple[PatternSpec, ...]

    def rule(self, rule_id: str) -> RuleSpec | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    @property
    def auto_resolve(self) -> dict[str, float]:
        """Quiet periods after which alerts of each detection resolve themselves."""
        outputs = [(r.id, r.output) for r in self.rules] + [(p.id, p.output) for p in self.patterns]
        return {i: o.auto_resolve for i, o in outputs if o.auto_resolve is not None}

    @property
    def detection_ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.rules) + tuple(p.id for p in self.patterns)


class _Loader:
    """Checks one pack document section by section, building the compiled specs."""

    def __init__(self, doc: PackDoc, *, budgets: bool = True) -> None:
        self.doc = doc
        self.budgets = budgets  # a pack read back from the store was held to them when it came in
        self.custom = frozenset(doc.types)
        self.lists = frozenset(doc.lists)
        self.feature_types: dict[str, FieldType] = {}
        self.shared: set[str] = set()  # features and scores keyed without the customer (others' values)
        self.names: set[str] = set()
        self.nodes = 0  # the parts of every expression so far (MAX_PACK_NODES)
        try:
            self.ttl = parse_duration(doc.state_ttl)
        except ValueError as exc:
            raise RulePackError(str(exc), "state_ttl") from None

    def types(self, names: list[str] | None, where: str) -> frozenset[str] | None:
        if names is None:
            return None
        if not names:
            raise RulePackError("'on' must name at least one event type", where)
        for name in names:
            if name not in BUILTIN_TYPES and name not in self.custom:
                raise RulePackError(f"unknown event type {name!r}", where)
        return frozenset(names)

    def scope(self, on: frozenset[str] | None, *, features: bool, steps: Mapping[str, Any] | None = None) -> Scope:
        fields = data_schema(on if on is not None else BUILTIN_TYPES)
        return Scope(fields, self.feature_types if features else {}, self.lists, steps or {})

    def expr(self, source: str, scope: Scope, where: str, *, condition: bool = False) -> Expression:
        try:
            compiled = compile_expression(source, scope, condition=condition, strict=self.budgets)
        except ExpressionError as exc:
            raise RulePackError(str(exc), where) from None
        self.nodes += compiled.nodes
        if self.budgets and self.nodes > MAX_PACK_NODES:
            raise RulePackError(f"the pack's expressions have more than {MAX_PACK_NODES:,} parts in all", where)
        return compiled

    def keys(self, by: str | list[str], where: str) -> tuple[tuple[str, ...], ...]:
        out = []
        for text in [by] if isinstance(by, str) else by:
            if text == "global":
                continue
            path = tuple(text.split("."))
            ok = (path[0] in ENVELOPE_FIELDS and len(path) == 1) or (path[0] == "data" and len(path) > 1)
            if not ok:
                raise RulePackError(f"'by' must be an envelope field, data.<field> or global, got {text!r}", where)
            if self.budgets and path in out:  # (a stored pack is read as it came)
                raise RulePackError(f"'by' names {text!r} twice", where)
            out.append(path)
        return tuple(out)

    def duration(self, text: str | None, where: str, what: str) -> float | None:
        if not text:
            return None
        try:
            seconds = parse_duration(text)
        except ValueError as exc:
            raise RulePackError(f"{what}: {exc}", where) from None
        # a window of a nanosecond numbered its buckets past 2**64: the reference engine's
        # checkpoint failed on every event, the compiled core's saturated (a hostile test); a
        # stored pack is read as it came, so a restart is never refused for it
        if what == "window" and self.budgets and seconds < MIN_WINDOW_S:
            raise RulePackError(f"window: {text!r} is under {MIN_WINDOW_S:.0f}s", where)
        return seconds

    def claim(self, name: str, where: str, kind: str) -> None:
        if not _IDENT.match(name) or name in _RESERVED:
            raise RulePackError(f"{kind} must be lower_snake_case and not reserved", where)
        if name in self.names:
            raise RulePackError(f"duplicate name {name!r}", where)
        self.names.add(name)

    @staticmethod
    def choice(kind: type[_E], value: str, message: str, where: str) -> _E:
        """``value`` as a member of ``kind``; RulePackError(``message``) if it is none of them."""
        try:
            return kind(value)
        except ValueError:
            raise RulePackError(message, where) from None

    def feature(self, i: int, f: FeatureDoc) -> FeatureSpec:
        where = f"features[{i}] ({f.name})"
        self.claim(f.name, where, "feature name")
        agg = self.choice(Aggregation, f.agg, f"unknown agg {f.agg!r}; one of {', '.join(sorted(Aggregation))}", where)
        if agg in NEEDS_OF and not f.of:
            raise RulePackError(f"agg {f.agg!r} needs 'of'", where)
        window = self.duration(f.window, where, "window")
        if agg in LIFETIME_ONLY and window is not None:
            raise RulePackError(f"agg {f.agg!r} is a lifetime aggregate; remove 'window'", where)
        if agg in WINDOW_ONLY and window is None:
            raise RulePackError(f"agg {f.agg!r} needs a 'window'", where)
        if not 0 < f.alpha <= 1 or not 0 < f.q < 1:
            raise RulePackError("alpha must be in (0, 1] and q in (0, 1)", where)
        on = self.types(f.on, where)
        scope = self.scope(on, features=False)
        of = self.expr(f.of, scope, where) if f.of else None
        any_value = (Aggregation.LAST, Aggregation.FIRST)
        if of is not None and agg not in (*any_value, Aggregation.DISTINCT_COUNT) and of.type not in (NUMBER, ANY):
            raise RulePackError(f"agg {f.agg!r} needs a number, but 'of' is a {of.type}", where)
        cond = self.expr(f.where, scope, where, condition=True) if f.where else None
        ftype: FieldType = NUMBER
        if agg in any_value:
            ftype = of.type if of is not None else ANY
        elif agg == Aggregation.STATS:
            ftype = STATS_FIELDS
        self.feature_types[f.name] = ftype
        by = self.keys(f.by, where)
        if ("customer_id",) not in by:
            self.shared.add(f.name)
        return FeatureSpec(f.name, by, agg, of, cond, on, window, f.alpha, f.q, self.ttl)

    def anomaly(self, i: int, a: AnomalyDoc) -> AnomalySpec:
        where = f"anomaly[{i}] ({a.name})"
        self.claim(a.name, where, "anomaly name")
        kind = self.choice(AnomalyKind, a.kind, "kind must be robust_zscore or half_space_trees", where)
        on = self.types(a.on, where)
        scope = self.scope(on, features=True)
        inputs = tuple(self.expr(src, scope, where) for src in ([a.of] if isinstance(a.of, str) else a.of))
        if kind == AnomalyKind.ROBUST_ZSCORE and len(inputs) != 1:
            raise RulePackError("robust_zscore scores one value: give one 'of'", where)
        by = self.keys(a.by, where)
        if ("customer_id",) not in by or any(e.features & self.shared for e in inputs):  # moves with others'
            self.shared.add(a.name)
        if kind == AnomalyKind.HALF_SPACE_TREES:
            if by:
                raise RulePackError("half_space_trees keeps one model: use by: global", where)
            require_river()  # fails now, naming the extra to install, if River is missing
        if not 1 <= a.min_samples <= 10_000 or not 3 <= a.samples <= 1_000:
            raise RulePackError("min_samples must be 1..10000 and samples 3..1000", where)
        cond = self.expr(a.where, scope, where, condition=True) if a.where else None
        self.feature_types[a.name] = NUMBER
        window = self.duration(a.window, where, "window") or self.ttl
        return AnomalySpec(a.name, kind, by, inputs, cond, on, a.min_samples, a.samples, window)

    def output(self, d: OutputDoc, scope: Scope, where: str) -> Output:
        severity = self.choice(Severity, d.severity, f"severity must be one of {', '.join(SEVERITIES)}", where)
        audience = self.choice(Audience, d.audience, f"audience must be one of {', '.join(AUDIENCES)}", where)
        mode = self.choice(Mode, d.mode, "mode must be live or shadow", where)
        auto_resolve = self.duration(d.auto_resolve, where, "auto_resolve")
        if self.budgets and (ESCAPE in d.dedup or SEPARATOR in d.dedup):  # (a stored pack is read as it came)
            raise RulePackError("dedup may not hold U+001E or U+001F: they part and escape a key's values", where)
        try:
            output = Output(
                severity,
                audience,
                Template.parse(d.title, scope),
                Template.parse(d.summary, scope),
                Template.parse_key(qualified_dedup(d.dedup, audience), scope),
                tuple((k, Template.parse(v, scope)) for k, v in sorted(d.labels.items())),
                mode,
                auto_resolve,
            )
        except (ExpressionError, ValueError) as exc:
            raise RulePackError(str(exc), where) from None
        if self.budgets and audience is Audience.CUSTOMER:  # (a stored pack is read as it came)
            self.told_only_their_own(output, where)
        return output

    def told_only_their_own(self, output: Output, where: str) -> None:
        """Refuse a customer's output quoting a feature or score keyed by what customers share, or
        a list (quoted whole: a watch list of other customers' identifiers, and a tip-off)."""
        templates = (output.title, output.summary, output.dedup, *(t for _, t in output.labels))
        quoted = sorted({f for t in templates for f in t.features} & self.shared)
        placeholders = {p.source.strip() for t in templates for p in t.parts if not isinstance(p, str)}
        quoted += sorted(p for p in placeholders if p.startswith("lists."))
        if quoted:
            raise RulePackError(
                f"a detection told to the customer quotes only what is its own: {', '.join(quoted)} "
                f"{'is' if len(quoted) == 1 else 'are'} keyed by what customers share (or a list), "
                "and would tell this one other customers' values",
                where,
            )

    def rule(self, i: int, r: RuleDoc) -> RuleSpec:
        where = f"rules[{i}] ({r.id})"
        self.claim(r.id, where, "rule id")
        on = self.types(r.on, where)
        assert on is not None
        if not r.when:
            raise RulePackError("'when' is required", where)
        scope = self.scope(on, features=True)
        when = self.expr(r.when, scope, where, condition=True)
        return RuleSpec(r.id, r.description, on, when, self.output(r, scope, where))

    def step(self, s: StepDoc, name: str, steps: dict[str, Any], where: str) -> StepSpec:
        on = self.types(s.on, where)
        assert on is not None
        scope = self.scope(on, features=True, steps=steps)
        when = self.expr(s.when, scope, where, condition=True) if s.when else None
        return StepSpec(name, on, when)

    def pattern(self, i: int, p: PatternDoc) -> PatternSpec:
        where = f"patterns[{i}] ({p.id})"
        self.claim(p.id, where, "pattern id")
        within = self.duration(p.within, where, "within")
        if within is None:
            raise RulePackError("'within' is required (e.g. 30m)", where)
        kind = self.choice(PatternKind, p.kind, "kind must be sequence or absence", where)
        captured: dict[str, Any] = {}
        steps: list[StepSpec] = []
        after = expect = None
        if kind == PatternKind.SEQUENCE:
            if len(p.steps) < 2 or p.after or p.expect:
                raise RulePackError("a sequence has two or more 'steps' (and no after/expect)", where)
            for j, s in enumerate(p.steps):
                name = s.name or f"step{j + 1}"
                if not _IDENT.match(name) or name in captured or name in self.names or name in _RESERVED:
                    raise RulePackError(f"step name {name!r} must be new and lower_snake_case", f"{where} step {j + 1}")
                steps.append(self.step(s, name, dict(captured), f"{where} step {j + 1}"))
                captured[name] = data_schema(steps[-1].on)
            final_on = steps[-1].on
        else:
            if p.steps or p.expect is None:
                raise RulePackError("an absence has 'expect' (and optionally 'after'), not 'steps'", where)
            if p.after is not None:
                after = self.step(p.after, p.after.name or "after", {}, f"{where} after")
                captured[after.name] = data_schema(after.on)
            expect = self.step(p.expect, p.expect.name or "expect", dict(captured), f"{where} expect")
            final_on = after.on if after is not None else expect.on
        scope = self.scope(final_on, features=True, steps=captured)
        by, output = self.keys(p.by, where), self.output(p, scope, where)
        # (a stored pack is read as it came, so a restart is never refused for it)
        if self.budgets and output.audience is Audience.CUSTOMER and ("customer_id",) not in by:
            raise RulePackError(
                "a pattern told to the customer is keyed by customer_id (by: customer_id, or a list "
                "holding it): keyed by anything else, its steps may be other customers' events, "
                "which its title and summary would tell this one",
                where,
            )
        return PatternSpec(p.id, kind, p.description, by, within, tuple(steps), after, expect, output)


PACK_PAN_MESSAGE = "looks like a card number (PAN): a rule pack must not hold one"
_COMMENT = re.compile(r"(?:^|\s)#(.*)$")  # may start inside a quoted scalar: that one is scanned too


def _refuse_sensitive(raw: Any, text: str) -> None:
    """Refuse a pack holding a card number, NUL or lone surrogate in any key or value, or a
    card number in a comment: a pack is stored and shown to every ``rules:read`` key."""
    errors: list[FieldError] = []
    scan(raw, "", errors)
    if errors:  # the path may hold the card number (an object key): redacted, like every echo
        first = errors[0]
        raise RulePackError(PACK_PAN_MESSAGE if first.message == PAN_MESSAGE else first.message, redact(first.field))
    for number, line in enumerate(text.splitlines(), 1):  # comments: stored in the text, no scalar
        comment = _COMMENT.search(line)
        if comment is not None and looks_like_pan(comment.group(1)):
            raise RulePackError(PACK_PAN_MESSAGE, f"line {number}")


def load_pack(text: str, *, stored: bool = False) -> RulePack:
    """Parse and check a rule pack's YAML text. Raises RulePackError.

    ``stored``: a pack read back from the store was checked when it came in; it is not
    refused again for sensitive values, so a check added later never stops a restart.
    """
    if len(text.encode()) > MAX_PACK_BYTES:
        raise RulePackError(f"rule pack is larger than {MAX_PACK_BYTES} bytes")
    try:
        # no anchors/aliases, bounded nodes and depth; a key given twice refused in a pack coming in
        raw: Any = safe_yaml.load(text, _PackLoader, refuse_duplicate_keys=not stored)
    except yaml.YAMLError as exc:
        raise RulePackError(f"invalid YAML: {redact(str(exc))}") from None  # it quotes the line at fault
    if not stored:
        _refuse_sensitive(raw, text)
    try:
        doc = msgspec.convert(raw, PackDoc)
    except msgspec.ValidationError as exc:
        raise RulePackError(f"invalid rule pack: {exc}") from None
    if not stored and not _VERSION.fullmatch(doc.version):
        raise RulePackError(
            f"version {doc.version[:80]!r} must be 1 to 64 letters, digits, '.', '_', ':', '+' or '-', "
            "the first a letter or digit: it names the pack in the audit trail, the banner and /readyz",
            "version",
        )
    for name in doc.types:
        if name in BUILTIN_TYPES or not re.fullmatch(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+", name):
            raise RulePackError(f"custom type {name!r} must be new and look like 'area.event'", "types")
    for name, values in doc.lists.items():
        if not _IDENT.match(name):
            raise RulePackError(f"list name {name!r} must be lower_snake_case", "lists")
        if len(values) > 100_000:
            raise RulePackError(f"list {name!r} has more than 100000 values", "lists")
    stateful = len(doc.features) + len(doc.anomaly) + len(doc.patterns)
    if not stored and stateful > MAX_STATEFUL_DEFINITIONS:
        raise RulePackError(f"{stateful:,} features, anomalies and patterns: at most {MAX_STATEFUL_DEFINITIONS:,}")
    if not stored and len(doc.rules) > MAX_RULES:
        raise RulePackError(f"{len(doc.rules):,} rules: at most {MAX_RULES:,}", "rules")
    loader = _Loader(doc, budgets=not stored)  # budgets added later never stop a restart either
    features = tuple(loader.feature(i, f) for i, f in enumerate(doc.features))
    anomalies = tuple(loader.anomaly(i, a) for i, a in enumerate(doc.anomaly))
    rules = tuple(loader.rule(i, r) for i, r in enumerate(doc.rules))
    patterns = tuple(loader.pattern(i, p) for i, p in enumerate(doc.patterns))
    if not stored:
        _bound_key_values(features, anomalies, patterns)
    return RulePack(
        version=doc.version,
        digest=pack_digest(text),
        description=doc.description,
        text=text,
        custom_types=loader.custom,
        lists={name: frozenset(str(v) for v in values) for name, values in doc.lists.items()},
        features=features,
        anomalies=anomalies,
        rules=rules,
        patterns=patterns,
    )


def _bound_key_values(
    features: tuple[FeatureSpec, ...], anomalies: tuple[AnomalySpec, ...], patterns: tuple[PatternSpec, ...]
) -> None:
    """Refuse a pack whose states of one entity (a customer, a device, an address...) could
    hold more than ``MAX_KEY_VALUES`` values at their bounds (a distinct count keeps up to
    1,000, a quantile its samples, a windowed aggregate a bucket for each 60th of its window, a
    robust z-score its samples, a pattern its partial matches): memory a producer's events
    could fill for every key. A definition keyed by several fields counts for each of them:
    by ``[customer_id, source]`` is, for one customer of one source, the customer's too."""
    held: dict[tuple[str, ...], int] = {}

    def hold(by: tuple[tuple[str, ...], ...], values: int) -> None:
        for path in set(by) or {("global",)}:
            held[path] = held.get(path, 0) + values

    for f in features:
        if f.agg == Aggregation.DISTINCT_COUNT:
            hold(f.by, MAX_DISTINCT)
        elif f.agg == Aggregation.QUANTILE:
            hold(f.by, QUANTILE_SAMPLES)
        else:
            hold(f.by, BUCKETS if f.window is not None else 1)
    for a in anomalies:
        hold(a.by, a.samples)
    for p in patterns:
        hold(p.by, MAX_PARTIALS)
    for path, values in held.items():
        if values > MAX_KEY_VALUES:
            raise RulePackError(
                f"the states of one {'.'.join(path)} could hold {values:,} values, over {MAX_KEY_VALUES:,}: "
                "fewer distinct counts, quantiles or windowed features by it"
            )


def default_pack_text() -> str:
    """The YAML of the rule pack shipped in the package."""
    return resources.files("ringfence.rules").joinpath("default.yaml").read_text()


def read_pack_file(path: Path | None) -> str:
    """The text of ``path``, or of the packaged default pack when ``path`` is None."""
    if path is None:
        return default_pack_text()
    try:
        return read_input(path, MAX_PACK_BYTES).decode()
    except (OSError, UnicodeDecodeError) as exc:
        raise RulePackError(f"cannot read rule pack {path}: {exc}") from None


def pack_digest(text: str) -> str:
    """A pack's digest, as :attr:`RulePack.digest`."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_pack_file(path: Path | None, *, stored: bool = False) -> RulePack:
    """Load ``path``, or the packaged default pack when ``path`` is None; ``stored`` as for
    :func:`load_pack`."""
    return load_pack(read_pack_file(path), stored=stored)
