"""The storage the alert pipeline and the API need, as small Protocols. SQLite/PostgreSQL
(``store/``) and DynamoDB (``runtimes/aws/``) implement them; none of them decides anything
about alerts (that is :mod:`~ringfence.alerts.lifecycle`, :mod:`~ringfence.alerts.muting`
and :mod:`~ringfence.alerts.delivery`).

Cursors are opaque strings an adapter gave out; one it did not is a RequestError (400).
"""

from __future__ import annotations

from typing import Protocol

from ringfence.alerts.model import Action, Alert, AlertQuery, Notification
from ringfence.alerts.silences import Silence


class AlertRepository(Protocol):
    """Alerts as people see and change them."""

    def list_alerts(self, query: AlertQuery) -> tuple[list[Alert], str | None]:
        """One page, newest first, and the cursor of the next page (None: the last page)."""
        ...

    def get_alert(self, alert_id: str) -> Alert:
        """With its history and comments; NotFound if there is none."""
        ...

    def transition(self, alert_id: str, action: Action, actor: str, reason: str, now: float) -> Alert:
        """Acknowledge or resolve (history, audit, the pipeline told); Conflict if not allowed."""
        ...


class SilenceStore(Protocol):
    def create_silence(
        self, matchers: list[str], starts_at: float, ends_at: float, actor: str, comment: str, now: float
    ) -> Silence:
        """Store an acceptable silence (see :func:`~ringfence.alerts.silences.check_silence`), audited."""
        ...

    def silences(self, current_at: float | None = None) -> list[Silence]:
        """Every silence newest first, or with ``current_at`` those not expired then."""
        ...

    def expire_silence(self, silence_id: str, actor: str, now: float) -> Silence:
        """End an active or pending silence now (audited); NotFound if there is none."""
        ...


class NotificationLog(Protocol):
    """Each notification owed to a receiver, sent once (Alertmanager's ``nflog``)."""

    def notifications(
        self, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[Notification], str | None]:
        """One page, newest first, and the cursor of the next page."""
        ...

    def count_by_status(self) -> dict[str, int]: ...

    def redrive(self, notification_id: str, actor: str, now: float) -> Notification:
        """A dead letter back to pending, attempts reset (audited); NotFound if it is not dead."""
        ...
