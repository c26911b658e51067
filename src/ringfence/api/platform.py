"""The :class:`Platform` the HTTP API and the dashboard stand on: what they need from a runtime.

The embedded and kafka runtimes' platforms and the aws runtime's implement it; the API imports
none of them. A runtime says what it lacks: a capability it does not serve is ``None`` here
(:func:`served` turns that into NotSupported), or its method raises NotSupported. Either way the
API answers 501 ``not_available``, from one place (:func:`~ringfence.api.errors.handle_error`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

from ringfence.alerts.model import Alert, AlertQuery
from ringfence.alerts.ports import AlertRepository, NotificationLog, SilenceStore
from ringfence.alerts.stream import AlertStream
from ringfence.clock import Clock
from ringfence.config import Settings
from ringfence.engine.pack import RulePack
from ringfence.errors import NotSupported
from ringfence.events.fx import FxRate, FxTable
from ringfence.log.base import Record
from ringfence.metrics import Metrics
from ringfence.ratelimit import Buckets
from ringfence.store.base import LateEvent
from ringfence.store.packs import ListValues, PackVersion
from ringfence.store.quarantine import QuarantineEntry

T = TypeVar("T")


class AlertTriage(Protocol):
    """How people triage alerts beyond their lifecycle: counts, assignment, comments."""

    def count_alerts_by(self, query: AlertQuery) -> dict[str, dict[str, int]]:
        """The alerts ``query`` would list (its cursor and limit aside), by severity and by status."""
        ...

    def assign(self, alert_id: str, assignee: str, actor: str, reason: str, now: float) -> Alert: ...

    def comment(self, alert_id: str, text: str, actor: str, now: float) -> Alert: ...


class Records(Protocol):
    """What the store keeps beside alerts: the audit trail, late events, hit counts per rule."""

    def list_audit(self, limit: int, cursor: int | None) -> tuple[list[dict[str, Any]], int | None]: ...

    def list_late_events(self, limit: int, cursor: int | None) -> tuple[list[LateEvent], int | None]: ...

    def count_late_events(self) -> int: ...

    def rule_hits(self, since: float | None = None) -> dict[str, dict[str, int]]:
        """Hits per rule id and mode, all of them or those since ``since``."""
        ...


class EventLog(Protocol):
    """The log as the API reads it back: its head, events by offset, a customer's latest."""

    def head(self) -> int: ...

    def check(self) -> None:
        """StoreError if the log cannot take events any more (for readiness)."""
        ...

    def get(self, offset: int) -> Record | None:
        """The event at ``offset`` (an alert's evidence), None if retention removed it;
        TimeoutError if the log did not answer in time."""
        ...

    def recent_of_customer(self, customer_id: str, limit: int, scan: int) -> tuple[list[Record], int]:
        """The customer's newest events among the latest ``scan``, newest first, and the lowest
        offset searched (NotSupported where the log cannot be scanned)."""
        ...

    def lag_by_partition(self, processed: int) -> dict[int, int]:
        """Events not yet processed, per partition (``processed``: the processed offset)."""
        ...


class Quarantine(Protocol):
    """Events the engine or the state codec could not handle, set aside."""

    def entries(
        self, status: str | None, limit: int, cursor: int | None
    ) -> tuple[list[QuarantineEntry], int | None]: ...

    def counts(self) -> dict[str, int]: ...


class IngestReport(Protocol):
    """What became of each event of a body (DESIGN §5, ``POST /v1/events``)."""

    @property
    def accepted(self) -> int: ...

    @property
    def duplicates(self) -> int: ...

    @property
    def rejected(self) -> Sequence[Any]:
        """The events rejected, each with its errors."""
        ...

    def to_dict(self) -> dict[str, Any]: ...


class Ingest(Protocol):
    """Takes producers' bodies: validates them and makes their valid events durable."""

    def check_capacity(self, producer: str) -> None:
        """Raise OverloadedError when the platform sheds load (before the body is read), first
        for a ``producer`` (a key) sending more than its share."""
        ...

    def holding(self, producer: str) -> AbstractContextManager[Callable[[int], None]]:
        """A place for a request of ``producer`` (a key), held while its body is read and
        ingested (RequestError 429 past the key's bound), and what to call with each part of the
        body as it arrives (OverloadedError past the bound of every key's bytes)."""
        ...

    def stop_taking(self) -> None:
        """The server stops: requests not yet in their turn, and new ones, answer 503 now."""
        ...

    async def ingest(
        self,
        body: bytes,
        *,
        ndjson: bool,
        sources: frozenset[str] | None,
        producer: str,
        gone: Callable[[], Awaitable[None]] | None = None,
    ) -> IngestReport:
        """Validate ``body`` and write its valid events; ``sources``: those the caller may
        write (None: any); ``producer``: the caller's key; ``gone``: returns once the caller
        disconnects (a request still waiting is then dropped: ClientGone). Raises MalformedBody
        (TooManyEvents) or OverloadedError."""
        ...


class BacktestRun(Protocol):
    """A running rule back-test, bounded by its runtime whatever its reader does."""

    def answers(self) -> AsyncGenerator[dict[str, Any], None]:
        """``{"progress": …}`` lines, then one ``{"result": …}`` or ``{"error": {code, message}}``."""
        ...

    def kill(self) -> None:
        """Stop it now; its ``on_exit`` runs once it is gone."""
        ...

    async def stop(self) -> None:
        """Stop it and wait until it is gone."""
        ...


class Platform(Protocol):
    """What the API and the dashboard need from a runtime."""

    @property
    def runtime(self) -> str:
        """Its name ("embedded", "kafka", "aws"), as 501 answers say it."""
        ...

    @property
    def settings(self) -> Settings: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def accepting(self) -> bool:
        """Started and not stopping: it takes events (an embedded platform does while it still
        restores its state: the journal keeps them until it processes)."""
        ...

    @property
    def ready(self) -> bool:
        """Taking events and processing them: readiness probes answer 200."""
        ...

    def unready_reason(self) -> str | None:
        """Why, though :attr:`ready`, it should be sent no traffic now (its store failing, its
        disk nearly full); None when nothing is wrong. Readiness probes answer 503 with it."""
        ...

    def changes_refused(self) -> str | None:
        """Why changes people make to alerts and silences are refused now (the store's disk
        nearly full), or None."""
        ...

    def budget(self, kind: str, rate: float, burst: float) -> Buckets:
        """Buckets of ``kind`` that every API process of the platform shares and a restart keeps
        (a key's budget of changes: N processes must not make it N budgets)."""
        ...

    @property
    def pack(self) -> RulePack:
        """The rule pack it runs now."""
        ...

    @property
    def alerts(self) -> AlertRepository: ...

    @property
    def triage(self) -> AlertTriage | None: ...

    @property
    def silences(self) -> SilenceStore: ...

    @property
    def notifications(self) -> NotificationLog: ...

    @property
    def ingest(self) -> Ingest | None:
        """None: this service takes no events (the kafka runtime's ``serve api``), or not yet."""
        ...

    @property
    def log(self) -> EventLog | None: ...

    @property
    def records(self) -> Records | None: ...

    @property
    def quarantine(self) -> Quarantine | None: ...

    @property
    def stream(self) -> AlertStream | None:
        """Alert changes as they happen, for the dashboard's live view."""
        ...

    @property
    def metrics(self) -> Metrics | None: ...

    # -- the processors' progress through the log, and what they hold --

    def processed_offset(self) -> int: ...

    def lag(self) -> int:
        """Events in the log not yet processed."""
        ...

    def shared_totals(self) -> dict[str, float]:
        """Of ``/v1/stats``' totals (:class:`~ringfence.api.ops.Totals`' names), those a runtime of
        several processes reads where they all write; the serving process's own counters give
        the others. Empty where one process does all the work."""
        ...

    def customer_features(self, customer_id: str) -> tuple[float, dict[str, Any]]:
        """The customer's current feature values, and the event time they hold at."""
        ...

    # -- rules and lists --

    def active_pack(self) -> PackVersion | None:
        """The stored version of the pack it runs (None before one was stored)."""
        ...

    def check_pack(self, pack: RulePack) -> None:
        """Raise RulePackError if this runtime cannot run ``pack``, a valid pack (checked before
        it is stored: a stored pack is what every service takes up, and starts on)."""
        ...

    def dropped_state(self, pack: RulePack) -> list[str]:
        """The state names activating ``pack`` would drop (the features it changes or removes)."""
        ...

    def activate_pack(self, pack: RulePack, actor: str, now: float) -> PackVersion:
        """Store ``pack`` as the active version (audited) and hot-reload it."""
        ...

    def list_values(self, name: str) -> frozenset[str]: ...

    def put_list(self, name: str, values: list[str], actor: str, now: float) -> ListValues:
        """Replace list ``name``'s values (audited) and hand them to the rules."""
        ...

    # -- money --

    def fx_table(self) -> FxTable:
        """The rates ingest converts amounts into the reference currency with now."""
        ...

    def load_fx(self, rates: list[FxRate], actor: str, now: float) -> FxTable:
        """Store ``rates`` as the new table (audited); ingest converts with it from then on."""
        ...

    async def backtest(self, candidate: RulePack, limit: int, actor: str, on_exit: Callable[[], None]) -> BacktestRun:
        """Replay the latest ``limit`` stored events through the live pack and ``candidate``,
        within ``settings.backtest_time_budget_s``, audited as ``actor``'s before it starts (its
        hit counts are customers' data); ``on_exit`` runs once the run is gone."""
        ...

    # -- hand-offs to the runtime's workers --

    def notification_redriven(self) -> None:
        """A dead letter is pending again: wake whoever sends notifications."""
        ...

    def redrive_quarantined(self, entry_id: int, actor: str) -> QuarantineEntry:
        """Hand a quarantined event back to processing (audited)."""
        ...

    # -- lifecycle (the app calls them unless told it does not manage the platform) --

    def start(self) -> None: ...

    def stop(self) -> None: ...


def served(capability: T | None, platform: Platform, what: str) -> T:
    """``capability``, or NotSupported (501) when ``platform`` does not serve ``what``."""
    if capability is None:
        raise NotSupported(f"{what} is not available in the {platform.runtime} runtime")
    return capability
