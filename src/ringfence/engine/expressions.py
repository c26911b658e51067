"""The rule expression language: parsed, type-checked, and compiled to closures.

Syntax is a small subset of Python's: ``and or not``, comparisons (chains allowed),
``in`` / ``not in``, ``+ - * / %``, ``x if c else y``, literals (``true false null``
too), list literals, field paths (``data.merchant.country``), feature names (and
``stats_feature.mean``), ``lists.NAME``, earlier pattern steps (``reset.occurred_at``)
and calls to the functions of :mod:`ringfence.engine.functions`. Everything else
(attributes of values, imports, subscripts, lambdas, comprehensions, ``**``, dunders) is a
load error, and so is an unknown name or an operation on the wrong types. Expressions are
never passed to ``eval``: each node becomes a closure, so evaluation is bounded by the
size of the expression. A missing value (``null``) makes ordering comparisons false;
``x == null`` and ``x != null`` test whether ``x`` is missing.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ringfence.engine.functions import FUNCTIONS
from ringfence.engine.schema import ANY, BOOL, ENVELOPE_TYPES, LIST, NUMBER, STRING, FieldType
from ringfence.errors import ExpressionError

MAX_EXPRESSION_CHARS = 2_000
MAX_DEPTH = 40
MAX_NODES = 400
MAX_CONCAT = 4_096  # characters of a text that + makes; longer is null
_INT_MIN, _INT_MAX = -(2**127), 2**127 - 1  # the core's integers; arithmetic past them is in floats
MAX_INT_LITERAL = 10**18
ENVELOPE_FIELDS = frozenset(ENVELOPE_TYPES)
STATS_FIELDS: dict[str, FieldType] = {"mean": NUMBER, "std": NUMBER, "count": NUMBER}


class EvalContext(Protocol):
    """What a compiled expression reads: the event, feature values, lists, pattern steps."""

    def field(self, path: tuple[str, ...]) -> Any: ...

    def feature(self, name: str) -> Any: ...

    def list_(self, name: str) -> frozenset[Any]: ...

    def step(self, name: str, path: tuple[str, ...]) -> Any: ...


Compiled = Callable[[EvalContext], Any]


@dataclass(frozen=True)
class Scope:
    """What an expression may read, with types: ``data_fields`` None means free-form data."""

    data_fields: Mapping[str, FieldType] | None
    features: Mapping[str, FieldType] = field(default_factory=dict)
    lists: frozenset[str] = frozenset()
    steps: Mapping[str, Mapping[str, FieldType] | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Expression:
    """A checked, compiled expression, its result type and the names it reads (for evidence)."""

    source: str
    evaluate: Compiled
    type: FieldType
    features: frozenset[str]
    fields: frozenset[tuple[str, ...]]
    nodes: int = 0  # its parts: what one evaluation may cost (a pack's sum is bounded)


def _safe_cmp(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def cmp(a: Any, b: Any) -> bool:
        if a is None or b is None:  # == null and != null test for a missing value; < etc. are false
            if op is operator.eq:
                return a is b
            return op is operator.ne and a is not b
        if a.__class__ is dict and b.__class__ is dict and op in (operator.eq, operator.ne):
            return _plain_equal(a, b) is (op is operator.eq)
        try:
            return bool(op(a, b))
        except TypeError:
            return False

    return cmp


def _plain_equal(a: Any, b: Any) -> bool:
    """``a == b`` for objects (a stats value, an object of an event's data) without Python's
    identity shortcut, as the core compares them: a stats feature with a NaN mean equalled
    itself only by being the same object (a review)."""
    if a.__class__ is dict and b.__class__ is dict:
        return a.keys() == b.keys() and all(_plain_equal(a[k], b[k]) for k in a)
    if a.__class__ is list and b.__class__ is list:
        return len(a) == len(b) and all(_plain_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _safe_arith(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def arith(a: Any, b: Any) -> Any:
        if a.__class__ not in (int, float) or b.__class__ not in (int, float):
            # only + on two texts, up to MAX_CONCAT characters (a chain of long texts would cost
            # its length squared), else null
            if op is not operator.add or not isinstance(a, str) or not isinstance(b, str):
                return None
            return a + b if len(a) + len(b) <= MAX_CONCAT else None
        try:
            if op is operator.truediv and a.__class__ is int and b.__class__ is int:
                return float(a) / float(b)  # each a float first, as the core divides (exact to 2**53)
            result = op(a, b)
        except (ZeroDivisionError, OverflowError):
            return None
        if result.__class__ is int and not _INT_MIN <= result <= _INT_MAX:
            return op(float(a), float(b))  # past 128 bits, in floats, as the core
        return result

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
_LITERAL_NAMES: dict[str, Any] = {"true": True, "false": False, "null": None}
_NULL = "null"
Typed = tuple[Compiled, FieldType]


def _bounded_literal(value: float) -> bool:
    """A list literal's number as a number literal is held: an integer at most MAX_INT_LITERAL
    in size, a float finite (``1e999`` is infinity, which no event's number equals)."""
    return math.isfinite(value) if isinstance(value, float) else abs(value) <= MAX_INT_LITERAL


def list_item(node: ast.AST) -> str | int | float | None:
    """A list literal's item: a string or a number, a negative one too (``-1`` parses as a
    negation of 1, not as a literal); None for anything else. ``True`` and ``False`` were always
    taken (Python's bools are ints), so stored packs may hold them; they are not negated."""
    negated = isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
    constant = node.operand if isinstance(node, ast.UnaryOp) and negated else node
    if not isinstance(constant, ast.Constant):
        return None
    value = constant.value
    if not negated:
        return value if isinstance(value, str | int | float) else None
    return -value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _literal_type(value: Any) -> FieldType:
    if value is None:
        return _NULL
    if isinstance(value, bool):
        return BOOL
    return NUMBER if isinstance(value, int | float) else STRING


def _compatible(a: FieldType, b: FieldType) -> bool:
    return a == b or ANY in (a, b) or _NULL in (a, b)


class _Compiler:
    def __init__(self, source: str, scope: Scope, *, strict: bool = True) -> None:
        self.source = source
        self.scope = scope
        self.strict = strict  # checks added since a stored pack came in, which never stop a restart
        self.features: set[str] = set()
        self.fields: set[tuple[str, ...]] = set()
        self.nodes = 0

    def fail(self, message: str, node: ast.AST | None = None) -> ExpressionError:
        col = getattr(node, "col_offset", None)
        return ExpressionError(message, self.source, None if col is None else col + 1)

    def compile(self, node: ast.AST, depth: int = 0) -> Typed:
        self.nodes += 1
        if depth > MAX_DEPTH or self.nodes > MAX_NODES:
            raise self.fail("expression is too deeply nested or too large", node)
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise self.fail(f"{type(node).__name__} is not allowed in expressions", node)
        result: Typed = method(node, depth + 1)
        return result

    def _Constant(self, node: ast.Constant, depth: int) -> Typed:
        value = node.value
        if not isinstance(value, str | int | float | bool | type(None)):
            raise self.fail(f"literal {value!r} is not allowed", node)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT_LITERAL:
            raise self.fail("integer literal is too large", node)
        return (lambda ctx: value), _literal_type(value)

    def _List(self, node: ast.List | ast.Tuple, depth: int) -> Typed:
        if len(node.elts) > 1_000:
            raise self.fail("list literal has more than 1000 items", node)
        values = []
        for elt in node.elts:
            value = list_item(elt)
            if value is None:
                raise self.fail("list literals may only hold strings and numbers", elt)
            if self.strict and isinstance(value, int | float) and not _bounded_literal(value):
                raise self.fail("a list literal's floats must be finite and its integers at most 10**18 in size", elt)
            values.append(value)
        frozen = frozenset(values)
        return (lambda ctx: frozen), LIST

    _Tuple = _List

    def _BoolOp(self, node: ast.BoolOp, depth: int) -> Typed:
        parts = [self.compile(v, depth)[0] for v in node.values]
        if isinstance(node.op, ast.And):
            return (lambda ctx: all(bool(p(ctx)) for p in parts)), BOOL
        return (lambda ctx: any(bool(p(ctx)) for p in parts)), BOOL

    def _UnaryOp(self, node: ast.UnaryOp, depth: int) -> Typed:
        operand, kind = self.compile(node.operand, depth)
        if isinstance(node.op, ast.Not):
            return (lambda ctx: not operand(ctx)), BOOL
        if isinstance(node.op, ast.USub):
            if not _compatible(kind, NUMBER):
                raise self.fail(f"cannot negate a {kind}", node)
            return (lambda ctx: _ARITH[ast.Sub](0, operand(ctx))), NUMBER
        raise self.fail(f"operator {type(node.op).__name__} is not allowed", node)

    def _BinOp(self, node: ast.BinOp, depth: int) -> Typed:
        fn = _ARITH.get(type(node.op))
        if fn is None:
            raise self.fail(f"operator {type(node.op).__name__} is not allowed", node)
        (left, lt), (right, rt) = self.compile(node.left, depth), self.compile(node.right, depth)
        if isinstance(node.op, ast.Add) and STRING in (lt, rt) and _compatible(lt, rt):
            result: FieldType = STRING
        elif _compatible(lt, NUMBER) and _compatible(rt, NUMBER):
            result = NUMBER
        else:
            raise self.fail(f"cannot apply {type(node.op).__name__} to {_name(lt)} and {_name(rt)}", node.right)
        return (lambda ctx: fn(left(ctx), right(ctx))), result

    def _Compare(self, node: ast.Compare, depth: int) -> Typed:
        typed = [self.compile(node.left, depth)] + [self.compile(c, depth) for c in node.comparators]
        ops = []
        for i, op in enumerate(node.ops):
            fn = _CMP.get(type(op))
            if fn is None:
                raise self.fail(f"comparison {type(op).__name__} is not allowed", node)
            lt, rt = typed[i][1], typed[i + 1][1]
            at = node.comparators[i]  # errors point at the right operand
            if isinstance(op, ast.In | ast.NotIn):
                if not _compatible(rt, LIST) and not _compatible(rt, STRING):
                    raise self.fail(f"'in' needs a list or text on its right, not {_name(rt)}", at)
            elif isinstance(op, ast.Eq | ast.NotEq):
                if not _compatible(lt, rt):
                    raise self.fail(f"comparing {_name(lt)} with {_name(rt)} is always false", at)
            elif not (_compatible(lt, rt) and {lt, rt} - {ANY, _NULL} <= {NUMBER} | {STRING} and lt != BOOL != rt):
                raise self.fail(f"cannot order {_name(lt)} and {_name(rt)}", at)
            ops.append(fn)
        operands = [t[0] for t in typed]
        if len(ops) == 1:
            left, right, only = operands[0], operands[1], ops[0]
            return (lambda ctx: only(left(ctx), right(ctx))), BOOL

        def chain(ctx: EvalContext) -> bool:
            values = [o(ctx) for o in operands]
            return all(op(values[i], values[i + 1]) for i, op in enumerate(ops))

        return chain, BOOL

    def _IfExp(self, node: ast.IfExp, depth: int) -> Typed:
        (test, _), (body, bt), (orelse, ot) = (self.compile(n, depth) for n in (node.test, node.body, node.orelse))
        if not _compatible(bt, ot):
            raise self.fail(f"both branches must have one type, got {_name(bt)} and {_name(ot)}", node)
        kind = ot if bt == _NULL else bt
        return (lambda ctx: body(ctx) if test(ctx) else orelse(ctx)), kind

    def _Call(self, node: ast.Call, depth: int) -> Typed:
        if not isinstance(node.func, ast.Name) or node.keywords:
            raise self.fail("only calls like name(arg, ...) to known functions are allowed", node)
        spec = FUNCTIONS.get(node.func.id)
        if spec is None:
            raise self.fail(f"unknown function {node.func.id!r}", node)
        if not spec.min_args <= len(node.args) <= spec.max_args:
            raise self.fail(
                f"{node.func.id}() takes {spec.min_args}..{spec.max_args} arguments, got {len(node.args)}", node
            )
        args = []
        for i, arg in enumerate(node.args):
            compiled, kind = self.compile(arg, depth)
            expected = spec.args[min(i, len(spec.args) - 1)]
            if not _compatible(kind, expected):
                raise self.fail(f"argument {i + 1} of {node.func.id}() must be {expected}, not {_name(kind)}", arg)
            args.append(compiled)
        fn = spec.fn

        def call(ctx: EvalContext) -> Any:
            try:
                return fn(*(a(ctx) for a in args))
            except (TypeError, ValueError, OverflowError):
                return None

        return call, spec.result

    def _Name(self, node: ast.Name, depth: int) -> Typed:
        return self._path(node, (node.id,))

    def _Attribute(self, node: ast.Attribute, depth: int) -> Typed:
        parts: list[str] = []
        current: ast.AST = node
        while isinstance(current, ast.Attribute):
            parts.append(current.attr)
            current = current.value
        if not isinstance(current, ast.Name):
            raise self.fail("attributes are only allowed on field paths", node)
        parts.append(current.id)
        return self._path(node, tuple(reversed(parts)))

    def _walk(
        self, node: ast.AST, root: Mapping[str, FieldType] | None, path: tuple[str, ...], label: str
    ) -> FieldType:
        """The type at ``path`` inside ``root`` (None: free-form, so any)."""
        kind: FieldType = dict(root) if root is not None else ANY
        for part in path:
            if kind == ANY:
                return ANY
            if not isinstance(kind, Mapping) or part not in kind:
                raise self.fail(f"unknown field {label!r}", node)
            kind = kind[part]
        return kind

    def _path(self, node: ast.AST, path: tuple[str, ...]) -> Typed:
        label = ".".join(path)
        if any(p.startswith("_") for p in path):
            raise self.fail(f"name {label!r} is not allowed (leading underscore)", node)
        head = path[0]
        if len(path) == 1 and head in _LITERAL_NAMES:
            literal = _LITERAL_NAMES[head]
            return (lambda ctx: literal), _literal_type(literal)
        if head == "lists":
            if len(path) != 2 or path[1] not in self.scope.lists:
                raise self.fail(f"unknown list {'.'.join(path[1:])!r}", node)
            name = path[1]
            return (lambda ctx: ctx.list_(name)), LIST
        if head == "data":
            if len(path) < 2:
                raise self.fail("use a field of data, e.g. data.amount", node)
            kind = self._walk(node, self.scope.data_fields, path[1:], label)
            self.fields.add(path)
            return (lambda ctx: ctx.field(path)), _leaf(kind)
        if len(path) == 1 and head in ENVELOPE_FIELDS:
            self.fields.add(path)
            return (lambda ctx: ctx.field(path)), ENVELOPE_TYPES[head]
        if head in self.scope.features:
            ftype = self.scope.features[head]
            self.features.add(head)
            if len(path) == 1:
                return (lambda ctx: ctx.feature(head)), _leaf(ftype)
            if not isinstance(ftype, Mapping) or len(path) != 2 or path[1] not in ftype:
                raise self.fail(f"feature {head!r} has no field {path[1]!r}", node)
            sub = path[1]
            return (lambda ctx: _get(ctx.feature(head), sub)), ftype[sub]
        if head in self.scope.steps:
            return self._step(node, path, label)
        raise self.fail(f"unknown name {label!r} (not an event field, feature, list or step)", node)

    def _step(self, node: ast.AST, path: tuple[str, ...], label: str) -> Typed:
        name, rest = path[0], path[1:]
        if not rest:
            raise self.fail(f"use a field of step {name!r}, e.g. {name}.occurred_at", node)
        if rest[0] == "data":
            kind = self._walk(node, self.scope.steps[name], rest[1:], label) if len(rest) > 1 else ANY
        elif len(rest) == 1 and rest[0] in ENVELOPE_TYPES:
            kind = ENVELOPE_TYPES[rest[0]]
        else:
            raise self.fail(f"unknown field {label!r}", node)
        return (lambda ctx: ctx.step(name, rest)), _leaf(kind)


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else None


def _leaf(kind: FieldType) -> FieldType:
    return ANY if isinstance(kind, Mapping) else kind


def _name(kind: FieldType) -> str:
    return "object" if isinstance(kind, Mapping) else ("null" if kind == _NULL else kind)


def compile_expression(source: str, scope: Scope, *, condition: bool = False, strict: bool = True) -> Expression:
    """Parse, check and compile ``source``. Raises ExpressionError naming the position.

    With ``condition``, the expression must be a yes/no test (not a number or text); without
    ``strict`` (a stored pack, read as it came), checks added since are left out.
    """
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
    compiler = _Compiler(source, scope, strict=strict)
    evaluate, kind = compiler.compile(tree.body)
    if condition and kind in (NUMBER, STRING, LIST):
        raise ExpressionError(f"a condition must be true or false, but this is a {kind}", source)
    return Expression(source, evaluate, kind, frozenset(compiler.features), frozenset(compiler.fields), compiler.nodes)


def walk(value: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` inside nested dicts, or None where the path breaks off."""
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class DictContext:
    """An :class:`EvalContext` over plain mappings; for tests and ``rules test``."""

    def __init__(
        self,
        fields: Mapping[str, Any],
        features: Mapping[str, Any] | None = None,
        lists: Mapping[str, frozenset[Any]] | None = None,
        steps: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self._fields = fields
        self._features = features or {}
        self._lists = lists or {}
        self._steps = steps or {}

    def field(self, path: tuple[str, ...]) -> Any:
        return walk(self._fields, path)

    def feature(self, name: str) -> Any:
        return self._features.get(name)

    def list_(self, name: str) -> frozenset[Any]:
        return self._lists.get(name, frozenset())

    def step(self, name: str, path: tuple[str, ...]) -> Any:
        return walk(self._steps.get(name), path)
