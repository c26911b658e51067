"""Decoding and validating producer payloads into :class:`Event`.

Called by every ingest path (HTTP, replay, Lambda). A body holds one event, a JSON
array of events, or NDJSON; each event is validated on its own so one bad event never
costs the others.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ringfence.errors import EventError, FieldError
from ringfence.events.model import Event
from ringfence.events.money import MoneyError, to_decimal
from ringfence.events.sensitive import find_pan, mask_account, mask_strings
from ringfence.events.types import BUILTIN_TYPES, MASKED_FIELDS, MONEY_FIELDS, Envelope

MIN_OCCURRED_AT = 946_684_800.0  # 2000-01-01T00:00:00Z
MAX_FUTURE_SKEW_S = 24 * 3600.0
MAX_EVENT_BYTES = 64 * 1024
TOO_DEEP = "JSON is nested too deeply"

_envelope_decoder = msgspec.json.Decoder(Envelope)
_data_decoders = {name: msgspec.json.Decoder(cls) for name, cls in BUILTIN_TYPES.items()}
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_raw_decoder = msgspec.json.Decoder(msgspec.Raw)
_lenient_decoder = msgspec.json.Decoder(dict[str, Any])
_PATH = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_FIELD = re.compile(r"field `([^`]+)`")


class MalformedBody(EventError):
    """The body as a whole is not JSON/NDJSON of events (nothing in it can be read)."""


@dataclass(frozen=True)
class Rejection:
    """One event of a batch that failed validation."""

    index: int
    event_id: str | None
    errors: list[FieldError]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "event_id": self.event_id,
            "errors": [e.to_dict() for e in self.errors],
        }


@dataclass
class DecodedBatch:
    """What a body decoded to: valid events (with their index in the body) and rejections."""

    events: list[Event] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.events) + len(self.rejected)


def _field_errors(exc: Exception, prefix: str = "") -> list[FieldError]:
    match = _PATH.match(str(exc))
    assert match is not None
    message, path = match.group("msg"), (match.group("path") or "").lstrip(".")
    named = _FIELD.search(message)
    if named and ("unknown field" in message or "missing required field" in message):
        path = f"{path}.{named.group(1)}" if path else named.group(1)
    full = ".".join(p for p in (prefix, path) if p) or "$"
    return [FieldError(full.replace(".[", "["), message)]


def split_body(body: bytes, ndjson: bool) -> list[msgspec.Raw | FieldError]:
    """Cut a body into one raw JSON value per event (or the error for an unreadable line).

    Raises MalformedBody if a JSON body is not valid JSON or holds neither an object nor
    an array.
    """
    if ndjson:
        items: list[msgspec.Raw | FieldError] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            try:
                items.append(_raw_decoder.decode(line))
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                items.append(FieldError("$", f"malformed JSON: {exc}"))
            except RecursionError:
                items.append(FieldError("$", TOO_DEEP))
        return items
    stripped = body.lstrip()
    try:
        if stripped.startswith(b"["):
            return list(_raw_list_decoder.decode(body))
        if stripped.startswith(b"{"):
            return [_raw_decoder.decode(body)]
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise MalformedBody([FieldError("$", f"malformed JSON: {exc}")]) from None
    except RecursionError:
        raise MalformedBody([FieldError("$", TOO_DEEP)]) from None
    raise MalformedBody([FieldError("$", "expected a JSON object, a JSON array of objects, or NDJSON")])


def _guess_event_id(raw: msgspec.Raw) -> str | None:
    try:
        value = _lenient_decoder.decode(raw).get("event_id")
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
        return None
    return value[:128] if isinstance(value, str) else None


def validate_event(raw: bytes | msgspec.Raw, now: float, custom_types: Iterable[str] = ()) -> Event:
    """Validate one event's JSON and return it normalised, masked and PAN-free.

    Raises EventError listing each field at fault.
    """
    if len(raw) > MAX_EVENT_BYTES:
        raise EventError([FieldError("$", f"event is larger than {MAX_EVENT_BYTES} bytes")])
    try:
        env = _envelope_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise EventError(_field_errors(exc)) from None
    except RecursionError:
        raise EventError([FieldError("$", TOO_DEEP)]) from None
    errors: list[FieldError] = []
    occurred = env.occurred_at.timestamp()
    if occurred < MIN_OCCURRED_AT:
        errors.append(FieldError("occurred_at", "is before 2000-01-01"))
    elif occurred > now + MAX_FUTURE_SKEW_S:
        errors.append(FieldError("occurred_at", "is more than 24 h in the future"))
    if env.customer_id is None and env.type != "api.request":
        errors.append(FieldError("customer_id", "is required for this event type"))
    data: dict[str, Any] = {}
    decoder = _data_decoders.get(env.type)
    if decoder is not None:
        try:
            data = msgspec.to_builtins(decoder.decode(env.data))
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
            errors.extend(_field_errors(exc, "data"))
        except RecursionError:
            errors.append(FieldError("data", TOO_DEEP))
    elif env.type in custom_types:
        try:
            data = _lenient_decoder.decode(env.data)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
            errors.extend(_field_errors(exc, "data"))
        except RecursionError:
            errors.append(FieldError("data", TOO_DEEP))
    else:
        errors.append(FieldError("type", f"unknown event type {env.type!r}"))
    if not errors:
        errors.extend(_normalise_data(data))
    for name in ("event_id", "customer_id", "account_id"):
        value = getattr(env, name)
        if value is not None and find_pan(value, name):
            errors.append(FieldError(name, "looks like a card number (PAN); send a token"))
    if (pan_path := find_pan(data, "data")) is not None:
        errors.append(FieldError(pan_path, "looks like a card number (PAN); send a token"))
    if errors:
        raise EventError(errors, env.event_id)
    account = env.account_id
    return Event(
        event_id=env.event_id,
        type=env.type,
        occurred_at=occurred,
        source=env.source,
        data=mask_strings(data),
        customer_id=env.customer_id,
        account_id=mask_strings(account) if account is not None else None,
    )


def _normalise_data(data: dict[str, Any]) -> list[FieldError]:
    """Canonicalise money and mask account fields in place; return the errors found."""
    errors: list[FieldError] = []
    for name in MONEY_FIELDS:
        if name in data:
            try:
                amount = to_decimal(data[name], data["currency"], signed=name == "balance")
            except MoneyError as exc:
                path = "data.currency" if "currency" in str(exc) and "ISO" in str(exc) else f"data.{name}"
                errors.append(FieldError(path, str(exc)))
            else:
                data[name] = str(amount)
    for name in MASKED_FIELDS:
        if name in data:
            data[name] = mask_account(data[name])
    if "ip" in data:
        try:
            ipaddress.ip_address(data["ip"])
        except ValueError:
            errors.append(FieldError("data.ip", f"not an IP address: {data['ip'][:45]!r}"))
    return errors


def decode_batch(
    body: bytes,
    *,
    ndjson: bool,
    now: float,
    max_events: int,
    custom_types: Iterable[str] = (),
) -> DecodedBatch:
    """Decode and validate every event of a request body.

    Raises MalformedBody if the body cannot be read at all or holds more than
    ``max_events`` events.
    """
    items = split_body(body, ndjson)
    if len(items) > max_events:
        raise MalformedBody([FieldError("$", f"batch of {len(items)} events exceeds the limit of {max_events}")])
    if not items:
        raise MalformedBody([FieldError("$", "no events in body")])
    custom = frozenset(custom_types)
    batch = DecodedBatch()
    for index, item in enumerate(items):
        if isinstance(item, FieldError):
            batch.rejected.append(Rejection(index, None, [item]))
            continue
        try:
            batch.events.append(validate_event(item, now, custom))
            batch.indexes.append(index)
        except EventError as exc:
            event_id = exc.event_id if exc.event_id is not None else _guess_event_id(item)
            batch.rejected.append(Rejection(index, event_id, exc.errors))
    return batch
