"""What a silence may be, for every runtime: a reason, 1..20 matchers, at most a year; and
how long one is kept once it has ended.

A silence mutes every alert its matchers match, so an empty matcher list (which would
match everything), an unbounded time range or a bad pattern is refused before storage.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ringfence.alerts.matchers import Matcher, MatcherError, parse_matchers
from ringfence.clock import iso
from ringfence.errors import RequestError

MAX_SILENCE_S = 366 * 86400.0
SILENCE_KEPT_S = 30 * 86400.0  # an ended silence is listed this long after it ends, then forgotten
MAX_MATCHERS = 20
MAX_MATCHERS_CHARS = 4_096  # all of a silence's matchers: a page of 100 silences stays some 2 MB at most
MAX_COMMENT_CHARS = 1_000
MAX_SILENCE_PROGRAM = 2_000  # RE2 instructions of all of a silence's regexes (matchers.MAX_PROGRAM each)


class SilenceError(RequestError):
    """A silence that may not be created; the message says why (a 400 wherever it is raised)."""

    def __init__(self, message: str) -> None:
        super().__init__(400, "invalid_body", message)


MAX_CURRENT_SILENCES = 1_000  # every alert is matched against each current silence


class TooManySilences(RequestError):
    """A silence past :data:`MAX_CURRENT_SILENCES` active or pending ones (a 409)."""

    def __init__(self) -> None:
        message = f"{MAX_CURRENT_SILENCES} silences are active or pending: expire some first"
        super().__init__(409, "too_many_silences", message)


def check_silence(
    matchers: list[str], starts_at: float, ends_at: float, comment: str, now: float | None = None
) -> tuple[Matcher, ...]:
    """The parsed matchers of an acceptable silence (made at ``now``, if given); raises
    SilenceError naming what is wrong."""
    if not comment.strip() or len(comment) > MAX_COMMENT_CHARS:
        raise SilenceError(f"comment must say why (1..{MAX_COMMENT_CHARS} characters)")
    if not matchers:
        raise SilenceError("a silence needs at least one matcher")
    if len(matchers) > MAX_MATCHERS:
        raise SilenceError(f"a silence has at most {MAX_MATCHERS} matchers")
    if sum(len(m) for m in matchers) > MAX_MATCHERS_CHARS:
        raise SilenceError(f"a silence's matchers hold at most {MAX_MATCHERS_CHARS} characters in all")
    if ends_at <= starts_at:
        raise SilenceError("a silence must end after it starts")
    if now is not None and ends_at <= now:  # it would mute nothing, and be kept 30 days
        raise SilenceError("a silence must end in the future")
    if ends_at - starts_at > MAX_SILENCE_S:
        raise SilenceError("a silence lasts at most a year")
    try:
        parsed = parse_matchers(matchers)
    except MatcherError as exc:
        raise SilenceError(str(exc)) from None
    if sum(m.regex.programsize for m in parsed if m.regex is not None) > MAX_SILENCE_PROGRAM:
        # every alert is matched against each current silence: its regexes stay small
        raise SilenceError(
            f"a silence's regexes compile to at most {MAX_SILENCE_PROGRAM} RE2 instructions in all"
            " (a repetition like a{1000} is a thousand)"
        )
    return parsed


class SilenceState(StrEnum):
    PENDING = "pending"  # starts later
    ACTIVE = "active"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    created_at: float

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def state(self, now: float) -> SilenceState:
        if self.active(now):
            return SilenceState.ACTIVE
        return SilenceState.PENDING if now < self.starts_at else SilenceState.EXPIRED

    def to_dict(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": [str(m) for m in self.matchers],
            "starts_at": iso(self.starts_at),
            "ends_at": iso(self.ends_at),
            "created_by": self.created_by,
            "comment": self.comment,
            "created_at": iso(self.created_at),
            "state": self.state(now),
        }
