"""Logging for the CLI: JSON lines (structlog) when not on a terminal, readable otherwise."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from ringfence.events.sensitive import without_card_number


def configure_logging(level: str = "info", json: bool | None = None) -> None:
    """Route stdlib and structlog records through one formatter on stderr."""
    json = not sys.stderr.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, no_card_numbers, renderer],
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # the access log, and httpx's line per request: a receiver's URL may hold its credential
    # (a Slack incoming webhook's path is one)
    for name in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def no_card_numbers(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Star out the digits of any text of a log line that holds a card number (what
    :class:`~ringfence.events.sensitive.NoCardNumbers` does for other handlers): a request's path
    or a library's exception (a file name, a value it quotes) may carry one from a caller."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = without_card_number(value)
    return event
