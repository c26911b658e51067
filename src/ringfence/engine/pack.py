"""Rule packs: the YAML document analysts write, loaded and checked as a whole.

A pack that fails any check never replaces the running one; the error names the
section, the rule or feature, and the position in the expression.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
import yaml

from ringfence.engine.durations import parse_duration
from ringfence.engine.expressions import ENVELOPE_FIELDS, Scope, compile_expression
from ringfence.engine.features import AGGREGATIONS, NEEDS_OF, FeatureSpec
from ringfence.engine.rules import AUDIENCES, SEVERITIES, RuleSpec, Template
from ringfence.errors import ExpressionError, RulePackError
from ringfence.events.types import BUILTIN_TYPES

MAX_PACK_BYTES = 1024 * 1024
_IDENT = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_RESERVED = ENVELOPE_FIELDS | {"data", "lists", "true", "false", "null"}


class _PackLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false, so a key named ``on`` stays a string."""


_PackLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_PackLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class FeatureDoc(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    agg: str
    by: str | list[str] = "customer_id"
    of: str | None = None
    window: str | None = None
    where: str | None = None
    on: list[str] | None = None


class RuleDoc(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    on: list[str]
    when: str
    severity: str
    audience: str
    title: str
    description: str = ""
    summary: str = ""
    dedup: str = "{customer_id}"
    labels: dict[str, str] = {}
    mode: str = "live"


class PackDoc(msgspec.Struct, forbid_unknown_fields=True):
    version: str
    description: str = ""
    types: list[str] = []
    lists: dict[str, list[str]] = {}
    features: list[FeatureDoc] = []
    rules: list[RuleDoc] = []


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
    rules: tuple[RuleSpec, ...]

    def rule(self, rule_id: str) -> RuleSpec | None:
        return next((r for r in self.rules if r.id == rule_id), None)


def _data_fields(types: frozenset[str] | None, custom: frozenset[str]) -> frozenset[str] | None:
    names = types if types is not None else frozenset(BUILTIN_TYPES)
    if names & custom:
        return None
    return frozenset(f for t in names for f in BUILTIN_TYPES[t].__struct_fields__)


def _check_types(types: list[str], custom: frozenset[str], where: str) -> frozenset[str]:
    for name in types:
        if name not in BUILTIN_TYPES and name not in custom:
            raise RulePackError(f"unknown event type {name!r}", where)
    return frozenset(types)


def _key_path(text: str, where: str) -> tuple[str, ...] | None:
    if text == "global":
        return None
    path = tuple(text.split("."))
    if not (path[0] in ENVELOPE_FIELDS and len(path) == 1) and not (path[0] == "data" and len(path) > 1):
        raise RulePackError(f"'by' must be an envelope field, data.<field> or global, got {text!r}", where)
    return path


def load_pack(text: str) -> RulePack:
    """Parse and check a rule pack's YAML text. Raises RulePackError."""
    if len(text.encode()) > MAX_PACK_BYTES:
        raise RulePackError(f"rule pack is larger than {MAX_PACK_BYTES} bytes")
    try:
        raw: Any = yaml.load(text, Loader=_PackLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise RulePackError(f"invalid YAML: {exc}") from None
    try:
        doc = msgspec.convert(raw, PackDoc)
    except msgspec.ValidationError as exc:
        raise RulePackError(f"invalid rule pack: {exc}") from None
    custom = frozenset(doc.types)
    for name in custom:
        if name in BUILTIN_TYPES or not re.fullmatch(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+", name):
            raise RulePackError(f"custom type {name!r} must be new and look like 'area.event'", "types")
    lists = {name: frozenset(str(v) for v in values) for name, values in doc.lists.items()}
    for name in lists:
        if not _IDENT.match(name):
            raise RulePackError(f"list name {name!r} must be lower_snake_case", "lists")
    features = _load_features(doc.features, custom, frozenset(lists))
    feature_names = frozenset(f.name for f in features)
    rules = _load_rules(doc.rules, custom, feature_names, frozenset(lists))
    return RulePack(
        version=doc.version,
        digest=hashlib.sha256(text.encode()).hexdigest()[:16],
        description=doc.description,
        text=text,
        custom_types=custom,
        lists=lists,
        features=features,
        rules=rules,
    )


def _load_features(docs: list[FeatureDoc], custom: frozenset[str], lists: frozenset[str]) -> tuple[FeatureSpec, ...]:
    specs: list[FeatureSpec] = []
    seen: set[str] = set()
    for i, f in enumerate(docs):
        where = f"features[{i}] ({f.name})"
        if not _IDENT.match(f.name) or f.name in _RESERVED:
            raise RulePackError("feature name must be lower_snake_case and not reserved", where)
        if f.name in seen:
            raise RulePackError("duplicate feature name", where)
        seen.add(f.name)
        if f.agg not in AGGREGATIONS:
            raise RulePackError(f"unknown agg {f.agg!r}; one of {', '.join(sorted(AGGREGATIONS))}", where)
        if f.agg in NEEDS_OF and not f.of:
            raise RulePackError(f"agg {f.agg!r} needs 'of'", where)
        on = _check_types(f.on, custom, where) if f.on is not None else None
        scope = Scope(_data_fields(on, custom), frozenset(), lists)
        by_list = [f.by] if isinstance(f.by, str) else f.by
        by = tuple(p for p in (_key_path(b, where) for b in by_list) if p is not None)
        try:
            window = parse_duration(f.window) if f.window else None
            of = compile_expression(f.of, scope) if f.of else None
            cond = compile_expression(f.where, scope) if f.where else None
        except (ExpressionError, ValueError) as exc:
            raise RulePackError(str(exc), where) from None
        specs.append(FeatureSpec(f.name, by, f.agg, of, cond, on, window))
    return tuple(specs)


def _load_rules(
    docs: list[RuleDoc], custom: frozenset[str], features: frozenset[str], lists: frozenset[str]
) -> tuple[RuleSpec, ...]:
    rules: list[RuleSpec] = []
    seen: set[str] = set()
    for i, r in enumerate(docs):
        where = f"rules[{i}] ({r.id})"
        if not _IDENT.match(r.id):
            raise RulePackError("rule id must be lower_snake_case", where)
        if r.id in seen:
            raise RulePackError("duplicate rule id", where)
        seen.add(r.id)
        if not r.on:
            raise RulePackError("'on' must name at least one event type", where)
        if r.severity not in SEVERITIES:
            raise RulePackError(f"severity must be one of {', '.join(SEVERITIES)}", where)
        if r.audience not in AUDIENCES:
            raise RulePackError(f"audience must be one of {', '.join(AUDIENCES)}", where)
        if r.mode not in ("live", "shadow"):
            raise RulePackError("mode must be live or shadow", where)
        on = _check_types(r.on, custom, where)
        scope = Scope(_data_fields(on, custom), features, lists)
        try:
            when = compile_expression(r.when, scope)
            title = Template.parse(r.title, scope)
            summary = Template.parse(r.summary, scope)
            dedup = Template.parse(r.dedup, scope)
            labels = tuple((k, Template.parse(v, scope)) for k, v in sorted(r.labels.items()))
        except (ExpressionError, ValueError) as exc:
            raise RulePackError(str(exc), where) from None
        rules.append(
            RuleSpec(r.id, r.description, on, when, r.severity, r.audience, title, summary, dedup, labels, r.mode)
        )
    return tuple(rules)


def default_pack_text() -> str:
    """The YAML of the rule pack shipped in the package."""
    return resources.files("ringfence.rules").joinpath("default.yaml").read_text()


def load_pack_file(path: Path | None) -> RulePack:
    """Load ``path``, or the packaged default pack when ``path`` is None."""
    if path is None:
        return load_pack(default_pack_text())
    try:
        text = path.read_text()
    except OSError as exc:
        raise RulePackError(f"cannot read rule pack {path}: {exc}") from None
    return load_pack(text)
