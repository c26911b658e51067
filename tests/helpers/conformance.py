"""One interface over the alert pipeline of each runtime, for the runtime conformance suite
(``tests/conformance``): the embedded runtime's SQLite store, the kafka runtime's PostgreSQL
store and the aws runtime's DynamoDB alerts table, each with its dispatcher as that runtime
builds it, on a :class:`~ringfence.testing.FixedClock` that only the test moves.

Each harness feeds its store the way its runtime's processor does (:meth:`Harness.hit`),
changes alerts and silences the way its API does, steps its dispatcher by hand
(:meth:`Harness.step`), and reaches into its storage only to tamper with the audit trail.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Protocol

from ringfence.alerts.config import build_config
from ringfence.alerts.dispatcher import Dispatcher
from ringfence.alerts.model import Action, Alert, AlertChange, AlertQuery, Notification
from ringfence.alerts.ports import AlertRepository, NotificationLog, SilenceStore
from ringfence.alerts.silences import Silence
from ringfence.engine.rules import AlertSignal
from ringfence.metrics import Metrics
from ringfence.store import Checkpoint
from ringfence.store.audit import Verdict
from ringfence.store.notifications import SqlNotificationLog
from ringfence.store.postgres import PostgresStore
from ringfence.store.silences import SqlSilenceStore
from ringfence.store.sql import SqlStore
from ringfence.store.sqlite import SqliteStore
from ringfence.testing import FixedClock
from tests.helpers.aws import AUDIT_KEY

if TYPE_CHECKING:
    from ringfence.runtimes.aws.pipeline import AwsPipeline

# Where a runtime differs (its runs are strict xfails: see tests/conformance/conftest.py)

START = 1_800_000_000.0  # every harness's clock starts here
ANALYST = "analyst-1"  # the actor of people's changes


class Stepper(Protocol):
    """A runtime's dispatcher: one pass of its stages at its clock's time."""

    def step(self) -> object: ...

    def close(self) -> None: ...


class Harness(ABC):
    """The alert pipeline of one runtime. :meth:`configure` it (the alerting config, as YAML
    would give it) before the first :meth:`hit`."""

    name: str

    def __init__(self, repository: AlertRepository, silences: SilenceStore, notifications: NotificationLog) -> None:
        self.clock = FixedClock(START)
        self.repository = repository
        self.silence_store = silences
        self.notification_log = notifications
        self._dispatcher: Stepper | None = None

    # -- what each runtime does its own way

    @abstractmethod
    def _make_dispatcher(self, alerting: dict[str, Any]) -> Stepper: ...

    @abstractmethod
    def hit(self, signal: AlertSignal) -> None:
        """Commit ``signal`` as the runtime's processor does, the dispatcher told of the change."""

    @abstractmethod
    def audit_entries(self) -> list[dict[str, Any]]:
        """Every audit entry, newest first."""

    @abstractmethod
    def verify_audit(self) -> Verdict: ...

    @abstractmethod
    def tamper_audit(self, seq: int, actor: str) -> None:
        """Rewrite the actor of audit entry ``seq`` in storage, behind the runtime's back."""

    # -- the same for every runtime

    def configure(self, alerting: dict[str, Any]) -> None:
        self._dispatcher = self._make_dispatcher(alerting)

    @property
    def dispatcher(self) -> Stepper:
        assert self._dispatcher is not None, "configure() the harness first"
        return self._dispatcher

    def step(self, after: float = 0.0) -> None:
        """Move the clock on by ``after`` seconds, then run the dispatcher's stages once."""
        self.clock.advance(after)
        self.dispatcher.step()

    def alerts(self) -> list[Alert]:
        return self.repository.list_alerts(AlertQuery(limit=500))[0]

    def statuses(self) -> dict[str, str]:
        """Each alert's status, by id."""
        return {a.id: a.status for a in self.alerts()}

    def get(self, alert_id: str) -> Alert:
        return self.repository.get_alert(alert_id)

    def transition(self, alert_id: str, action: Action, reason: str = "") -> Alert:
        return self.repository.transition(alert_id, action, ANALYST, reason, self.clock.time())

    def create_silence(self, matchers: list[str], comment: str = "maintenance", lasts_s: float = 3600.0) -> Silence:
        now = self.clock.time()
        return self.silence_store.create_silence(matchers, now, now + lasts_s, ANALYST, comment, now)

    def silences(self, page_size: int = 100) -> list[Silence]:
        """Every silence kept, newest first, a page of ``page_size`` at a time."""
        found: list[Silence] = []
        cursor = None
        while True:
            page, cursor = self.silence_store.silences(page_size, cursor, self.clock.time())
            assert len(page) <= page_size
            found += page
            if cursor is None:
                return found

    def expire_silence(self, silence_id: str) -> Silence:
        return self.silence_store.expire_silence(silence_id, ANALYST, self.clock.time())

    def notifications(self, status: str | None = None) -> list[Notification]:
        """Every notification (of ``status``), newest first."""
        found: list[Notification] = []
        cursor = None
        while True:
            page, cursor = self.notification_log.notifications(status, 100, cursor)
            found += page
            if cursor is None:
                return found

    def redrive(self, notification_id: str) -> Notification:
        return self.notification_log.redrive(notification_id, ANALYST, self.clock.time())

    def close(self) -> None:
        """Close the dispatcher (whoever made the store closes it)."""
        if self._dispatcher is not None:
            self._dispatcher.close()


class SqlHarness(Harness):
    """The embedded (SQLite) or kafka (PostgreSQL) runtime: the processor commits signals
    with a checkpoint, the outbox in the same transaction; the dispatcher reads the outbox."""

    def __init__(self, name: str, store: SqlStore) -> None:
        super().__init__(store, SqlSilenceStore(store), SqlNotificationLog(store))
        self.name = name
        self.store = store
        self._offset = 0

    def _make_dispatcher(self, alerting: dict[str, Any]) -> Stepper:
        return Dispatcher(self.store, build_config(alerting), self.clock, Metrics())

    def hit(self, signal: AlertSignal) -> None:
        self._offset += 1
        self.store.commit_batch([signal], Checkpoint("conformance", self._offset), self.clock.time())

    def audit_entries(self) -> list[dict[str, Any]]:
        return self.store.list_audit(limit=1000)[0]

    def verify_audit(self) -> Verdict:
        return self.store.verify_audit()

    def tamper_audit(self, seq: int, actor: str) -> None:
        if isinstance(self.store, PostgresStore):
            import psycopg  # the postgres extra

            with psycopg.connect(self.store.dsn, autocommit=True) as conn:
                conn.execute("UPDATE audit SET actor = %s WHERE seq = %s", (actor, seq))
        else:
            assert isinstance(self.store, SqliteStore)
            self.store.conn().execute("UPDATE audit SET actor = ? WHERE seq = ?", (actor, seq))


def create_alerts_table(dynamodb: Any) -> str:
    """A fresh alerts table as the SAM template defines it; its name."""
    from ringfence.runtimes.aws.local import load_template

    props = load_template()["Resources"]["AlertsTable"]["Properties"]
    name = f"conformance-{uuid.uuid4().hex[:12]}"
    fields = ("KeySchema", "AttributeDefinitions", "BillingMode", "GlobalSecondaryIndexes")
    dynamodb.create_table(TableName=name, **{k: props[k] for k in fields})
    dynamodb.get_waiter("table_exists").wait(TableName=name)
    return name


class DynamoHarness(Harness):
    """The aws runtime: the shard processor applies signals to the alerts table and announces
    new alerts on SNS; the API announces acknowledgements and resolutions; SQS hands each
    announcement to the dispatcher's outbox. Here the announcements go straight to that outbox
    (:meth:`~ringfence.runtimes.aws.pipeline.AwsPipeline.receive`, as
    :meth:`~ringfence.runtimes.aws.dispatch.AlertDispatcher.handle_queue_event` does per message)."""

    name = "aws"

    def __init__(self, dynamodb: Any) -> None:
        from ringfence.runtimes.aws.alerts import AlertTable
        from ringfence.runtimes.aws.platform import AnnouncedAlerts

        self.table = AlertTable(dynamodb, create_alerts_table(dynamodb), AUDIT_KEY)
        super().__init__(AnnouncedAlerts(self.table, self._announce), self.table, self.table)
        self._ordinal = 0
        self._outbox: AwsPipeline | None = None

    def _make_dispatcher(self, alerting: dict[str, Any]) -> Stepper:
        from ringfence.runtimes.aws.dispatch import AlertDispatcher

        dispatcher = AlertDispatcher(self.table, build_config(alerting), clock=self.clock)
        self._outbox = dispatcher.pipeline
        return dispatcher

    def _announce(self, message: dict[str, Any]) -> None:
        assert self._outbox is not None, "configure() the harness first"
        self._outbox.receive(message["alert_id"], AlertChange(message["change"]))

    def hit(self, signal: AlertSignal) -> None:
        """As :meth:`~ringfence.runtimes.aws.processor.ShardProcessor._apply_signals` does."""
        self._ordinal += 1
        ordinal = f"{self._ordinal:012d}"
        applied = self.table.apply([(ordinal, signal)], "conformance", self.clock.time())
        if applied is not None and applied.owes_announcement:
            self._announce({"change": AlertChange.FIRING.value, "alert_id": applied.alert_id})
            self.table.mark_announced(applied.alert_id, ordinal)

    def audit_entries(self) -> list[dict[str, Any]]:
        return self.table.audit.list_audit(limit=1000)[0]

    def verify_audit(self) -> Verdict:
        return self.table.audit.verify()

    def tamper_audit(self, seq: int, actor: str) -> None:
        from ringfence.runtimes.aws.audit import BLOCK

        self.table.db.update_item(
            TableName=self.table.table,
            Key={"pk": {"S": f"audit|{seq // BLOCK}"}, "sk": {"S": f"{seq:020d}"}},
            UpdateExpression="SET actor = :a",
            ExpressionAttributeValues={":a": {"S": actor}},
        )


def webhook_alerting(url: str, **route: Any) -> dict[str, Any]:
    """An alerting config with one webhook receiver, ``hook`` (at ``url``/hook), that the root
    route sends everything to, grouped by customer and flushed at once unless ``route`` says
    otherwise."""
    return {
        "receivers": [{"name": "hook", "webhook": {"url": url + "/hook"}}],
        "route": {
            "receiver": "hook",
            "group_by": ["customer_id"],
            "group_wait": "0s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            **route,
        },
        "retry": {"base_delay": "1s", "max_delay": "10m", "max_attempts": 4},
    }
