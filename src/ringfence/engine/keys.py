"""Keys of per-key state, shared by features, anomaly scores and patterns."""

from __future__ import annotations

from ringfence.engine.expressions import EvalContext

KeyPaths = tuple[tuple[str, ...], ...]


def key_of(by: KeyPaths, ctx: EvalContext) -> str | None:
    """The state key of this event for ``by`` field paths; None if one is missing; "global" for none."""
    parts = []
    for path in by:
        value = ctx.field(path)
        if value is None:
            return None
        parts.append(str(value))
    return "\x1f".join(parts) if parts else "global"


def stable_types(types: frozenset[str] | None) -> tuple[str, ...] | None:
    """Event types in a stable order: a state signature must not depend on set iteration order,
    which changes from process to process."""
    return tuple(sorted(types)) if types is not None else None
