"""The storage the alert pipeline and the API need, as small Protocols. SQLite/PostgreSQL
(``store/``) and DynamoDB (``runtimes/aws/``) implement them; none of them decides anything
about alerts (that is :mod:`~ringfence.alerts.lifecycle`, :mod:`~ringfence.alerts.muting`,
:mod:`~ringfence.alerts.grouping` and :mod:`~ringfence.alerts.delivery`).

Cursors are opaque strings an adapter gave out; one it did not is a RequestError (400).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from ringfence.alerts.config import InhibitRule
from ringfence.alerts.delivery import NextStep
from ringfence.alerts.grouping import GroupState
from ringfence.alerts.model import Action, Alert, AlertChange, AlertQuery, AlertSummary, Notification
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
        """Store an acceptable silence (see :func:`~ringfence.alerts.silences.check_silence`),
        audited; TooManySilences past ``MAX_CURRENT_SILENCES`` active or pending ones."""
        ...

    def silences(self, limit: int, cursor: str | None, now: float) -> tuple[list[Silence], str | None]:
        """One page of the silences kept at ``now`` (current ones, and those ended within
        :data:`~ringfence.alerts.silences.SILENCE_KEPT_S`), newest first, and the cursor of the
        next page (None: there is no more); InvalidCursor for a cursor it did not give out."""
        ...

    def current_count(self, now: float) -> int:
        """How many silences are not expired at ``now`` (active or pending)."""
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

    def notification(self, notification_id: str) -> Notification | None:
        """The notification of that id, or None."""
        ...

    def redrive(self, notification_id: str, actor: str, now: float) -> Notification:
        """A dead letter back to pending, attempts reset (audited); NotFound if it is not dead."""
        ...


@dataclass(frozen=True)
class OutboxEntry:
    """A change of an alert, written with the change itself, for the pipeline to take."""

    seq: int
    alert_id: str
    change: AlertChange


class PipelineBatch(Protocol):
    """The pipeline's state inside one unit of work (a transaction where the store has them):
    what a stage reads and writes through it is kept together, or not at all."""

    # -- the outbox of alert changes
    def changes(self, limit: int) -> list[OutboxEntry]:
        """The oldest changes not yet consumed."""
        ...

    def consumed(self, through_seq: int) -> None:
        """Every change up to ``through_seq`` is handled: never hand it out again."""
        ...

    def announce(self, alert_id: str, change: AlertChange, now: float) -> None:
        """Add a change of the pipeline's own (an auto-resolve) to the outbox."""
        ...

    # -- alerts, as the pipeline sees and changes them
    def alert(self, alert_id: str) -> AlertSummary | None: ...

    def set_status(self, alert_id: str, from_status: str, to_status: str, action: str, reason: str, now: float) -> bool:
        """Move the alert from ``from_status`` (only if it is still there) with a history entry; True if moved."""
        ...

    def note(self, alert_ids: Sequence[str], action: str, reason: str, now: float) -> None:
        """A history entry without a change of status, on each alert."""
        ...

    def current_silences(self, now: float) -> list[Silence]:
        """The silences not expired at ``now``."""
        ...

    def inhibition_sources(self, rule: InhibitRule, labels: Mapping[str, str]) -> Iterable[Mapping[str, str]]:
        """See :class:`~ringfence.alerts.muting.InhibitionSources`."""
        ...

    def quiet_alerts(self, rule_id: str, since: float) -> list[tuple[str, str]]:
        """(id, status) of the rule's active alerts that have not changed since ``since``."""
        ...

    # -- groups (route x receiver x group-by values)
    def group(self, key: str) -> GroupState | None: ...

    def save_group(self, group: GroupState) -> None: ...

    def drop_group(self, key: str) -> None: ...

    def groups_with(self, alert_id: str) -> list[GroupState]: ...

    def in_group(self, key: str, alert_id: str) -> bool:
        """Whether ``alert_id`` is in group ``key`` or one of its parts (``key.1``, ``key.2``…)."""
        ...

    def due_groups(self, now: float, limit: int) -> list[GroupState]: ...

    # -- the notification log
    def add_notification(
        self, notification_id: str, group_key: str, receiver: str, payload: dict[str, Any], now: float
    ) -> None:
        """Owe a notification, once: adding an id already there changes nothing."""
        ...

    def claim(self, notification_id: str, now: float, lease_s: float) -> bool:
        """Take a due notification for ``lease_s`` (another dispatcher skips it meanwhile); True
        if this caller has it. A dispatcher that dies holding it lets it come due again."""
        ...

    def supersede(self, notification_id: str, by: str, now: float) -> Notification | None:
        """If ``notification_id`` is still pending, it is superseded by notification ``by`` of
        its group (never sent, nor due again); returns it as it was. None: it was not pending."""
        ...

    def record_attempt(self, notification_id: str, step: NextStep, now: float) -> bool:
        """Keep what an attempt at ``now`` decided (sent, pending again, or dead); False, keeping
        nothing, if the notification was superseded meanwhile and the attempt did not deliver it."""
        ...

    def forget_sent(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` notifications sent, or superseded, before ``before`` (dead
        letters stay until re-driven); how many."""
        ...

    def forget_silences(self, ended_before: float, limit: int) -> int:
        """Delete up to ``limit`` silences that ended before ``ended_before``; how many."""
        ...


class PipelineStore(Protocol):
    """What the :class:`~ringfence.alerts.dispatcher.Dispatcher` keeps its state in."""

    def pipeline(self) -> AbstractContextManager[PipelineBatch]:
        """One unit of work on the pipeline's state, committed when the block ends without error."""
        ...

    def due_notifications(
        self, now: float, limit: int, *, receivers: Sequence[str] = (), each: int = 0
    ) -> list[Notification]:
        """Pending notifications due at ``now``, the longest due first (``limit`` of them), and
        besides each of ``receivers``' ``each`` longest due (so no receiver's backlog hides
        another's)."""
        ...
