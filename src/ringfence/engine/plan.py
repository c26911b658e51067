"""A rule pack as an evaluation plan: the plain document the compiled core runs.

The Python loader (:mod:`ringfence.engine.pack`) parses, checks and types every expression;
this module only restates what it accepted as a tree of plain values, each name already
resolved (a feature, a list, an event field or an earlier pattern step), so the core never
parses or checks anything itself.
"""

from __future__ import annotations

import ast
import math
import sys
from collections.abc import Collection
from typing import Any

import msgspec

from ringfence.engine.anomaly import AnomalyKind, AnomalySpec
from ringfence.engine.expressions import ENVELOPE_FIELDS, Expression, list_item
from ringfence.engine.features import FeatureSpec
from ringfence.engine.pack import RulePack
from ringfence.engine.patterns import PatternSpec, StepSpec
from ringfence.engine.rules import Output, Template

Node = dict[str, Any]
_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}
_ARITH = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Mod: "%"}
_CMP = {
    ast.Eq: "eq",
    ast.NotEq: "ne",
    ast.Lt: "lt",
    ast.LtE: "le",
    ast.Gt: "gt",
    ast.GtE: "ge",
    ast.In: "in",
    ast.NotIn: "notin",
}


def _member(value: Any) -> Any:
    """A list literal's item as the plan carries it. JSON has no infinity, and the core reads a
    number past 64 bits as a float (10**41 as 1e41, which is not 10**41), so such numbers are
    spelled out (a hostile test: ``x in [1e999]`` and ``x in [2**100 + 1]`` differed, and a
    number past the largest float failed the core's plan at a reload). An integer past the
    core's 128 bits equals no integer, and a float only if it is one exactly; None: none."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    if value.__class__ is not int or -(2**63) <= value < 2**64:
        return value
    if -(2**127) <= value < 2**127:
        return {"int": str(value)}
    try:
        exact = float(value)
    except OverflowError:
        return None
    return {"float": repr(exact)} if exact == value else None


class _Tree:
    """Restates checked expressions; ``features`` are the names that read a feature or score."""

    def __init__(self, features: Collection[str]) -> None:
        self.features = features

    def expr(self, expression: Expression | None) -> Node | None:
        if expression is None:
            return None
        return self.node(ast.parse(expression.source.replace("\n", " ").strip(), mode="eval").body)

    def node(self, n: ast.AST) -> Node:
        if isinstance(n, ast.Constant):
            if isinstance(n.value, float) and not math.isfinite(n.value):
                return {"k": "lit", "float": repr(n.value)}  # JSON has no inf: "inf", "-inf"
            return {"k": "lit", "v": n.value}
        if isinstance(n, ast.List | ast.Tuple):
            members = (_member(list_item(e)) for e in n.elts)  # the loader accepted each
            return {"k": "set", "v": [m for m in members if m is not None]}
        if isinstance(n, ast.BoolOp):
            return {"k": "and" if isinstance(n.op, ast.And) else "or", "a": [self.node(v) for v in n.values]}
        if isinstance(n, ast.UnaryOp):
            return {"k": "not" if isinstance(n.op, ast.Not) else "neg", "a": self.node(n.operand)}
        if isinstance(n, ast.BinOp):
            return {"k": "bin", "op": _ARITH[type(n.op)], "l": self.node(n.left), "r": self.node(n.right)}
        if isinstance(n, ast.Compare):
            operands = [n.left, *n.comparators]
            return {"k": "cmp", "ops": [_CMP[type(op)] for op in n.ops], "a": [self.node(o) for o in operands]}
        if isinstance(n, ast.IfExp):
            return {"k": "if", "t": self.node(n.test), "b": self.node(n.body), "e": self.node(n.orelse)}
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name):
            return {"k": "call", "f": n.func.id, "a": [self.node(a) for a in n.args]}
        return self.path(_path_of(n))

    def path(self, path: tuple[str, ...]) -> Node:
        head = path[0]
        if len(path) == 1 and head in _LITERALS:
            return {"k": "lit", "v": _LITERALS[head]}
        if head == "lists":
            return {"k": "list", "n": path[1]}
        if head == "data" or (len(path) == 1 and head in ENVELOPE_FIELDS):
            return {"k": "field", "p": list(path)}
        if head in self.features:
            return {"k": "feat", "n": head, "s": path[1]} if len(path) == 2 else {"k": "feat", "n": head}
        return {"k": "step", "n": head, "p": list(path[1:])}  # the loader accepted nothing else

    def template(self, template: Template) -> list[Node]:
        parts = [{"t": p} if isinstance(p, str) else self.node_of(p) for p in template.parts]
        return [{"escape": "".join(sorted(template.escape))}, *parts] if template.key else parts

    def node_of(self, expression: Expression) -> Node:
        node = self.expr(expression)
        assert node is not None
        return node

    def output(self, out: Output) -> Node:
        return {
            "title": self.template(out.title),
            "summary": self.template(out.summary),
            "dedup": self.template(out.dedup),
            "labels": [[k, self.template(t)] for k, t in out.labels],
        }

    def step(self, step: StepSpec | None) -> Node | None:
        if step is None:
            return None
        return {"name": step.name, "on": sorted(step.on), "when": self.expr(step.when)}


def _path_of(n: ast.AST) -> tuple[str, ...]:
    parts: list[str] = []
    while isinstance(n, ast.Attribute):
        parts.append(n.attr)
        n = n.value
    assert isinstance(n, ast.Name), "the loader accepts only names and field paths here"
    parts.append(n.id)
    return tuple(reversed(parts))


def _types(on: frozenset[str] | None) -> list[str] | None:
    return sorted(on) if on is not None else None


def _feature(tree: _Tree, f: FeatureSpec) -> Node:
    return {
        "name": f.name,
        "by": [list(p) for p in f.by],
        "agg": f.agg.value,
        "of": tree.expr(f.of),
        "where": tree.expr(f.where),
        "on": _types(f.on),
        "window": f.window,
        "alpha": f.alpha,
        "q": f.q,
        "ttl": f.ttl,
    }


def _anomaly(tree: _Tree, a: AnomalySpec) -> Node:
    return {
        "name": a.name,
        "by": [list(p) for p in a.by],
        "inputs": [tree.node_of(i) for i in a.inputs],
        "where": tree.expr(a.where),
        "on": _types(a.on),
        "min_samples": a.min_samples,
        "samples": a.samples,
        "window": a.window,
    }


def _pattern(tree: _Tree, p: PatternSpec) -> Node:
    return {
        "id": p.id,
        "kind": p.kind.value,
        "by": [list(path) for path in p.by],
        "within": p.within,
        "steps": [tree.step(s) for s in p.steps],
        "after": tree.step(p.after),
        "expect": tree.step(p.expect),
        "output": tree.output(p.output),
        "evidence": sorted(p.evidence_features),
    }


def value_names(pack: RulePack) -> list[str]:
    """The named values of ``pack`` by slot: its features, its scores, then the values its
    expressions read that another keyed stage computes (a stage's sub-pack, see
    :mod:`ringfence.engine.stages`, keeps every rule; those values arrive carried)."""
    own = [f.name for f in pack.features] + [a.name for a in pack.anomalies]
    return own + sorted(reads_of_pack(pack) - set(own))


def reads_of_pack(pack: RulePack) -> set[str]:
    """Every feature and score name an expression of ``pack`` reads."""
    outputs = [r.output for r in pack.rules] + [p.output for p in pack.patterns]
    expressions: list[Expression | None] = [r.when for r in pack.rules]
    expressions += [e for f in pack.features for e in (f.of, f.where)]
    expressions += [e for a in pack.anomalies for e in (*a.inputs, a.where)]
    expressions += [s.when for p in pack.patterns for s in (*p.steps, p.after, p.expect) if s is not None]
    names = {name for e in expressions if e is not None for name in e.features}
    for out in outputs:
        for template in (out.title, out.summary, out.dedup, *(t for _, t in out.labels)):
            names |= template.features
    return names


def unsupported(pack: RulePack) -> str | None:
    """Why the compiled core cannot run ``pack`` (None: it can)."""
    for a in pack.anomalies:
        if a.kind != AnomalyKind.ROBUST_ZSCORE:
            return f"anomaly {a.name} is a {a.kind.value} score (River's model runs in Python only)"
    return None


def plan_of(pack: RulePack) -> bytes:
    """The evaluation plan of ``pack`` (JSON), for the compiled core."""
    names = value_names(pack)
    tree = _Tree(names)
    doc = {
        "lists": sorted(pack.lists),
        "foreign": names[len(pack.features) + len(pack.anomalies) :],
        # the reference engine adds window buckets with sum(), compensated from Python 3.12 on
        "compensated_sum": sys.version_info >= (3, 12),
        "features": [_feature(tree, f) for f in pack.features],
        "anomalies": [_anomaly(tree, a) for a in pack.anomalies],
        "rules": [
            {
                "id": r.id,
                "on": sorted(r.on),
                "when": tree.node_of(r.when),
                "output": tree.output(r.output),
                "evidence": sorted(r.evidence_features),
            }
            for r in pack.rules
        ],
        "patterns": [_pattern(tree, p) for p in pack.patterns],
    }
    return msgspec.json.encode(doc)
