"""The server's log lines: no card number in any of them, whoever logs it (a library's exception
quoting a caller's path, say), and no receiver URL logged per request by httpx."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import pytest

from ringfence.cli.logs import configure_logging


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("info", json=True)
    try:
        yield out
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_a_card_number_in_a_message_or_an_exception_is_starred_out(captured: io.StringIO) -> None:
    log = logging.getLogger("ringfence.test")
    log.error("unhandled error on GET /static/card-4111111111111111-x.js")
    try:
        raise OSError("File name too long: '/static/card-4111 1111 1111 1111.js'")
    except OSError:
        log.exception("failed")
    text = captured.getvalue()
    assert "4111111111111111" not in text
    assert "4111 1111 1111 1111" not in text
    assert "unhandled error on GET /static/card-****************-x.js" in text
    assert "File name too long" in text  # the rest of the line stays


def test_httpx_request_lines_are_not_logged(captured: io.StringIO) -> None:
    logging.getLogger("httpx").info("HTTP Request: POST https://hooks.slack.com/services/T0/B0/secret")
    logging.getLogger("httpx").warning("a warning still is")
    text = captured.getvalue()
    assert "secret" not in text
    assert "a warning still is" in text


def test_handlers_ringfence_does_not_format_get_the_filter_too() -> None:
    """On a review: Lambda's handler (and the ingest worker's stderr) took log lines unredacted."""
    from ringfence.events.sensitive import NoCardNumbers, redact_logs

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger = logging.getLogger("ringfence.test.lambda")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        redact_logs(logger)
        redact_logs(logger)  # once only
        assert sum(isinstance(f, NoCardNumbers) for f in handler.filters) == 1
        logger.warning("poison record: %s", "card 4111111111111111")
        try:
            raise ValueError("value 4111-1111-1111-1111")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert "4111111111111111" not in text
    assert "4111-1111-1111-1111" not in text
    assert "poison record: card ****************" in text
    assert "ValueError" in text
