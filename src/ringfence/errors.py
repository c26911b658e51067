"""Exceptions raised by Ringfence. Every one derives from :class:`RingfenceError`.

RingfenceError
├── ConfigError             settings file or environment is invalid
├── EventError              an event failed validation (carries its field errors)
├── RulePackError           a rule pack failed to load (names rule and position)
│   └── ExpressionError     an expression is unsafe, unknown or ill-typed
├── StoreError              the store or log could not do what was asked
│   ├── NotFound            the object asked for does not exist
│   └── Conflict            the object's state does not allow the change (409)
├── AuthError               missing, invalid or revoked API key
│   └── ForbiddenError      the key lacks the scope
├── NotSupported            the runtime does not serve this (501)
├── OverloadedError         the platform sheds load; retry after ``retry_after`` s
└── RequestError            an HTTP request is unacceptable (carries status and code)
    └── InvalidCursor       a page cursor the API did not give out
"""

from __future__ import annotations

from dataclasses import dataclass


class RingfenceError(Exception):
    """Root of every error Ringfence raises on purpose."""


class ConfigError(RingfenceError):
    """The settings could not be read or are invalid."""


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of an event: ``field`` is a dotted path."""

    field: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class EventError(RingfenceError):
    """An event is invalid; ``errors`` lists each field and what is wrong with it."""

    def __init__(self, errors: list[FieldError], event_id: str | None = None) -> None:
        self.errors = errors
        self.event_id = event_id
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))


class RulePackError(RingfenceError):
    """A rule pack failed to load. ``where`` names the rule or section at fault."""

    def __init__(self, message: str, where: str = "") -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class ExpressionError(RulePackError):
    """An expression is unsafe, refers to something unknown, or is ill-typed."""

    def __init__(self, message: str, expression: str, column: int | None = None) -> None:
        self.expression = expression
        self.column = column
        pos = f" at column {column}" if column is not None else ""
        super().__init__(f"{message}{pos} in {expression!r}")


class StoreError(RingfenceError):
    """The store or the log failed."""


class NotFound(StoreError):
    """The requested object does not exist."""


class Conflict(StoreError):
    """The object is not in a state that allows the change (an invalid transition): 409."""


class StoreUnavailable(StoreError):
    """A file of the store or the log cannot be used now (deleted or replaced under the server):
    a failure of the store, retried as it is, never an event's fault."""


class StaleBatch(StoreError):
    """A batch's records were applied already by another consumer of their partition: nothing
    of it is written. ``stored``: the offset committed for it."""

    def __init__(self, name: str, stored: int) -> None:
        self.stored = stored
        super().__init__(f"{name} is at offset {stored} already: another consumer applied this batch")


class NotSupported(RingfenceError):
    """This runtime does not serve the capability asked for (the API answers 501)."""


class AuthError(RingfenceError):
    """The request carries no valid API key."""


class ForbiddenError(AuthError):
    """The API key is valid but lacks the scope the endpoint needs."""

    def __init__(self, scope: str) -> None:
        self.scope = scope
        if scope == "all audiences":
            super().__init__("this API key is limited to some audiences; this needs one that sees all")
        elif scope == "csrf":
            super().__init__("missing or wrong X-CSRF-Token for a signed-in change")
        elif scope == "signed":
            super().__init__("this API key signs its requests: it sends events (POST /v1/events) and nothing else")
        else:
            super().__init__(f"this API key lacks the {scope!r} scope")


class OverloadedError(RingfenceError):
    """The platform is shedding load; the client should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class ClientGone(RingfenceError):
    """The client closed its connection while its request waited: nobody to answer."""


class RequestError(RingfenceError):
    """An HTTP request that cannot be served as sent: ``status`` and a stable ``code``."""

    def __init__(self, status: int, code: str, message: str, details: object = None) -> None:
        self.status = status
        self.code = code
        self.details = details
        super().__init__(message)


class InvalidCursor(RequestError):
    """A page cursor the API did not give out (every store answers the same 400)."""

    def __init__(self) -> None:
        super().__init__(
            400, "invalid_cursor", "cursor is not a next_cursor this server gave out", {"parameter": "cursor"}
        )


class TooManyAtOnce(RequestError):
    """A key has as many requests of a kind under way as it may (429: wait for their answers)."""

    def __init__(self, what: str, most: int) -> None:
        message = f"this key has {most} {what} under way; wait for their answers"
        super().__init__(429, "too_many_requests", message, {"retry_after": 1})
