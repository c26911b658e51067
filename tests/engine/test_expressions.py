"""The expression language: what it computes, and what it refuses to load."""

from __future__ import annotations

import re
from typing import Any

import pytest

from ringfence.engine.expressions import DictContext, Scope, compile_expression
from ringfence.engine.schema import data_schema
from ringfence.errors import ExpressionError

SCOPE = Scope(
    data_fields=data_schema(["card.authorization"]),
    features={"count_10m": "number", "last_lat": "number", "spend": {"mean": "number", "std": "number"}},
    lists=frozenset({"high_risk"}),
    steps={"reset": data_schema(["password.reset"])},
)
FIELDS = {
    "type": "card.authorization",
    "customer_id": "c1",
    "data": {"amount": 120.0, "currency": "EUR", "merchant": {"country": "IR"}, "approved": True},
}
CTX = DictContext(
    FIELDS,
    {"count_10m": 4, "last_lat": None, "spend": {"mean": 50.0, "std": 5.0}},
    {"high_risk": frozenset({"IR", "KP"})},
    {"reset": {"occurred_at": 100.0, "data": {"channel": "sms"}}},
)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("data.amount > 100", True),
        ("data.amount >= 100 and data.currency == 'EUR'", True),
        ("not data.approved or count_10m > 10", False),
        ("data.merchant.country in lists.high_risk", True),
        ("data.merchant.country not in ['FR', 'DE']", True),
        ("data.amount * 2 - 40 == 200", True),
        ("count_10m % 3", 1),
        ("10 < data.amount < 200", True),
        ("abs(-3) + max(1, 5)", 8),
        ("lower(data.currency) == 'eur'", True),
        ("distance_km(51.5, -0.12, 48.85, 2.35) > 300", True),
        ("data.amount > 100 if data.approved else false", True),
        ("last_lat > 0", False),  # missing values make comparisons false
        ("last_lat == null", True),
        ("count_10m == null", False),
        ("last_lat != 1", True),
        ("data.missing_nested.x == 1", False),
        ("(data.amount - spend.mean) / spend.std", 14.0),
        ("reset.occurred_at < 200 and reset.data.channel == 'sms'", True),
        ("count_10m / 0", None),
        ("'a' + 'b'", "ab"),
        ("true and not false", True),
    ],
)
def test_expressions_evaluate(source: str, expected: Any) -> None:
    scope = Scope(None, SCOPE.features, SCOPE.lists, SCOPE.steps) if "missing" in source else SCOPE
    assert compile_expression(source, scope).evaluate(CTX) == expected


def test_compiled_expressions_report_what_they_read() -> None:
    expr = compile_expression("count_10m > 3 and data.amount > 1", SCOPE)
    assert expr.features == {"count_10m"}
    assert ("data", "amount") in expr.fields


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("__import__('os').system('id')", "only calls like"),
        ("__import__('os')", "unknown function"),
        ("data.__class__", "leading underscore"),
        ("().__class__.__bases__", "attributes are only allowed on field paths"),
        ("[x for x in [1]]", "ListComp is not allowed"),
        ("lambda: 1", "Lambda is not allowed"),
        ("data.amount ** 99999999", "Pow is not allowed"),
        ("data['amount']", "Subscript is not allowed"),
        ("open('/etc/passwd')", "unknown function"),
        ("lower(data.currency).upper()", "only calls like"),
        ("data.nope > 1", "unknown field 'data.nope'"),
        ("velocity > 1", "unknown name 'velocity'"),
        ("data.currency in lists.nope", "unknown list"),
        ("abs(1, 2)", "takes 1..1 arguments"),
        ("abs(x=1)", "only calls like"),
        ("data.amount >", "syntax error"),
        ("a := 1", "syntax error"),
        ("", "empty"),
        ("(" * 50 + "1" + ")" * 50, "too deeply nested"),
        ("1+" * 450 + "1", "too deeply nested or too large"),
        ("x" * 3000, "longer than"),
        ("99999999999999999999999 > 1", "too large"),
        # type errors
        ("data.amount > 'abc'", "cannot order number and string"),
        ("data.currency == 3", "comparing string with number is always false"),
        ("data.approved + 1", "cannot apply Add to bool and number"),
        ("'a' * 3", "cannot apply Mult to string and number"),
        ("lower(data.amount)", "argument 1 of lower() must be string, not number"),
        ("data.amount in 5", "'in' needs a list or text"),
        ("spend.median > 1", "feature 'spend' has no field 'median'"),
        ("reset.data.nope == 1", "unknown field 'reset.data.nope'"),
        ("data.merchant.nope == 'x'", "unknown field 'data.merchant.nope'"),
        ("-data.currency", "cannot negate a string"),
    ],
)
def test_unsafe_or_unknown_expressions_are_load_errors(source: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=re.escape(message)):
        compile_expression(source, SCOPE)


def test_errors_name_the_column() -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression("data.amount > 1 and velocity > 2", SCOPE)
    assert info.value.column == 21


@pytest.mark.parametrize("source", ["data.amount", "data.currency", "count_10m + 1"])
def test_a_condition_must_be_true_or_false(source: str) -> None:
    with pytest.raises(ExpressionError, match="a condition must be true or false"):
        compile_expression(source, SCOPE, condition=True)
