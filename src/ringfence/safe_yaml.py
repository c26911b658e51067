"""YAML from outside the process (rule packs over the API, the alerting config), loaded with bounds.

Anchors and aliases are refused before any object is built: expanding them is how a few
hundred kilobytes become gigabytes ("billion laughs"). The number of nodes and the nesting
depth are bounded too, so the memory and time of a load follow from the text's size. A key
given twice in one mapping is refused, not left to YAML's last-one-wins.
Used by :mod:`ringfence.engine.pack` and :mod:`ringfence.alerts.config`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

MAX_NODES = 50_000  # about 2,500 rules; ~20 MB while loading with libyaml, ~33 MB in pure Python
MAX_DEPTH = 64

if TYPE_CHECKING:
    SafeLoader = yaml.SafeLoader
else:  # libyaml's parser when the wheel has it: about 5x faster and half the memory per node
    SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class UnsafeYAMLError(yaml.YAMLError):
    """The text uses a YAML feature refused from outside, or is too large a structure."""


def _where(event: yaml.Event) -> str:
    mark = event.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown position"


class _Mapping:
    """A mapping being walked: the keys seen, and whether its next node is a key."""

    def __init__(self) -> None:
        self.keys: set[tuple[str, object]] = set()
        self.key_next = True


def _key_of(parser: yaml.SafeLoader, event: yaml.ScalarEvent) -> tuple[str, object]:
    """A scalar key as the loader will build it (its tag and value: ``1`` and ``'1'`` differ,
    ``true`` and ``yes`` do not under YAML 1.1's resolvers), so that equal keys are found equal."""
    tag = event.tag if event.tag not in (None, "!") else None
    if tag is None:
        tag = parser.resolve(yaml.ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
    if tag == "tag:yaml.org,2002:str":
        return (tag, event.value)
    try:
        value = parser.construct_object(yaml.ScalarNode(tag, event.value))
        hash(value)
    except Exception:  # a value the key's tag cannot build: the load will say so
        return (tag, event.value)
    return (tag, value)


def check_structure(
    text: str, loader: type[yaml.SafeLoader] = SafeLoader, *, refuse_duplicate_keys: bool = True
) -> None:
    """Walk the parser's events (no node is kept) and refuse anchors, aliases, too many nodes,
    too deep a nesting, or (unless told not to) a key given twice in one mapping (YAML keeps
    the last silently: a reviewer would read one rule and the engine run another), naming the
    line. Raises UnsafeYAMLError, or yaml.YAMLError for bad syntax."""
    parser = loader(text)
    nodes = 0
    open_collections: list[_Mapping | None] = []  # None: a sequence
    try:
        while parser.check_event():
            event: yaml.Event = parser.get_event()  # type: ignore[no-untyped-call]
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise UnsafeYAMLError(
                    f"YAML anchors and aliases (&name, *name) are not accepted ({_where(event)}): write the value out"
                )
            if isinstance(event, yaml.NodeEvent):
                nodes += 1
                if nodes > MAX_NODES:
                    raise UnsafeYAMLError(f"more than {MAX_NODES} YAML values ({_where(event)})")
                parent = open_collections[-1] if open_collections else None
                if parent is not None:
                    if parent.key_next and isinstance(event, yaml.ScalarEvent):
                        key = _key_of(parser, event)
                        if key[0] == "tag:yaml.org,2002:merge":  # its keys land beside the mapping's own, unseen
                            raise UnsafeYAMLError(
                                f"YAML merge keys (<<) are not accepted ({_where(event)}): write the keys out"
                            )
                    if refuse_duplicate_keys and parent.key_next and isinstance(event, yaml.ScalarEvent):
                        if key in parent.keys:
                            raise UnsafeYAMLError(
                                f"the key {event.value[:64]!r} is given twice in one mapping ({_where(event)}): "
                                "YAML would keep only the last"
                            )
                        parent.keys.add(key)
                    parent.key_next = not parent.key_next
            if isinstance(event, yaml.CollectionStartEvent):
                open_collections.append(_Mapping() if isinstance(event, yaml.MappingStartEvent) else None)
                if len(open_collections) > MAX_DEPTH:
                    raise UnsafeYAMLError(f"YAML nested deeper than {MAX_DEPTH} levels ({_where(event)})")
            elif isinstance(event, yaml.CollectionEndEvent):
                open_collections.pop()
    finally:
        parser.dispose()


def load(text: str, loader: type[yaml.SafeLoader] = SafeLoader, *, refuse_duplicate_keys: bool = True) -> Any:
    """One YAML document from ``text``, checked by :func:`check_structure` first.

    ``loader`` is :data:`SafeLoader` or a subclass (e.g. one with other implicit resolvers).
    Raises yaml.YAMLError (UnsafeYAMLError for a refused structure).
    """
    check_structure(text, loader, refuse_duplicate_keys=refuse_duplicate_keys)
    return yaml.load(text, Loader=loader)  # nosec B506 # noqa: S506 - a SafeLoader (or libyaml's) subclass
