"""A service's start-up objects are set aside from the garbage collector."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def test_a_started_service_s_full_collections_walk_only_what_it_allocated_since() -> None:
    """In a fresh interpreter (freezing is for the process's life): after the platform's
    modules are imported and frozen, a full collection walks a small fraction of what it did,
    and what is allocated later is still collected."""
    probe = textwrap.dedent("""
        import gc, json
        import ringfence.api.app, ringfence.runtimes.kafka.worker, ringfence.engine
        from ringfence.runtimes.heap import freeze_start_up
        gc.collect()
        before = len(gc.get_objects())
        freeze_start_up()
        after = len(gc.get_objects())

        class Node:
            pass

        a, b = Node(), Node()
        a.other, b.other = b, a
        del a, b
        print(json.dumps([before, after, gc.collect() >= 2]))
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    before, after, later_collected = json.loads(out.stdout)
    assert before > 20_000
    assert after < before / 20
    assert later_collected is True
