"""Backtesting: stored events through the live pack and a candidate, hits side by side.

:class:`Backtest` is fed one event at a time, so its caller (the back-test child process of
:mod:`ringfence.runtimes.backtest`) can report progress and stop when its time budget is spent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from ringfence.engine.engine import Engine
from ringfence.engine.pack import RulePack
from ringfence.events.model import Event

Hits = dict[str, dict[str, int]]


class Backtest:
    """Fresh engines for ``live`` and ``candidate``, both with the run-time ``lists``."""

    def __init__(self, live: RulePack, candidate: RulePack, lists: dict[str, frozenset[str]]) -> None:
        self.packs = {"live": live, "candidate": candidate}
        self.engines = {name: Engine(pack) for name, pack in self.packs.items()}
        for engine in self.engines.values():
            for name in lists.keys() & engine.pack.lists.keys():
                engine.set_list(name, lists[name])
        self.counts: dict[str, Counter[str]] = {name: Counter() for name in self.engines}
        self.events = 0
        self.failed = 0

    def feed(self, offset: int, partition: int, ingested_at: float, event: Event) -> None:
        """Run one stored event through both engines, counting their signals per detection.

        An event an engine cannot handle is counted in ``failed`` and skipped, as the live
        processor quarantines it: one bad stored event must not void a whole back-test.
        """
        self.events += 1
        failed = False
        for name, engine in self.engines.items():
            try:
                signals = engine.process(event, offset, partition, ingested_at)
            except MemoryError:
                raise  # the back-test as a whole is over its bound
            except Exception:
                failed = True
                continue
            for signal in signals:
                self.counts[name][signal.rule_id] += 1
        self.failed += failed

    def finish(self) -> None:
        """Fire the timers still pending at the last event's watermark (absence patterns)."""
        for name, engine in self.engines.items():
            for signal in engine.advance():
                self.counts[name][signal.rule_id] += 1

    def hits(self) -> Hits:
        """Per detection id (of either pack), its hits under ``live`` and under ``candidate``."""
        ids = sorted(set(self.packs["live"].detection_ids) | set(self.packs["candidate"].detection_ids))
        return {i: {"live": self.counts["live"][i], "candidate": self.counts["candidate"][i]} for i in ids}


def backtest(
    events: Iterable[tuple[int, int, float, Event]],
    live: RulePack,
    candidate: RulePack,
    lists: dict[str, frozenset[str]],
) -> Hits:
    """Run (offset, partition, ingested_at, event) through fresh engines for both packs.

    Returns, per detection id, its hits under ``live`` and under ``candidate``.
    """
    run = Backtest(live, candidate, lists)
    for offset, partition, ingested_at, event in events:
        run.feed(offset, partition, ingested_at, event)
    run.finish()
    return run.hits()
