"""What a receiver answers, and what a producer's text makes of a message to people: at most
4 KB of an answer is read, never decompressed; Retry-After read as HTTP says or not at all;
Slack shows an alert's title and summary as text (no mention, link or bold of a producer's);
email and PagerDuty keep a producer's text on its line."""

from __future__ import annotations

import email.utils
import gzip
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ringfence.alerts.config import EmailDoc
from ringfence.alerts.notify.base import MAX_ANSWER_BYTES, Outcome, post_json, retry_after_s
from ringfence.alerts.notify.email import email_message
from ringfence.alerts.notify.pagerduty import pagerduty_event
from ringfence.alerts.notify.slack import slack_message

HOSTILE_ID = "<!channel><https://evil.example/phish|Click to verify> \u202eKP-gnp\u202c"
HOSTILE_PAYEE = (
    "pay_10\r\n*APPROVED by AML desk - no action needed* <!here> <https://evil.example|case CM-1234> <@U012>"
)


class Counted(httpx.SyncByteStream):
    """A body of ``chunks`` pieces of gzip, counting the pieces read."""

    def __init__(self, chunks: int) -> None:
        self.chunks, self.read = chunks, 0
        self.piece = gzip.compress(b"\0" * (1 << 20))[:65536]

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self.chunks):
            self.read += 1
            yield self.piece


class Raw(httpx.SyncByteStream):
    """A body streamed as it comes off the wire."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data


@pytest.mark.parametrize("status", [400, 503, 200])
def test_a_receivers_answer_is_read_to_4_kb_at_most_and_never_decompressed(status: int) -> None:
    """A receiver's 3 MB of gzip made 3 GB of the dispatcher's memory (a 4xx's text was read
    whole, decompressed), and took 11.7 s against a 5 s timeout."""
    body = Counted(1_000)

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["accept-encoding"] == "identity"
        return httpx.Response(status, headers={"content-encoding": "gzip"}, stream=body)

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        result = post_json(client, "http://receiver.test/hook", b"{}", {}, 5.0)
    assert body.read == (0 if status == 200 else 1 + MAX_ANSWER_BYTES // len(body.piece))
    assert result.outcome is {400: Outcome.FAILED, 503: Outcome.RETRY, 200: Outcome.SENT}[status]
    assert len(result.detail) < 300


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("\u00b2", None),
        ("\u0661\u0662", None),
        ("-5", None),
        ("soon", None),
        (None, None),
    ],
)
def test_retry_after_is_ascii_seconds(header: str | None, expected: float | None) -> None:
    """``Retry-After: \u00b2`` passed ``isdigit()`` and failed ``float()``: every attempt was an
    internal error until the notification was dead."""
    assert retry_after_s(header, 1_800_000_000.0) == expected


def test_retry_after_is_an_http_date_too() -> None:
    now = 1_800_000_000.0
    assert retry_after_s(email.utils.formatdate(now + 90, usegmt=True), now) == pytest.approx(90.0)
    assert retry_after_s(email.utils.formatdate(now - 90, usegmt=True), now) is None  # past: backoff applies


def payload() -> dict[str, Any]:
    alert = {
        "id": "al_0123456789abcdef01234567",
        "title": f"Transfer of 4900 EUR by {HOSTILE_ID}",
        "summary": f"Customer {HOSTILE_ID} sent 4900 EUR to payee {HOSTILE_PAYEE} in KP.",
        "severity": "high",
        "status": "open",
        "rule_id": "transfer_high_risk_country",
        "audience": "aml",
        "count": 1,
        "customer_id": HOSTILE_ID,
        "labels": {},
    }
    return {"status": "firing", "notification_id": "n1", "alerts": [alert]}


def mrkdwn_of(message: Any) -> Iterator[str]:
    """Every text of ``message`` that Slack reads as mrkdwn (the fallback ``text`` too)."""
    if isinstance(message, dict):
        if message.get("type") == "mrkdwn" or (
            "text" in message and isinstance(message["text"], str) and "blocks" in message
        ):
            yield message["text"]
        for value in message.values():
            yield from mrkdwn_of(value)
    elif isinstance(message, list):
        for value in message:
            yield from mrkdwn_of(value)


def test_slack_shows_a_producers_text_as_text() -> None:
    message = slack_message(payload())
    texts = list(mrkdwn_of(message))
    assert texts  # the fallback and Ringfence's own context
    for text in texts:
        assert "<!" not in text
        assert "<http" not in text
        assert "<@" not in text
        assert "\u202e" not in text
    shown = [b["text"] for b in message["blocks"] if b["type"] == "section"]
    assert all(t["type"] == "plain_text" for t in shown)
    assert "\r" not in json.dumps(shown)
    assert "\\n*APPROVED" not in json.dumps(shown)
    assert "APPROVED by AML desk" in shown[0]["text"]  # shown, as text


def test_email_and_pagerduty_keep_a_producers_text_on_its_line() -> None:
    options = EmailDoc(host="127.0.0.1", port=25, sender="rf@bank.test", to=["aml@bank.test"], timeout_s=5.0)
    message = email_message(payload(), options)
    text = message.get_body(("plain",)).get_content()
    assert not any(line.lstrip().startswith("*APPROVED") for line in text.splitlines())
    assert "\u202e" not in text
    html_part = message.get_body(("html",)).get_content()
    assert "\u202e" not in html_part
    assert "<!channel>" not in html_part
    event = pagerduty_event(payload()["alerts"][0], "key")
    assert "\u202e" not in event["payload"]["summary"]


def test_an_answers_text_is_kept_as_text_a_store_takes() -> None:
    """A 4xx's gzip body kept raw held NUL: PostgreSQL refused the pass's record of every send."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400, headers={"content-encoding": "gzip"}, stream=Raw(gzip.compress("no\0such\u2028hook".encode()))
        )

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        result = post_json(client, "http://receiver.test/hook", b"{}", {}, 5.0)
    assert result.outcome is Outcome.FAILED
    assert result.detail.startswith("HTTP 400: ")
    assert "\0" not in result.detail
    assert all(c == " " or c.isprintable() for c in result.detail)


def test_line_and_paragraph_separators_are_spaces_to_people() -> None:
    """U+2028 in a payee id made an email's Subject unbuildable: the AML email was a dead letter."""
    alert = payload()["alerts"][0] | {"title": "Mule fan-in to pay_\u2028x", "summary": "s\u2029t"}
    options = EmailDoc(host="127.0.0.1", port=25, sender="rf@bank.test", to=["aml@bank.test"], timeout_s=5.0)
    message = email_message({"status": "firing", "notification_id": "n1", "alerts": [alert]}, options)
    assert "\u2028" not in str(message["Subject"])
    slack = json.dumps(slack_message({"status": "firing", "alerts": [alert]}), ensure_ascii=False)
    assert "\u2028" not in slack
    assert "\u2029" not in slack


@pytest.mark.parametrize(
    "title",
    [
        "=?utf-8?q?x=0D=0AReply-To=3A_it-helpdesk=40attacker=2Eexample=0D=0A=0D=0AAll_clear?=",
        "=?utf-16?b?2D3d?=",  # decodes to a lone surrogate: the email could not be built at all
        "a =?us-ascii?Q?=0D=0ABcc:_x@attacker.example?= b",
    ],
)
def test_an_encoded_word_in_a_producers_text_adds_no_header_and_the_email_is_built(title: str) -> None:
    """A hostile test: the Subject had its line breaks taken out, but an RFC 2047 encoded word
    carrying an encoded CRLF was decoded by the email package as it took the header: a producer
    added a Reply-To and wrote the body people saw; another decoded to a lone surrogate and made
    the group's email (another producer's alert with it) a dead letter."""
    import email
    import email.policy

    alert = payload()["alerts"][0] | {"title": title}
    options = EmailDoc(host="127.0.0.1", port=25, sender="rf@bank.test", to=["aml@bank.test"], timeout_s=5.0)
    sent = email_message({"status": "firing", "notification_id": "n1", "alerts": [alert]}, options).as_bytes()
    received = email.message_from_bytes(sent, policy=email.policy.default)
    assert sorted(received.keys()) == sorted(
        ["Subject", "From", "To", "X-Ringfence-Notification-Id", "Content-Type", "MIME-Version"]
    )
    assert received["To"] == "aml@bank.test"
    subject = str(received["Subject"])
    assert "\r" not in subject
    assert "\n" not in subject
    assert "Reply-To" not in received
    assert "Bcc" not in received
    body = received.get_body(("plain",)).get_content()
    assert not body.startswith("All clear")
