"""Test helpers shared between test modules live in ``tests/helpers/``: no test module or conftest
imports another, and the helpers import nothing else from ``tests``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, dotted name) of each import in ``source``, a module of ``package``; relative imports resolved."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def forbidden(name: str) -> bool:
    """An import from ``tests`` that is not of the shared helpers."""
    in_tests = name == "tests" or name.startswith("tests.")
    return in_tests and not (name == "tests.helpers" or name.startswith("tests.helpers."))


def test_only_the_shared_helpers_are_imported_from_tests() -> None:
    wrong = [
        f"{path.relative_to(TESTS.parent)}:{line}: {name}"
        for path in sorted(TESTS.rglob("*.py"))
        for line, name in imported_modules(path.read_text(), ".".join(path.relative_to(TESTS.parent).parent.parts))
        if forbidden(name)
    ]
    assert wrong == [], "import what test modules share from tests/helpers/ only:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("from tests.api.test_events_api import post", "tests.api.test_events_api.post"),
        ("import tests.conftest", "tests.conftest"),
        ("from tests import conftest", "tests.conftest"),
        ("from . import test_events_api", "tests.api.test_events_api"),
        ("from ..kafka.conftest import KafkaStack", "tests.kafka.conftest.KafkaStack"),
        ("def f():\n    from tests.servers import MotoServer", "tests.servers.MotoServer"),
    ],
)
def test_imports_of_other_test_modules_are_found_however_written(source: str, name: str) -> None:
    (found,) = imported_modules(source, "tests.api")
    assert found[1] == name
    assert forbidden(name)


@pytest.mark.parametrize(
    "source",
    ["from tests.helpers.http import post", "from tests import helpers", "from ..helpers import kafka", "import os"],
)
def test_imports_of_the_shared_helpers_and_other_packages_are_allowed(source: str) -> None:
    assert not any(forbidden(name) for _, name in imported_modules(source, "tests.api"))
