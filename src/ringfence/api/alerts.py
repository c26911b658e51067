"""Alerts: list with filters and cursors, read one, acknowledge, resolve."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ringfence.alerts.model import STATUSES, Action, Alert, AlertQuery
from ringfence.api.auth import Caller, authorize, change_charged, check_visible, platform_of, shown_after_change
from ringfence.api.bodies import json_body
from ringfence.api.errors import json_response
from ringfence.api.params import choice_params, limit_param, path_id, text_param, time_param, token_param
from ringfence.api.platform import EventLog, served
from ringfence.engine.rules import AUDIENCES, SEVERITIES
from ringfence.errors import RequestError, TooManyAtOnce

MAX_LIMIT = 500
EVIDENCE_READ_S = 10.0  # reading an alert's evidence back, at most
MAX_REASON = 1_000
COUNTS_AT_ONCE = 2
COUNTS_PER_KEY = 4  # a key's own counts under way or waiting (a dashboard's reloads overlap, a tab or two)


def _query(request: Request, caller: Caller) -> AlertQuery:
    audiences = choice_params(request, "audience", AUDIENCES)
    if caller.audiences:  # object-level: a limited caller lists only its audiences
        audiences = tuple(a for a in (audiences or caller.audiences) if a in caller.audiences) or ("-",)
    return AlertQuery(
        status=choice_params(request, "status", STATUSES),
        severity=choice_params(request, "severity", SEVERITIES),
        audience=audiences,
        rule_id=text_param(request, "rule_id"),
        customer_id=text_param(request, "customer_id"),
        since=time_param(request, "since"),
        until=time_param(request, "until"),
        limit=limit_param(request, 50, MAX_LIMIT),
        cursor=token_param(request),
    )


async def list_alerts(request: Request) -> Response:
    query = _query(request, authorize(request, "alerts:read"))
    return await run_in_threadpool(_alert_page, platform_of(request).alerts, query)


def _alert_page(alerts: Any, query: AlertQuery) -> Response:
    """A page read and encoded on a thread: 500 alerts with their evidence take the encoder some
    milliseconds, which 32 of one viewer's requests at once made the event loop's (a hostile test)."""
    items, next_cursor = alerts.list_alerts(query)
    return json_response({"items": items, "next_cursor": next_cursor})


class AlertCounts:
    """Counting reads every alert the filters match (a second or more at a million), on the
    threads every other read of the API uses: at most :data:`COUNTS_AT_ONCE` run at once, the
    others wait without a thread, and a count asked while the same one is under way gets its
    answer. Found by a hostile test: one analyst's 40 concurrent counts made another's alert
    list take 19 s; and by a re-test, 20 distinct ones another's count 9 s: a key may have
    :data:`COUNTS_PER_KEY` of its own under way or waiting (429 past them). Nothing is kept
    after: a count asked after a change sees it (the dashboard
    asks again at each live update). Used on the event loop's thread only."""

    def __init__(self) -> None:
        self._gate = asyncio.Semaphore(COUNTS_AT_ONCE)
        self._counting: dict[AlertQuery, asyncio.Future[dict[str, dict[str, int]]]] = {}
        self._started: dict[str, int] = {}  # counts under way or waiting, by the key that asked first

    async def count(self, triage: Any, query: AlertQuery, key: str = "") -> dict[str, dict[str, int]]:
        query = dataclasses.replace(query, limit=0, cursor=None)  # neither changes a count
        counting = self._counting.get(query)
        if counting is None:  # the first to ask counts; the others asking meanwhile wait for it
            if self._started.get(key, 0) >= COUNTS_PER_KEY:
                raise TooManyAtOnce("counts", COUNTS_PER_KEY)
            self._started[key] = self._started.get(key, 0) + 1
            counting = asyncio.ensure_future(self._count(triage, query))
            self._counting[query] = counting
            counting.add_done_callback(lambda _: self._done(query, key))
        return await asyncio.shield(counting)  # a caller gone does not stop it for the others

    def _done(self, query: AlertQuery, key: str) -> None:
        self._counting.pop(query, None)
        if self._started[key] > 1:
            self._started[key] -= 1
        else:
            del self._started[key]

    async def _count(self, triage: Any, query: AlertQuery) -> dict[str, dict[str, int]]:
        async with self._gate:
            counts: dict[str, dict[str, int]] = await run_in_threadpool(triage.count_alerts_by, query)
        return counts


async def count_alerts(request: Request) -> Response:
    """The alerts the same filters would list, counted by severity and by status."""
    caller = authorize(request, "alerts:read")
    query = _query(request, caller)
    platform = platform_of(request)
    triage = served(platform.triage, platform, "counting alerts")
    counts = await request.app.state.alert_counts.count(triage, query, caller.key_id)
    total = sum(counts["status"].values())
    return json_response({"total": total, "by_severity": counts["severity"], "by_status": counts["status"]})


async def get_alert(request: Request) -> Response:
    caller = authorize(request, "alerts:read")
    alert = await run_in_threadpool(platform_of(request).alerts.get_alert, path_id(request, "alert_id"))
    check_visible(caller, alert.id, alert.audience)
    return json_response(alert)


async def alert_events(request: Request) -> Response:
    """The events behind an alert's evidence, read back from the log (stored masked).
    An event removed by log retention is listed with ``event: null``."""
    caller = authorize(request, "alerts:read")
    platform = platform_of(request)
    log = served(platform.log, platform, "reading events back")
    alert = await run_in_threadpool(platform.alerts.get_alert, path_id(request, "alert_id"))
    check_visible(caller, alert.id, alert.audience)

    items, complete = await run_in_threadpool(read_evidence, log, alert.evidence.get("events", []), EVIDENCE_READ_S)
    return json_response({"alert_id": alert.id, "items": items, "complete": complete})


def read_evidence(log: EventLog, evidence: list[dict[str, Any]], within_s: float) -> tuple[list[dict[str, Any]], bool]:
    """The evidence's events read back from ``log``, and whether every one was read: a log
    slow to answer has ``within_s`` in all (and a read under way), the rest are listed unread
    (``event`` null), as is one the log did not answer."""
    items, complete, deadline = [], True, time.monotonic() + within_s
    for cited in evidence:
        complete = complete and time.monotonic() < deadline
        record = None
        if complete:
            try:
                record = log.get(int(cited["offset"]))
            except TimeoutError:
                complete = False
        event = msgspec.json.decode(record.body) if record is not None else None
        items.append({"offset": cited["offset"], "event_id": cited["event_id"], "event": event})
    return items, complete


async def _visible(request: Request, caller: Caller) -> str:
    """The path's alert id, after checking the caller may act on that alert."""
    alert_id = path_id(request, "alert_id")
    alert = await run_in_threadpool(platform_of(request).alerts.get_alert, alert_id)
    check_visible(caller, alert_id, alert.audience)
    return alert_id


class _ActionBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: str = ""


async def _reason(request: Request) -> str:
    body = await json_body(request, _ActionBody, '{"reason": "..."}', optional=True, prose=("reason",))
    if len(body.reason) > MAX_REASON:
        raise RequestError(400, "invalid_body", f"reason is longer than {MAX_REASON} characters")
    return body.reason


def _action(action: Action) -> Any:
    async def endpoint(request: Request) -> Response:
        caller = authorize(request, "alerts:write")
        alert_id = await _visible(request, caller)
        reason = await _reason(request)
        platform = platform_of(request)
        async with change_charged(request, caller, reason):  # in the history and the audit entry
            alert = await run_in_threadpool(
                platform.alerts.transition, alert_id, action, caller.actor, reason, platform.clock.time()
            )
        return _changed(caller, alert)

    return endpoint


ack_alert = _action(Action.ACKNOWLEDGE)
resolve_alert = _action(Action.RESOLVE)


class _AssignBody(msgspec.Struct, forbid_unknown_fields=True):
    assignee: str
    reason: str = ""


class _CommentBody(msgspec.Struct, forbid_unknown_fields=True):
    text: str


async def assign_alert(request: Request) -> Response:
    caller = authorize(request, "alerts:write")
    platform = platform_of(request)
    triage = served(platform.triage, platform, "assigning alerts")
    body = await json_body(request, _AssignBody, '{"assignee": "...", "reason": "..."}', prose=("reason",))
    if len(body.assignee) > 128 or len(body.reason) > MAX_REASON:
        raise RequestError(400, "invalid_body", "assignee is at most 128 characters, reason at most 1000")
    alert_id = await _visible(request, caller)
    async with change_charged(request, caller, body.assignee, body.reason):
        alert = await run_in_threadpool(
            triage.assign, alert_id, body.assignee, caller.actor, body.reason, platform.clock.time()
        )
    return _changed(caller, alert)


async def comment_alert(request: Request) -> Response:
    caller = authorize(request, "alerts:write")
    platform = platform_of(request)
    triage = served(platform.triage, platform, "commenting on alerts")
    body = await json_body(request, _CommentBody, '{"text": "..."}', prose=("text",))
    if not body.text.strip() or len(body.text) > 4_000:
        raise RequestError(400, "invalid_body", "text must be 1..4000 characters")
    alert_id = await _visible(request, caller)
    async with change_charged(request, caller, body.text, copies=1):  # the audit entry counts its characters
        alert = await run_in_threadpool(triage.comment, alert_id, body.text, caller.actor, platform.clock.time())
    return _changed(caller, alert, status=201)


def _changed(caller: Caller, alert: Alert, status: int = 200) -> Response:
    return json_response(shown_after_change(caller, alert, {"id": alert.id, "status": alert.status}), status)
