"""The rule expression language: parsed, checked, and compiled to closures.

Syntax is a small subset of Python's: ``and or not``, comparisons (chains allowed),
``in`` / ``not in``, ``+ - * / %``, literals, list literals, field paths
(``data.merchant.country``), feature names, ``lists.NAME`` and calls to the functions of
:mod:`ringfence.engine.functions`. Everything else (attribute access on values, imports,
subscripts, lambdas, comprehensions, ``**``, dunders) is a load error. Expressions are
never passed to ``eval``: each node becomes a closure, so evaluation is bounded by the
size of the expression. A missing value (``None``) makes comparisons false, like SQL NULL.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ringfence.engine.functions import FUNCTIONS
from ringfence.errors import ExpressionError

MAX_EXPRESSION_CHARS = 2_000
MAX_DEPTH = 40
MAX_NODES = 400
ENVELOPE_FIELDS = frozenset({"event_id", "type", "occurred_at", "source", "customer_id", "account_id"})
NUMERIC_DATA_FIELDS = frozenset({"amount", "balance"})


class EvalContext(Protocol):
    """What a compiled expression reads: the event, feature values and lists."""

    def field(self, path: tuple[str, ...]) -> Any: ...

    def feature(self, name: str) -> Any: ...

    def list_(self, name: str) -> frozenset[Any]: ...


Compiled = Callable[[EvalContext], Any]


@dataclass(frozen=True)
class Scope:
    """What names an expression may use: data fields, features and lists that exist."""

    data_fields: frozenset[str] | None  # None: any (custom types)
    features: frozenset[str]
    lists: frozenset[str]


@dataclass(frozen=True)
class Expression:
    """A checked, compiled expression and the names it reads (for evidence)."""

    source: str
    evaluate: Compiled
    features: frozenset[str]
    fields: frozenset[tuple[str, ...]]


def _safe_cmp(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def cmp(a: Any, b: Any) -> bool:
        if a is None or b is None:
            return op is operator.ne and a is not b
        try:
            return bool(op(a, b))
        except TypeError:
            return False

    return cmp


def _safe_arith(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def arith(a: Any, b: Any) -> Any:
        if isinstance(a, bool) or isinstance(b, bool):
            return None
        if not isinstance(a, int | float) or not isinstance(b, int | float):
            # only + on two strings is allowed; its size is bounded by its inputs
            return a + b if op is operator.add and isinstance(a, str) and isinstance(b, str) else None
        try:
            return op(a, b)
        except (ZeroDivisionError, OverflowError):
            return None

    return arith


def _member(item: Any, container: Any) -> bool:
    if item is None or container is None:
        return False
    try:
        return item in container
    except TypeError:
        return False


_CMP: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: _safe_cmp(operator.eq),
    ast.NotEq: _safe_cmp(operator.ne),
    ast.Lt: _safe_cmp(operator.lt),
    ast.LtE: _safe_cmp(operator.le),
    ast.Gt: _safe_cmp(operator.gt),
    ast.GtE: _safe_cmp(operator.ge),
    ast.In: _member,
    ast.NotIn: lambda a, b: a is not None and b is not None and not _member(a, b),
}
_ARITH: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: _safe_arith(operator.add),
    ast.Sub: _safe_arith(operator.sub),
    ast.Mult: _safe_arith(operator.mul),
    ast.Div: _safe_arith(operator.truediv),
    ast.Mod: _safe_arith(operator.mod),
}


class _Compiler:
    def __init__(self, source: str, scope: Scope) -> None:
        self.source = source
        self.scope = scope
        self.features: set[str] = set()
        self.fields: set[tuple[str, ...]] = set()
        self.nodes = 0

    def fail(self, message: str, node: ast.AST | None = None) -> ExpressionError:
        col = getattr(node, "col_offset", None)
        return ExpressionError(message, self.source, None if col is None else col + 1)

    def compile(self, node: ast.AST, depth: int = 0) -> Compiled:
        self.nodes += 1
        if depth > MAX_DEPTH or self.nodes > MAX_NODES:
            raise self.fail("expression is too deeply nested or too large", node)
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise self.fail(f"{type(node).__name__} is not allowed in expressions", node)
        result: Compiled = method(node, depth + 1)
        return result

    def _Constant(self, node: ast.Constant, depth: int) -> Compiled:
        value = node.value
        if not isinstance(value, str | int | float | bool | type(None)):
            raise self.fail(f"literal {value!r} is not allowed", node)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**18:
            raise self.fail("integer literal is too large", node)
        return lambda ctx: value

    def _List(self, node: ast.List | ast.Tuple, depth: int) -> Compiled:
        if len(node.elts) > 1_000:
            raise self.fail("list literal has more than 1000 items", node)
        values = []
        for elt in node.elts:
            if not isinstance(elt, ast.Constant) or not isinstance(elt.value, str | int | float):
                raise self.fail("list literals may only hold strings and numbers", elt)
            values.append(elt.value)
        frozen = frozenset(values)
        return lambda ctx: frozen

    _Tuple = _List

    def _BoolOp(self, node: ast.BoolOp, depth: int) -> Compiled:
        parts = [self.compile(v, depth) for v in node.values]
        if isinstance(node.op, ast.And):
            return lambda ctx: all(bool(p(ctx)) for p in parts)
        return lambda ctx: any(bool(p(ctx)) for p in parts)

    def _UnaryOp(self, node: ast.UnaryOp, depth: int) -> Compiled:
        operand = self.compile(node.operand, depth)
        if isinstance(node.op, ast.Not):
            return lambda ctx: not operand(ctx)
        if isinstance(node.op, ast.USub):
            return lambda ctx: _ARITH[ast.Sub](0, operand(ctx))
        raise self.fail(f"operator {type(node.op).__name__} is not allowed", node)

    def _BinOp(self, node: ast.BinOp, depth: int) -> Compiled:
        fn = _ARITH.get(type(node.op))
        if fn is None:
            raise self.fail(f"operator {type(node.op).__name__} is not allowed", node)
        left, right = self.compile(node.left, depth), self.compile(node.right, depth)
        return lambda ctx: fn(left(ctx), right(ctx))

    def _Compare(self, node: ast.Compare, depth: int) -> Compiled:
        operands = [self.compile(node.left, depth)] + [self.compile(c, depth) for c in node.comparators]
        ops = []
        for op in node.ops:
            fn = _CMP.get(type(op))
            if fn is None:
                raise self.fail(f"comparison {type(op).__name__} is not allowed", node)
            ops.append(fn)
        if len(ops) == 1:
            left, right, only = operands[0], operands[1], ops[0]
            return lambda ctx: only(left(ctx), right(ctx))

        def chain(ctx: EvalContext) -> bool:
            values = [o(ctx) for o in operands]
            return all(op(values[i], values[i + 1]) for i, op in enumerate(ops))

        return chain

    def _IfExp(self, node: ast.IfExp, depth: int) -> Compiled:
        test, body, orelse = (self.compile(n, depth) for n in (node.test, node.body, node.orelse))
        return lambda ctx: body(ctx) if test(ctx) else orelse(ctx)

    def _Call(self, node: ast.Call, depth: int) -> Compiled:
        if not isinstance(node.func, ast.Name) or node.keywords:
            raise self.fail("only calls like name(arg, ...) to known functions are allowed", node)
        entry = FUNCTIONS.get(node.func.id)
        if entry is None:
            raise self.fail(f"unknown function {node.func.id!r}", node)
        fn, lo, hi = entry
        if not lo <= len(node.args) <= hi:
            raise self.fail(f"{node.func.id}() takes {lo}..{hi} arguments, got {len(node.args)}", node)
        args = [self.compile(a, depth) for a in node.args]

        def call(ctx: EvalContext) -> Any:
            try:
                return fn(*(a(ctx) for a in args))
            except (TypeError, ValueError, OverflowError):
                return None

        return call

    def _Name(self, node: ast.Name, depth: int) -> Compiled:
        return self._path(node, (node.id,))

    def _Attribute(self, node: ast.Attribute, depth: int) -> Compiled:
        parts: list[str] = []
        current: ast.AST = node
        while isinstance(current, ast.Attribute):
            parts.append(current.attr)
            current = current.value
        if not isinstance(current, ast.Name):
            raise self.fail("attributes are only allowed on field paths", node)
        parts.append(current.id)
        return self._path(node, tuple(reversed(parts)))

    def _path(self, node: ast.AST, path: tuple[str, ...]) -> Compiled:
        if any(p.startswith("_") for p in path):
            raise self.fail(f"name {'.'.join(path)!r} is not allowed (leading underscore)", node)
        head = path[0]
        if len(path) == 1 and head in _LITERAL_NAMES:
            literal = _LITERAL_NAMES[head]
            return lambda ctx: literal
        if head == "lists":
            if len(path) != 2 or path[1] not in self.scope.lists:
                raise self.fail(f"unknown list {'.'.join(path[1:])!r}", node)
            name = path[1]
            return lambda ctx: ctx.list_(name)
        if head == "data":
            if len(path) < 2:
                raise self.fail("use a field of data, e.g. data.amount", node)
            known = self.scope.data_fields
            if known is not None and path[1] not in known:
                raise self.fail(f"unknown field {'.'.join(path)!r} for the rule's event types", node)
            self.fields.add(path)
            return lambda ctx: ctx.field(path)
        if len(path) == 1 and head in ENVELOPE_FIELDS:
            self.fields.add(path)
            return lambda ctx: ctx.field(path)
        if len(path) == 1 and head in self.scope.features:
            self.features.add(head)
            return lambda ctx: ctx.feature(head)
        raise self.fail(f"unknown name {'.'.join(path)!r} (not an event field, feature or list)", node)


_LITERAL_NAMES: dict[str, Any] = {"true": True, "false": False, "null": None}


def compile_expression(source: str, scope: Scope) -> Expression:
    """Parse, check and compile ``source``. Raises ExpressionError naming the position."""
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("expression is empty", str(source))
    if len(source) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"expression is longer than {MAX_EXPRESSION_CHARS} characters", source[:80])
    if source.count("(") + source.count("[") > MAX_DEPTH:
        raise ExpressionError("expression is too deeply nested", source)
    try:
        tree = ast.parse(source.replace("\n", " ").strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        col = getattr(exc, "offset", None)
        raise ExpressionError(f"syntax error: {getattr(exc, 'msg', exc)}", source, col) from None
    compiler = _Compiler(source, scope)
    evaluate = compiler.compile(tree.body)
    return Expression(source, evaluate, frozenset(compiler.features), frozenset(compiler.fields))


class DictContext:
    """An :class:`EvalContext` over plain mappings; for tests and ``rules test``."""

    def __init__(
        self,
        fields: Mapping[str, Any],
        features: Mapping[str, Any] | None = None,
        lists: Mapping[str, frozenset[Any]] | None = None,
    ) -> None:
        self._fields = fields
        self._features = features or {}
        self._lists = lists or {}

    def field(self, path: tuple[str, ...]) -> Any:
        value: Any = self._fields
        for part in path:
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)
        return value

    def feature(self, name: str) -> Any:
        return self._features.get(name)

    def list_(self, name: str) -> frozenset[Any]:
        return self._lists.get(name, frozenset())
