"""Every command's ``--help`` reads as a newcomer expects: ``FILE`` for an argument, flags
without a value type, and the defaults that help texts state (the settings' own)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from ringfence.cli.main import app
from ringfence.config import DEFAULT_DATA_DIR, DEFAULT_HOST, DEFAULT_PORT


def commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and group, by its path (typer's click objects, duck-typed across versions)."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, (*path, name))


ROOT = typer.main.get_command(app)
ALL = dict(commands(ROOT))


def help_of(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], prog_name="ringfence")
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())  # wrapping apart


@pytest.mark.parametrize("path", sorted(ALL), ids=lambda p: " ".join(p) or "ringfence")
def test_help_shows_arguments_flags_and_stated_defaults_plainly(path: tuple[str, ...]) -> None:
    text = help_of(path)
    assert not re.search(r"<\w+[^>]*>|\{\w+\}", text), text  # no `<bool>`, `<str>` or `{file}`
    for param in ALL[path].params:
        if param.param_type_name == "argument":
            assert (param.metavar or param.name or "").upper() in text.split("Usage:")[1].split()[2:]
        help_text = getattr(param, "help", None) or ""
        for stated in re.findall(r"\[default: [^\]]+\]", help_text):
            assert stated in text, f"{' '.join(path)} {param.name}: {stated} is not shown"


def test_up_shows_where_it_listens_and_keeps_its_files_by_default() -> None:
    text = help_of(("up",))
    assert f"--host TEXT Interface to listen on [default: {DEFAULT_HOST}]" in text
    assert f"--port INTEGER Port to listen on [default: {DEFAULT_PORT}]" in text
    assert f"[default: ./{DEFAULT_DATA_DIR}]" in text
    assert "--demo Also generate" in text
    assert "--help Show this message and exit." in text


def test_replay_usage_names_its_file() -> None:
    assert "Usage: ringfence replay [OPTIONS] FILE" in help_of(("replay",))
