"""Backtesting: stored events through the live pack and a candidate, hits side by side."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from ringfence.engine.engine import Engine
from ringfence.engine.pack import RulePack
from ringfence.events.model import Event


def backtest(
    events: Iterable[tuple[int, int, float, Event]],
    live: RulePack,
    candidate: RulePack,
    lists: dict[str, frozenset[str]],
) -> dict[str, dict[str, int]]:
    """Run (offset, partition, ingested_at, event) through fresh engines for both packs.

    Returns, per detection id, its hits under ``live`` and under ``candidate``.
    """
    engines = {"live": Engine(live), "candidate": Engine(candidate)}
    for engine in engines.values():
        engine.lists.update({k: v for k, v in lists.items() if k in engine.pack.lists})
    counts: dict[str, Counter[str]] = {name: Counter() for name in engines}
    for offset, partition, ingested_at, event in events:
        for name, engine in engines.items():
            for signal in engine.process(event, offset, partition, ingested_at):
                counts[name][signal.rule_id] += 1
    for name, engine in engines.items():
        for signal in engine.advance():
            counts[name][signal.rule_id] += 1
    ids = sorted(set(live.detection_ids) | set(candidate.detection_ids))
    return {i: {"live": counts["live"][i], "candidate": counts["candidate"][i]} for i in ids}
