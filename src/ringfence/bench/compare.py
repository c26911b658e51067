"""One keyed workload on several runtimes, measured in the same run: a sliding 10-minute
count of card authorisations per customer and an alert above a threshold. The window slides
in 60 buckets, as Ringfence's do, so every runtime computes exactly the same counts.

- ``ringfence_native``, ``ringfence_python``: Ringfence's engines (the compiled core, the
  reference) with a one-feature, one-rule pack (in process, no I/O);
- ``python``: a plain Python loop over a dict of bucket dicts (the floor any engine adds to);
- ``bytewax``: Bytewax's dataflow (``key_on`` + ``stateful_map``) with its testing source.

All see the same events and must raise the same number of alerts.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from ringfence.engine.native import make_engine
from ringfence.engine.pack import load_pack
from ringfence.errors import RulePackError
from ringfence.events.model import Event

WINDOW_S = 600.0
THRESHOLD = 5

PACK = f"""
version: bench
features:
  - name: auths_10m
    on: [card.authorization]
    by: customer_id
    agg: count
    window: {int(WINDOW_S)}s
rules:
  - id: many_auths
    on: [card.authorization]
    when: auths_10m > {THRESHOLD}
    severity: high
    audience: fraud
    title: "{{customer_id}}: many card authorisations"
"""

Workload = list[tuple[str, float]]  # (customer id, event time)


def workload(events: int, customers: int, seed: int = 7) -> Workload:
    rng = random.Random(seed)  # nosec B311 # noqa: S311 - synthetic traffic, not secrets
    t = 1_795_000_000.0
    out = []
    for _ in range(events):
        t += rng.expovariate(1.0 / 0.02)  # ~50 events/s of event time
        hot = rng.random() < 0.05  # a few busy customers cross the threshold
        out.append((f"cus_{rng.randrange(20 if hot else customers)}", t))
    return out


BUCKET_S = WINDOW_S / 60


def count_in_window(window: dict[int, int], t: float) -> int:
    """Add an event at ``t`` to a key's buckets; return the events in the window up to it."""
    top = math.floor(t / BUCKET_S)
    window[top] = window.get(top, 0) + 1
    for old in [b for b in window if b <= top - 60]:
        del window[old]
    return sum(window.values())


def run_python(events: Workload) -> int:
    windows: dict[str, dict[int, int]] = {}
    alerts = 0
    for customer, t in events:
        window = windows.get(customer)
        if window is None:
            window = windows[customer] = {}
        if count_in_window(window, t) > THRESHOLD:
            alerts += 1
    return alerts


def run_ringfence(events: Workload, engine_name: str = "python") -> int:
    engine = make_engine(load_pack(PACK), 5.0, engine=engine_name)
    data = {"card_id": "tok_1", "amount": "10.00", "currency": "EUR", "channel": "pos", "approved": True}
    alerts = 0
    for offset, (customer, t) in enumerate(events, 1):
        event = Event(
            event_id=str(offset), type="card.authorization", occurred_at=t, source="b", data=data, customer_id=customer
        )
        alerts += len(engine.process(event, offset, 0, t))
    return alerts


def run_bytewax(events: Workload) -> int:
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource, run_main

    def count(window: dict[int, int] | None, t: float) -> tuple[dict[int, int], bool]:
        window = {} if window is None else window
        return window, count_in_window(window, t) > THRESHOLD

    out: list[Any] = []
    flow = Dataflow("windowed_count")
    stream = op.input("events", flow, TestingSource(events, batch_size=1000))
    keyed = op.key_on("by_customer", stream, lambda e: e[0])
    times = op.map_value("time", keyed, lambda e: e[1])
    hits = op.stateful_map("count", times, count)
    alerts = op.filter("over", hits, lambda kv: kv[1])
    op.output("alerts", alerts, TestingSink(out))
    run_main(flow)  # type: ignore[no-untyped-call]
    return len(out)


ENGINES = ("native", "python")
RUNTIMES: dict[str, Callable[[Workload], int]] = {
    "python": run_python,
    **{f"ringfence_{name}": partial(run_ringfence, engine_name=name) for name in ENGINES},
    "bytewax": run_bytewax,
}


def compare(events: int, customers: int, repeats: int, engines: tuple[str, ...] = ENGINES) -> dict[str, Any]:
    """Events/s of each runtime (median of ``repeats``, interleaved) and ratios to Bytewax.
    An engine that cannot run here is left out, with the reason, unless it is the only one asked for."""
    unavailable, classes = {}, {}
    for name in engines:
        try:
            classes[name] = type(make_engine(load_pack(PACK), 5.0, engine=name)).__name__
        except RulePackError as exc:
            if len(engines) == 1:
                raise
            unavailable[name] = str(exc)
    skipped = {f"ringfence_{name}" for name in (*unavailable, *(set(ENGINES) - set(engines)))}
    runtimes = {name: fn for name, fn in RUNTIMES.items() if name not in skipped}
    work = workload(events, customers)
    timings: dict[str, list[float]] = {name: [] for name in runtimes}
    alerts: dict[str, int] = {}
    for _ in range(repeats):
        for name, fn in runtimes.items():
            started = time.perf_counter()
            alerts[name] = fn(work)
            timings[name].append(time.perf_counter() - started)
    if len(set(alerts.values())) != 1:
        raise AssertionError(f"the runtimes disagree on the alerts: {alerts}")
    rates = {name: len(work) / sorted(t)[len(t) // 2] for name, t in timings.items()}
    return {
        "workload": f"sliding {int(WINDOW_S)} s count per customer, alert when > {THRESHOLD}",
        "events": len(work),
        "customers": customers,
        "repeats": repeats,
        "alerts": alerts["bytewax"],
        "engine_classes": classes,
        "unavailable": unavailable,
        "events_per_s": {name: round(rate) for name, rate in rates.items()},
        "events_per_s_all": {name: [round(len(work) / t) for t in ts] for name, ts in timings.items()},
        "ratio_to_bytewax": {name: round(rate / rates["bytewax"], 2) for name, rate in rates.items()},
    }
