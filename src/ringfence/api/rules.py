"""Rule pack lifecycle: read, validate, replace (hot reload); and run-time lists.

Back-tests are in :mod:`ringfence.api.backtests`."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ringfence.api.auth import Caller, authorize, platform_of, refuse_while_disk_low
from ringfence.api.bodies import json_body, read_body
from ringfence.api.errors import SharedBody, json_response
from ringfence.api.params import path_id
from ringfence.api.platform import Platform, served
from ringfence.clock import iso
from ringfence.engine.pack import MAX_PACK_BYTES, RulePack, load_pack
from ringfence.engine.patterns import PatternSpec
from ringfence.engine.rules import RuleSpec
from ringfence.errors import RequestError, RulePackError
from ringfence.events.sensitive import redact

YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/plain"})
MAX_LIST_VALUES = 100_000
MAX_LIST_VALUE_CHARS = 256
MAX_LIST_BODY = 6 * 1024 * 1024  # 100,000 IPv6 addresses; decoded, checked and stored in well under 50 MB


def describe(platform: Platform, pack: RulePack, caller: Caller) -> dict[str, Any]:
    """A pack as ``GET /v1/rules`` shows it, with each detection's hit counts: null for a
    detection whose audience ``caller`` does not see (its hits count another desk's alerts)."""
    records = served(platform.records, platform, "the rule pack's hit counts")
    now = platform.clock.time()
    hits = records.rule_hits()
    last_hour, last_day = records.rule_hits(since=now - 3600), records.rule_hits(since=now - 86400)
    specs: list[RuleSpec | PatternSpec] = [*pack.rules, *pack.patterns]
    detections = [
        {
            "id": d.id,
            "kind": d.kind if isinstance(d, PatternSpec) else "rule",
            "description": d.description,
            "on": sorted(d.on),
            "mode": d.output.mode,
            "severity": d.output.severity,
            "audience": d.output.audience,
            **_hit_counts(d.id, (hits, last_hour, last_day), visible=caller.sees(d.output.audience)),
        }
        for d in specs
    ]
    return {
        "version": pack.version,
        "digest": pack.digest,
        "description": pack.description,
        "detections": detections,
        "features": [f.name for f in pack.features],
        "anomalies": [a.name for a in pack.anomalies],
        "lists": sorted(pack.lists),
    }


def _hit_counts(
    rule_id: str, counts: tuple[dict[str, dict[str, int]], ...], *, visible: bool
) -> dict[str, dict[str, int] | None]:
    names = ("hits", "hits_last_hour", "hits_last_day")
    return {name: by_rule.get(rule_id, {}) if visible else None for name, by_rule in zip(names, counts, strict=True)}


class PackChecks:
    """Rule pack checks run one at a time: checking is CPU-bound Python (seconds for thousands of
    rules) that holds the GIL against the processor thread, so two at once would starve it.

    A key has at most one check running or waiting (429): one key cannot queue many. Checks
    wait on the event loop (no thread held); a ``PUT /v1/rules`` (``urgent``) goes before every
    waiting dry run and is never refused for their number, so no flood of validations by other
    keys keeps an author's change out: it waits only for the check already running. At most
    ``waiting`` dry runs wait; past them, 429.
    """

    def __init__(self, waiting: int = 4) -> None:
        self._busy = False
        self._keys: set[str] = set()
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._normal: deque[asyncio.Future[None]] = deque()
        self._waiting = waiting

    @contextlib.asynccontextmanager
    async def slot(self, key_id: str, *, urgent: bool = False) -> AsyncIterator[None]:
        """Hold the one check slot for ``key_id`` (429 if it has one already or too many wait)."""
        if key_id in self._keys:
            raise RequestError(
                429, "rate_limited", "this key already has a rule pack check running", {"retry_after": 1}
            )
        if not urgent and len(self._normal) >= self._waiting:
            raise RequestError(429, "rate_limited", "too many rule pack checks at once", {"retry_after": 1})
        self._keys.add(key_id)
        try:
            await self._acquire(self._urgent if urgent else self._normal)
            try:
                yield
            finally:
                self._release()
        finally:
            self._keys.discard(key_id)

    async def _acquire(self, queue: deque[asyncio.Future[None]]) -> None:
        if not self._busy:
            self._busy = True
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # handed the slot, then cancelled: pass it on
                self._release()
            elif turn in queue:
                queue.remove(turn)
            raise

    def _release(self) -> None:
        for queue in (self._urgent, self._normal):
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)
                    return
        self._busy = False


def _invalid(exc: RulePackError) -> RequestError:
    # a YAML error quotes the line at fault: never echo a card number back (nor into a log)
    return RequestError(400, "invalid_rule_pack", redact(str(exc)), {"where": redact(exc.where)})


def _check_runs(platform: Platform, pack: RulePack) -> None:
    """400 if the runtime cannot run ``pack`` (its ``engine`` setting, its layout of state):
    stored, it would be live in the store and not in the processor, and a restart would refuse it."""
    try:
        platform.check_pack(pack)
    except RulePackError as exc:
        raise _invalid(exc) from None


async def read_candidate(request: Request, caller: Caller, *, urgent: bool = False) -> RulePack:
    """The request's body as a checked rule pack (400 naming the error, 413, 415), checked in
    ``caller``'s one :class:`PackChecks` slot (429); ``urgent`` for a ``PUT /v1/rules``."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in YAML_TYPES:
        raise RequestError(415, "unsupported_media_type", "send the rule pack as application/yaml")
    body = await read_body(request, MAX_PACK_BYTES)
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise RequestError(400, "invalid_rule_pack", "the rule pack is not UTF-8") from None
    checks: PackChecks = request.app.state.pack_checks
    try:
        async with checks.slot(caller.key_id, urgent=urgent):
            return await run_in_threadpool(load_pack, text)
    except RulePackError as exc:
        raise _invalid(exc) from None


async def get_rules(request: Request) -> Response:
    caller = authorize(request, "rules:read")
    platform = platform_of(request)
    body = await run_in_threadpool(describe, platform, platform.pack, caller)
    active = await run_in_threadpool(platform.active_pack)
    body["text"] = platform.pack.text
    body["activated_at"] = iso(active.created_at) if active else None
    body["activated_by"] = active.created_by if active else None
    return json_response(body)


async def validate_rules(request: Request) -> Response:
    caller = authorize(request, "rules:write")  # a dry run of PUT: only pack authors need it
    platform = platform_of(request)
    pack = await read_candidate(request, caller)
    _check_runs(platform, pack)
    dropped = platform.dropped_state(pack)
    return json_response(
        {
            "valid": True,
            "version": pack.version,
            "digest": pack.digest,
            "detections": len(pack.detection_ids),
            "state_reset": [name.split(":")[-1] for name in dropped],
        }
    )


async def put_rules(request: Request) -> Response:
    caller = authorize(request, "rules:write")
    refuse_while_disk_low(request)
    platform = platform_of(request)
    pack = await read_candidate(request, caller, urgent=True)
    _check_runs(platform, pack)
    dropped = platform.dropped_state(pack)
    try:  # the runtime builds what the pack needs (its models) before storing it
        version = await run_in_threadpool(platform.activate_pack, pack, caller.actor, platform.clock.time())
    except RulePackError as exc:
        raise _invalid(exc) from None
    return json_response(
        {
            "version": pack.version,
            "digest": pack.digest,
            "seq": version.seq,
            "state_reset": [name.split(":")[-1] for name in dropped],
        }
    )


class _ListBody(msgspec.Struct, forbid_unknown_fields=True):
    values: list[str]


async def get_list(request: Request) -> Response:
    authorize(request, "rules:read")
    platform = platform_of(request)
    name = path_id(request, "name")
    if name not in platform.pack.lists:
        raise RequestError(404, "not_found", f"the rule pack declares no list {name!r}")
    values = platform.list_values(name)
    # sorted and encoded once a change, off the event loop (100,000 values: 56 ms of it a
    # request), by the first request to miss it: those asking meanwhile wait for the same one
    # (each made its own, 40 copies after a change, in a review)
    answers: dict[str, tuple[frozenset[str], asyncio.Future[bytes]]] = request.app.state.list_answers
    made = answers.get(name)
    if made is None or made[0] is not values or (made[1].done() and made[1].exception() is not None):
        made = (values, asyncio.ensure_future(run_in_threadpool(_list_answer, name, values)))
        answers[name] = made
    return SharedBody(await asyncio.shield(made[1]), media_type="application/json")


def _list_answer(name: str, values: frozenset[str]) -> bytes:
    return msgspec.json.encode({"name": name, "values": sorted(values), "count": len(values)})


async def put_list(request: Request) -> Response:
    caller = authorize(request, "rules:write")
    refuse_while_disk_low(request)
    platform = platform_of(request)
    name = path_id(request, "name")
    if name not in platform.pack.lists:
        raise RequestError(404, "not_found", f"the rule pack declares no list {name!r}")
    body = await json_body(request, _ListBody, '{"values": ["..."]}', MAX_LIST_BODY)
    if len(body.values) > MAX_LIST_VALUES:
        raise RequestError(400, "invalid_body", f"a list holds at most {MAX_LIST_VALUES} values")
    if any(not v or len(v) > MAX_LIST_VALUE_CHARS for v in body.values):
        raise RequestError(400, "invalid_body", f"values must be 1..{MAX_LIST_VALUE_CHARS} characters")
    saved = await run_in_threadpool(platform.put_list, name, body.values, caller.actor, platform.clock.time())
    return json_response(
        {"name": name, "values": list(saved.values), "count": len(saved.values), "version": saved.version}
    )
