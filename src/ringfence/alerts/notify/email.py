"""Email through SMTP (optionally STARTTLS and login), plain text and HTML."""

from __future__ import annotations

import html
import smtplib
import ssl
from email.message import EmailMessage
from typing import Any

from ringfence.alerts.config import EmailDoc
from ringfence.alerts.notify.base import Delivery, Outcome
from ringfence.config import secret


def email_message(payload: dict[str, Any], options: EmailDoc) -> EmailMessage:
    alerts = payload["alerts"]
    message = EmailMessage()
    message["Subject"] = f"[Ringfence {payload['status'].upper()}] {len(alerts)} alert(s): {alerts[0]['title']}"[:200]
    message["From"] = options.sender
    message["To"] = ", ".join(options.to)
    message["X-Ringfence-Notification-Id"] = payload["notification_id"]
    lines = [
        f"{a['severity'].upper()} {a['status']}: {a['title']}\n  {a['summary']}\n  rule {a['rule_id']}, alert {a['id']}"
        for a in alerts
    ]
    message.set_content("\n\n".join(lines) + "\n")
    rows = "".join(
        f"<tr><td>{html.escape(a['severity'])}</td><td>{html.escape(a['status'])}</td>"
        f"<td><b>{html.escape(a['title'])}</b><br>{html.escape(a['summary'])}</td><td>{html.escape(a['id'])}</td></tr>"
        for a in alerts
    )
    message.add_alternative(f"<html><body><table>{rows}</table></body></html>", subtype="html")
    return message


class EmailNotifier:
    kind = "email"

    def __init__(self, name: str, options: EmailDoc) -> None:
        self.name = name
        self._options = options
        self._password = secret(options.password_env) if options.password_env else None

    def send(self, payload: dict[str, Any], notification_id: str, now: float) -> Delivery:
        o = self._options
        try:
            with smtplib.SMTP(o.host, o.port, timeout=o.timeout_s) as smtp:
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
