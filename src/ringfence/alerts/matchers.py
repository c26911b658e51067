"""Label matchers, as in Prometheus Alertmanager: ``name=value``, ``name!=value``,
``name=~regex``, ``name!~regex``. Used by silences, inhibition rules and routes."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|(.*?))\s*$')
MAX_PATTERN = 512


class MatcherError(ValueError):
    """A matcher could not be parsed; the message names it."""


@dataclass(frozen=True)
class Matcher:
    """One condition on one label. Regexes are anchored (must match the whole value)."""

    name: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Matcher:
        match = _MATCHER.match(text)
        if match is None:
            raise MatcherError(f"invalid matcher {text!r}: use name=value, name!=value, name=~regex or name!~regex")
        name, op, quoted, bare = match.groups()
        value = quoted.encode().decode("unicode_escape") if quoted is not None else (bare or "")
        if op in ("=~", "!~"):
            if len(value) > MAX_PATTERN:
                raise MatcherError(f"regex in {text!r} is longer than {MAX_PATTERN} characters")
            try:
                re.compile(value)
            except re.error as exc:
                raise MatcherError(f"invalid regex in {text!r}: {exc}") from None
        return cls(name, op, value)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = _compiled(self.value).fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


_cache: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    if pattern not in _cache:
        if len(_cache) > 1_000:
            _cache.clear()
        _cache[pattern] = re.compile(pattern)
    return _cache[pattern]


def parse_matchers(texts: Iterable[str]) -> tuple[Matcher, ...]:
    return tuple(Matcher.parse(t) for t in texts)


def all_match(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
