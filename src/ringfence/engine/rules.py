"""Rules and the alert signals they emit.

A :class:`RuleSpec` is checked and compiled when its pack loads; the engine evaluates
its ``when`` on each event of an ``on`` type and, on a hit, renders a deterministic
:class:`AlertSignal` (same event, same pack -> same signal, so replays are harmless).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgspec

from ringfence.engine.expressions import EvalContext, Expression, Scope, compile_expression
from ringfence.engine.keys import ESCAPE, SEPARATOR


class Severity(StrEnum):
    """How urgent a detection's alerts are, least first."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Audience(StrEnum):
    """The desk a detection's alerts are for; API keys may be limited to some."""

    FRAUD = "fraud"
    AML = "aml"
    SECURITY = "security"
    OPS = "ops"
    CUSTOMER = "customer"


class Mode(StrEnum):
    """``live`` detections raise alerts; ``shadow`` ones are only counted (to try a rule out)."""

    LIVE = "live"
    SHADOW = "shadow"


SEVERITIES = tuple(s.value for s in Severity)
AUDIENCES = tuple(a.value for a in Audience)
_PLACEHOLDER = re.compile(r"\{([^{}]{1,200})\}")
MAX_RENDERED = 1_000
KEPT_OF_LONG_KEY = MAX_RENDERED - len("sha256:") - 64


def qualified_dedup(text: str, audience: Audience) -> str:
    """The dedup template a rule's alerts are keyed by: ``text`` as written, keyed also by what
    tells apart the events or customers it would otherwise merge. An event is its source and its
    id (ids are unique per producer), so ``{event_id}`` is keyed with ``{source}``; an alert for
    the customer audience is told to one customer, so it is keyed with ``{customer_id}``, and a
    template naming ``{customer_id}`` among other text is keyed with it first, alone. (A
    hostile test: two producers' ``evt-0001`` merged two customers' notifications into one
    alert, the second's salary in the first's title, the second told nothing.)"""
    names = {match.group(1).strip() for match in _PLACEHOLDER.finditer(text)}
    # the event's id, or a pattern step's ({payee.event_id}); never data's own field
    events = sorted(name[: -len("event_id")] for name in names if name.rsplit(".", 1)[-1] == "event_id")
    for step in reversed([e for e in events if not e.startswith("data.") and f"{e}source" not in names]):
        text = f"{{{step}source}}\x1f" + text
    if audience is Audience.CUSTOMER and "customer_id" not in names:
        text = "{customer_id}\x1f" + text
    elif "customer_id" in names and not _ALONE_CUSTOMER.fullmatch(text):
        # ids may hold ":", so "{customer_id}:{data.payee_id}" read ("cus:7", "pay") as ("cus",
        # "7:pay"): two customers' alerts one, the second's payee in the first's (a hostile
        # test). A customer id holds no U+001F: first and so joined, it tells them apart
        text = "{customer_id}\x1f" + text
    return text


_ALONE_CUSTOMER = re.compile(r"\{\s*customer_id\s*\}")


@dataclass(frozen=True)
class Template:
    """Text with ``{field.path}`` or ``{feature}`` placeholders; no format specs, no calls."""

    text: str
    parts: tuple[str | Expression, ...]
    escape: frozenset[str] = frozenset()  # characters a value's text holds only escaped
    # a key: past MAX_RENDERED, its head and a digest of it all, never cut (two long keys
    # differing past the cut were one: escaping may double a value's length)
    key: bool = False

    @classmethod
    def parse_key(cls, text: str, scope: Scope) -> Template:
        """A template whose renderings are keys (a dedup key): two values' texts never read as
        others'. ``{data.card_id}:{data.merchant.id}`` rendered ("tok:1", "m") and ("tok", "1:m")
        alike, two customers' alerts one; so a value's characters that the template's own text
        holds, and U+001E, are each escaped by a U+001E, and placeholders side by side are
        parted by U+001F. A template of one placeholder, or values without those characters,
        render as they did."""
        template = dataclasses.replace(cls.parse(text, scope), key=True)
        if sum(isinstance(p, Expression) for p in template.parts) < 2:
            return template
        parts: list[str | Expression] = []
        for part in template.parts:
            if parts and isinstance(part, Expression) and isinstance(parts[-1], Expression):
                parts.append(SEPARATOR)
            parts.append(part)
        escape = frozenset("".join(p for p in parts if isinstance(p, str))) | {ESCAPE}
        return cls(text, tuple(parts), escape, key=True)

    @classmethod
    def parse(cls, text: str, scope: Scope) -> Template:
        parts: list[str | Expression] = []
        pos = 0
        for match in _PLACEHOLDER.finditer(text):
            parts.append(text[pos : match.start()])
            name = match.group(1).strip()
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*", name):
                raise ValueError(f"placeholder {{{name}}} must be a field path or feature name")
            parts.append(compile_expression(name, scope))
            pos = match.end()
        parts.append(text[pos:])
        return cls(text, tuple(p for p in parts if p != ""))

    def render(self, ctx: EvalContext) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                value = part.evaluate(ctx)
                text = "" if value is None else _fmt(value)
                if self.escape and not self.escape.isdisjoint(text):
                    text = "".join(ESCAPE + ch if ch in self.escape else ch for ch in text)
                out.append(text)
        rendered = "".join(out)
        if self.key and len(rendered) > MAX_RENDERED:
            return rendered[:KEPT_OF_LONG_KEY] + "sha256:" + hashlib.sha256(rendered.encode()).hexdigest()
        return rendered[:MAX_RENDERED]

    @property
    def features(self) -> frozenset[str]:
        return frozenset(f for p in self.parts if isinstance(p, Expression) for f in p.features)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            # inf, -inf, nan (a shared key's sum can overflow): shown, never failing the event
            return str(value)
        return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    return str(value)


@dataclass(frozen=True)
class Output:
    """What a detection (rule or pattern) says when it fires."""

    severity: Severity
    audience: Audience
    title: Template
    summary: Template
    dedup: Template
    labels: tuple[tuple[str, Template], ...]
    mode: Mode
    auto_resolve: float | None = None  # resolve an alert with no new hit for this long (seconds)


@dataclass(frozen=True)
class RuleSpec:
    """A detection from the rule pack: ``when`` evaluated on each event of an ``on`` type."""

    id: str
    description: str
    on: frozenset[str]
    when: Expression
    output: Output

    @property
    def evidence_features(self) -> frozenset[str]:
        return frozenset(self.when.features | self.output.title.features | self.output.summary.features)


class AlertSignal(msgspec.Struct, frozen=True, omit_defaults=True):
    """A rule hit, as the engine hands it to the alert pipeline.

    ``offset`` is the log offset of the triggering event; ``features`` the values that
    made the rule fire; ``late`` marks an event behind its partition's watermark;
    ``related_events`` are the earlier events of a pattern (its steps, or what was awaited);
    ``fx`` the rate the triggering event was converted at, on the signals of the event being
    processed (not on a timer's, whose event came earlier).
    """

    rule_id: str
    rule_version: str
    severity: Severity
    audience: Audience
    mode: Mode
    dedup_key: str
    title: str
    summary: str
    labels: dict[str, str]
    event_id: str
    event_type: str
    offset: int
    occurred_at: float
    ingested_at: float
    features: dict[str, Any]
    customer_id: str | None = None
    late: bool = False
    related_events: list[dict[str, Any]] = []
    fx: dict[str, Any] | None = None  # the rate the event's money was converted at (its data.fx)


def with_fx(signal: AlertSignal, data: Any) -> AlertSignal:
    """``signal`` of the event whose ``data`` it is, with the rate ingest converted that
    event's money at (:mod:`ringfence.events.fx`) as evidence."""
    fx = data.get("fx") if isinstance(data, dict) else None
    return msgspec.structs.replace(signal, fx=fx) if isinstance(fx, dict) else signal
