"""An event's time as the engine keeps it: when it happened, never past when it arrived."""

from __future__ import annotations


def event_time_mark(occurred_at: float, ingested_at: float) -> float:
    """When an event happened, but never past when it arrived: how far it moves its
    partition's event time (the watermark), and when features and patterns hold it. Events may
    be dated minutes ahead (producers' clocks; the validator allows ``MAX_FUTURE_SKEW_S``): one
    such must not run every other key's event time on (firing their absence timers, judging
    their events late), nor sit ahead of other producers' events in a shared key's state, a
    sequence or a heartbeat. An arrival of 0 is unknown (a replay without one), and bounds
    nothing. Rules still read ``occurred_at`` as sent."""
    return min(occurred_at, ingested_at) if ingested_at > 0 else occurred_at
