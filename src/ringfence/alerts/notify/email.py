"""Email through SMTP (optionally STARTTLS and login), plain text and HTML."""

from __future__ import annotations

import contextlib
import html
import smtplib
import socket
import ssl
import threading
import time
from email.message import EmailMessage
from typing import Any

from ringfence.alerts.config import EmailDoc
from ringfence.alerts.notify.base import Delivery, Outcome, one_line
from ringfence.config import secret


def email_message(payload: dict[str, Any], options: EmailDoc) -> EmailMessage:
    alerts = payload["alerts"]
    message = EmailMessage()
    subject = f"[Ringfence {payload['status'].upper()}] {len(alerts)} alert(s): {alerts[0]['title']}"
    message["Subject"] = header_text(subject)[:200]
    message["From"] = options.sender
    message["To"] = ", ".join(options.to)
    message["X-Ringfence-Notification-Id"] = payload["notification_id"]
    lines = [  # a producer's text on a line of its own: no line it adds (an "APPROVED" of its own)
        f"{a['severity'].upper()} {a['status']}: {one_line(a['title'])}\n  {one_line(a['summary'])}\n"
        f"  rule {a['rule_id']}, alert {a['id']}"
        for a in alerts
    ]
    message.set_content("\n\n".join(lines) + "\n")
    rows = "".join(
        f"<tr><td>{html.escape(a['severity'])}</td><td>{html.escape(a['status'])}</td>"
        f"<td><b>{html.escape(one_line(a['title']))}</b><br>{html.escape(one_line(a['summary']))}</td>"
        f"<td>{html.escape(a['id'])}</td></tr>"
        for a in alerts
    )
    message.add_alternative(f"<html><body><table>{rows}</table></body></html>", subtype="html")
    return message


def header_text(text: str) -> str:
    """A producer's text as a header's: on one line (a header holding a line break cannot be
    built), and with no RFC 2047 encoded word (``=?charset?q?...?=``), which the email package
    decodes as it takes the header: one carrying an encoded CRLF added headers and a body of
    a producer's own (a Reply-To, "All clear"), and one decoding to a lone surrogate made the
    group's email unbuildable (a hostile test). ``=?`` is written ``= ?``: text, never a word."""
    return one_line(text).replace("=?", "= ?")


class EmailNotifier:
    kind = "email"

    def __init__(self, name: str, options: EmailDoc) -> None:
        self.name = name
        self._options = options
        self._password = secret(options.password_env) if options.password_env else None

    def send(self, payload: dict[str, Any], notification_id: str, now: float) -> Delivery:
        o = self._options
        try:
            # the watchdog outside: smtplib's QUIT, as the SMTP block ends, is bounded by it too
            with _Watchdog(time.monotonic() + o.timeout_s) as watchdog, smtplib.SMTP(timeout=o.timeout_s) as smtp:
                watchdog.smtp = smtp
                smtp.connect(o.host, o.port)
                watchdog.check()  # its time may have run out while it connected
                if o.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if o.username and self._password is not None:
                    smtp.login(o.username, self._password)
                smtp.send_message(email_message(payload, o))
        except smtplib.SMTPResponseException as exc:
            outcome = Outcome.RETRY if exc.smtp_code >= 400 and exc.smtp_code < 500 else Outcome.FAILED
            return Delivery(outcome, f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"[:300])
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            return Delivery(Outcome.RETRY, f"{type(exc).__name__}: {exc}"[:300])
        return Delivery(Outcome.SENT, f"to {len(o.to)} recipient(s)")


class _Watchdog:
    """Ends an SMTP conversation at ``deadline`` (``time.monotonic()``): smtplib's timeout bounds
    each socket operation, and a server answering a byte at a time would hold the send (and the
    dispatcher's pass) for as long as it liked. Shutting the socket down ends a blocked read at
    once; the send then fails as a disconnection, retried."""

    def __init__(self, deadline: float) -> None:
        self.smtp: smtplib.SMTP | None = None
        self.fired = False
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._cut)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def _cut(self) -> None:
        self.fired = True
        sock = self.smtp.sock if self.smtp is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                # the plain socket's shutdown: SSLSocket's would drop its TLS state first, and a
                # write racing it could go out in clear
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def check(self) -> None:
        """TimeoutError if the deadline passed before there was a socket to cut."""
        if self.fired:
            raise TimeoutError("the SMTP server took longer than timeout_s")
