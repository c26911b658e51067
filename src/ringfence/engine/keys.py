"""Keys of per-key state, shared by features, anomaly scores and patterns."""

from __future__ import annotations

from ringfence.engine.expressions import EvalContext

KeyPaths = tuple[tuple[str, ...], ...]
SEPARATOR = "\x1f"  # between a key's parts
ESCAPE = "\x1e"  # a part's own separator is ESCAPE "1", its own escape ESCAPE "0"


def key_of(by: KeyPaths, ctx: EvalContext) -> str | None:
    """The state key of this event for ``by`` field paths; None if one is missing; "global" for none."""
    parts = []
    for path in by:
        value = ctx.field(path)
        if value is None:
            return None
        parts.append(str(value))
    if len(parts) == 1:
        return parts[0]
    return SEPARATOR.join(map(_escaped, parts)) if parts else "global"


def _escaped(part: str) -> str:
    """``part`` without a bare separator, so a key of several parts is theirs only: data strings
    may hold U+001F, and ("a\x1fb", "c") joined as ("a", "b\x1fc") would be one customer's state
    and another's. A part without either character, nearly every one, is itself."""
    if SEPARATOR in part or ESCAPE in part:
        return part.replace(ESCAPE, ESCAPE + "0").replace(SEPARATOR, ESCAPE + "1")
    return part


def stable_types(types: frozenset[str] | None) -> tuple[str, ...] | None:
    """Event types in a stable order: a state signature must not depend on set iteration order,
    which changes from process to process."""
    return tuple(sorted(types)) if types is not None else None
