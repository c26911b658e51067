"""Label matchers, as in Prometheus Alertmanager: ``name=value``, ``name!=value``,
``name=~regex``, ``name!~regex``. Used by silences, inhibition rules and routes.

Regexes come from users (a silence over the API, the alerting config), so they run on RE2:
matching takes time linear in the label's length whatever the pattern, where a backtracking
engine takes exponential time on ``(a|a)*b`` and would freeze the dispatcher. RE2 has no
backreferences or lookaround; such a pattern is refused when the matcher is parsed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import re2  # type: ignore[import-untyped]

# the matcher grammar itself: a fixed pattern on a bounded text, safe on the stdlib engine
_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|(.*?))\s*$')
_QUOTED_ESCAPE = re.compile(r'\\(["\\])')
MAX_MATCHER = 2_048
MAX_PATTERN = 512
MAX_CACHED = 1_024  # patterns, of MAX_PROGRAM instructions at most: some tens of MB
MAX_PROGRAM = 2_000  # RE2 instructions of one pattern: `[a-z0-9_]{1,64}` is 259
MAX_STORED_SETS = 2_048  # silences' matchers kept parsed: the 1,000 current ones and more
_RE2_MEMORY = 1 << 20  # bytes of compiled program per pattern: bounds e.g. ``(x{100}){100}``


class MatcherError(ValueError):
    """A matcher could not be parsed; the message names it."""


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # the error is raised to the caller, not printed by RE2
    options.never_capture = True  # match or no match: groups are never read
    options.max_mem = _RE2_MEMORY
    return options


_OPTIONS = _options()


@functools.lru_cache(maxsize=MAX_CACHED)
def compile_pattern(pattern: str) -> Any:
    """``pattern`` compiled by RE2 (the most recently used kept: silences are read again for
    every batch of alerts; one refused is not kept). Raises ValueError with RE2's reason, or
    when it compiles to more than ``MAX_PROGRAM`` instructions."""
    try:
        compiled = re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid"
        text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        raise ValueError(text) from None
    if compiled.programsize > MAX_PROGRAM:
        raise ValueError(f"compiles to more than {MAX_PROGRAM} RE2 instructions (a{{1000}} is a thousand)")
    return compiled


@dataclass(frozen=True)
class Matcher:
    """One condition on one label. Regexes are anchored (must match the whole value).

    A matcher read back from storage whose regex RE2 cannot compile (saved before RE2 was used)
    has ``regex`` None and matches nothing, so a silence holding it mutes nothing.
    """

    name: str
    op: str
    value: str
    regex: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str, *, stored: bool = False) -> Matcher:
        """Parse ``text``; raises MatcherError naming it. ``stored``: tolerate a regex RE2 refuses."""
        match = _MATCHER.match(text) if len(text) <= MAX_MATCHER else None
        if match is None:
            raise MatcherError(
                f"invalid matcher {text[:100]!r}: use name=value, name!=value, name=~regex or name!~regex"
            )
        name, op, quoted, bare = match.groups()
        value = _QUOTED_ESCAPE.sub(r"\1", quoted) if quoted is not None else (bare or "")
        if op not in ("=~", "!~"):
            return cls(name, op, value)
        if len(value) > MAX_PATTERN:
            raise MatcherError(f"regex in {text[:100]!r} is longer than {MAX_PATTERN} characters")
        try:
            return cls(name, op, value, compile_pattern(value))
        except ValueError as exc:
            if stored:
                return cls(name, op, value)
            raise MatcherError(
                f"invalid regex in {text!r}: {exc} (RE2 syntax: no backreferences or lookaround)"
            ) from None

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        if self.regex is None:
            return False
        found = self.regex.fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        """The matcher as text that parses back to it."""
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


def parse_matchers(texts: Iterable[str]) -> tuple[Matcher, ...]:
    """Matchers from user input (an API body, the alerting config): any invalid one raises MatcherError."""
    return tuple(Matcher.parse(t) for t in texts)


def parse_stored_matchers(texts: Iterable[str]) -> tuple[Matcher, ...]:
    """Matchers read back from the store: accepted once, so a regex RE2 refuses matches nothing
    instead of failing every load (and the dispatcher with it)."""
    return tuple(Matcher.parse(t, stored=True) for t in texts)


@functools.lru_cache(maxsize=MAX_STORED_SETS)
def stored_matchers(stored: str) -> tuple[Matcher, ...]:
    """A silence's matchers as the store holds them (a JSON list of texts), parsed once: every
    batch of alerts reads the current silences again, and 1,000 silences of 20 regexes each
    outgrow the compiled patterns' cache (they were compiled again for every batch, 0.9 s)."""
    return parse_stored_matchers(msgspec.json.decode(stored))


def all_match(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
