"""A long-running service's start-up objects, set aside from the garbage collector.

A service holds some 80,000 objects from start-up for good (modules, functions, types, its
pack), and each full collection walked them all: 60-160 ms pauses every ten seconds or so in
a process worker at 2,000 events/s, in every alert's latency that met one (the objects that
survive a few young collections, a batch's for instance, trigger the full ones however little
stays). Frozen once the service has started, they are never walked again; what it allocates
later is collected as before. The process worker and dispatch freeze before their loop, and
every HTTP service (``ringfence up`` too) as its server starts.
"""

from __future__ import annotations

import gc


def freeze_start_up() -> None:
    """Move every object the process holds now out of the collector's reach (``gc.freeze``):
    call it once, when a service has started and before it takes work. A cycle among them
    that becomes garbage later is never freed: start-up's objects live as long as the process."""
    gc.collect()  # garbage of start-up first: frozen, it would stay
    gc.freeze()
