"""Schemathesis hooks for ``test_openapi_fuzz`` (loaded through ``SCHEMATHESIS_HOOKS``): every
integer parameter of every operation is also sent the values a strict parser must refuse with a
400 (Unicode digits, signs, whitespace, huge numbers), as explicit examples, so each run tries
each of them whatever Hypothesis draws."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import schemathesis

OPENAPI = Path(__file__).resolve().parents[2] / "src" / "ringfence" / "api" / "openapi.json"
HOSTILE_INTEGERS = (
    "\u00b2",  # "²": str.isdigit() is True, int() refuses it
    "\u0661\u0662",  # Arabic-Indic "12": int() accepts it, the API documents ASCII digits
    "\uff11\uff12",  # full-width "12"
    "+5",
    "-5",
    " 5",
    "5 ",
    "1_0",
    "1e3",
    "9" * 5000,  # past int()'s 4300-digit limit
    str(2**64),
)
PATH_SAMPLES = {"customer_id": "cus_1", "alert_id": "al_none", "silence_id": "sil_none", "name": "blocked_merchants"}


def _integer_parameters() -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for path, operations in json.loads(OPENAPI.read_text())["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                schema = parameter.get("schema", {})
                if parameter.get("in") == "query" and (
                    schema.get("type") == "integer" or schema.get("pattern", "").startswith("^[0-9]")
                ):
                    found.setdefault((method.upper(), path), []).append(parameter["name"])
    return found


INTEGER_PARAMETERS = _integer_parameters()


@schemathesis.hook
def before_add_examples(context: Any, examples: list[Any]) -> None:
    """Add one case per (integer parameter, hostile value) of the operation."""
    operation = context.operation
    names = INTEGER_PARAMETERS.get((operation.method.upper(), operation.path), [])
    path_parameters = {
        name: PATH_SAMPLES.get(name, "x") for name in _placeholders(operation.path) if name in PATH_SAMPLES
    }
    for name in names:
        for value in HOSTILE_INTEGERS:
            examples.append(operation.Case(path_parameters=path_parameters, query={name: value}))


def _placeholders(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]
