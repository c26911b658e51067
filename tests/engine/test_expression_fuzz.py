"""Fuzzing the expression loader and evaluator: random input is a load error, never a crash."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringfence.engine.expressions import DictContext, Scope, compile_expression
from ringfence.engine.schema import data_schema
from ringfence.errors import ExpressionError

SCOPE = Scope(data_schema(["card.authorization"]), {"n": "number", "s": "string"}, frozenset({"l"}), {})
CTX = DictContext(
    {"data": {"amount": 5.0, "currency": "EUR", "merchant": {"country": "FR"}}},
    {"n": 3, "s": "x"},
    {"l": frozenset({"FR"})},
)
TOKENS = [
    "data.amount",
    "data.currency",
    "data.merchant.country",
    "n",
    "s",
    "lists.l",
    "1",
    "0",
    "-1",
    "2.5",
    "'FR'",
    "null",
    "true",
    "false",
    "(",
    ")",
    "[",
    "]",
    ",",
    "+",
    "-",
    "*",
    "/",
    "%",
    "**",
    "<",
    "<=",
    ">",
    ">=",
    "==",
    "!=",
    "in",
    "not",
    "and",
    "or",
    "if",
    "else",
    "abs(",
    "max(",
    "lower(",
    "distance_km(",
    "__class__",
    ".",
    "__import__(",
    "lambda",
    ":",
    "x",
    "[0]",
    "'a' * 99999",
    "9" * 30,
    "@",
    ";",
    "\\",
    "\n",
]
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(source: str) -> None:
    try:
        expr = compile_expression(source, SCOPE)
    except ExpressionError:
        return
    expr.evaluate(CTX)  # a loaded expression evaluates without raising


@SETTINGS
@given(st.lists(st.sampled_from(TOKENS), max_size=25).map(" ".join))
def test_token_soup_never_crashes_the_loader(source: str) -> None:
    check(source)


@SETTINGS
@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes_the_loader(source: str) -> None:
    check(source)


numbers = st.sampled_from(["data.amount", "n", "1", "2.5", "-3"])
leaves = st.one_of(numbers, st.sampled_from(["data.currency", "s", "'EUR'", "null", "true"]))
expressions = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "%", "<", ">=", "==", "!=", "and", "or"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        inner.map(lambda e: f"not {e}"),
        st.tuples(inner, inner).map(lambda t: f"max({t[0]}, {t[1]})"),
        st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
    ),
    max_leaves=30,
)


@SETTINGS
@given(expressions)
def test_well_formed_expressions_load_or_fail_with_a_type_error(source: str) -> None:
    check(source)
