"""Bytes of engine state per tracked key, measured with tracemalloc on the engine alone
(the server's RSS also holds SQLite's page cache, the interpreter and the API)."""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Iterable
from typing import Any

from ringfence.engine.engine import Engine
from ringfence.engine.pack import load_pack_file
from ringfence.events.decode import validate_event


def measure(events: Iterable[dict[str, Any]], now: float) -> dict[str, Any]:
    """Run the default pack's engine over ``events``; report the heap its state holds."""
    decoded = [validate_event(json.dumps(e).encode(), now) for e in events]
    engine = Engine(load_pack_file(None), allowed_lateness_s=5.0)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for offset, event in enumerate(decoded, 1):
        engine.process(event, offset, 0, now)
    engine.take_changes()  # the encoded changes are the store's, not the state's
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    customers = {e.customer_id for e in decoded if e.customer_id}
    states = engine.state_size()
    return {
        "events": len(decoded),
        "customers": len(customers),
        "feature_states": states,
        "state_bytes": held,
        "bytes_per_customer": round(held / max(1, len(customers))),
        "bytes_per_feature_state": round(held / max(1, states)),
    }
