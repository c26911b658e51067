"""Backpressure shared out by producer: past half of the lag bound, the key that sent more
than its share of late is turned away first (a hostile test: one key's flood made another
producer's requests 503 and slow); a producer alone is refused at the bound, or once what it
queued would wait more than MAX_WAIT_S while it sends more than is processed."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ringfence.errors import OverloadedError
from ringfence.metrics import Metrics
from ringfence.runtimes import ingest as ingest_module
from ringfence.runtimes.ingest import SHARE_HALF_LIFE_S, IngestService
from ringfence.testing import FixedClock

MAX_LAG = 1_000


class Lag:
    events = 0

    def __call__(self) -> int:
        return self.events


def service(clock: FixedClock, lag: Lag) -> IngestService:
    return IngestService(None, Metrics(), clock, max_batch_events=10_000, max_lag_events=MAX_LAG, lag=lag)  # type: ignore[arg-type]


def waiting_service(
    clock: FixedClock, lag: Lag, lag_s: Callable[[], float], metrics: Metrics, max_lag: int = MAX_LAG
) -> IngestService:
    """An ingest whose processor is ``lag`` events and ``lag_s`` seconds behind."""
    return IngestService(
        None,  # type: ignore[arg-type]
        metrics,
        clock,
        max_batch_events=10_000,
        max_lag_events=max_lag,
        lag=lag,
        lag_s=lag_s,
    )


def test_a_flooding_key_is_turned_away_first_and_the_others_are_let_in() -> None:
    clock, lag = FixedClock(1_000.0), Lag()
    ingest = service(clock, lag)
    ingest._shares.add("flood", 50_000)
    ingest._shares.add("card-processor", 20)
    lag.events = 600  # past half the bound
    with pytest.raises(OverloadedError, match="more than its share"):
        ingest.check_capacity("flood")
    ingest.check_capacity("card-processor")  # under its share: let in
    ingest.check_capacity("a-key-not-seen-yet")
    lag.events = MAX_LAG + 1  # at the bound: everyone waits
    with pytest.raises(OverloadedError, match="more than 1000 events behind"):
        ingest.check_capacity("card-processor")


def test_a_producer_alone_is_refused_only_at_the_bound_and_a_flood_is_forgotten() -> None:
    clock, lag = FixedClock(1_000.0), Lag()
    ingest = service(clock, lag)
    ingest._shares.add("only", 50_000)
    lag.events = 900
    ingest.check_capacity("only")  # nobody else to share with
    ingest._shares.add("other", 5)
    with pytest.raises(OverloadedError):
        ingest.check_capacity("only")
    clock.advance(SHARE_HALF_LIFE_S * 4)  # "other" has gone quiet (5 events decayed under 1)
    ingest.check_capacity("only")
    lag.events = 400  # under half the bound: no one is turned away
    ingest._shares.add("other", 5)
    ingest.check_capacity("only")


def test_a_key_over_its_share_is_turned_away_once_events_wait_seconds_however_few_they_are() -> None:
    """Found by a hostile test: events each raising alerts are processed some 3,000 a second,
    so events waited 70 to 100 s long before the lag reached half of max_lag_events, and every
    other producer's detections with them. By their wait, the flooding key is turned away."""
    clock, lag = FixedClock(1_000.0), Lag()
    waited = [0.0]
    ingest = waiting_service(clock, lag, lambda: waited[0], Metrics())
    ingest._shares.add("flood", 50_000)
    ingest._shares.add("card-processor", 20)
    lag.events = 100  # far under half the bound
    waited[0] = 2.0
    ingest.check_capacity("flood")  # a short wait: let in
    waited[0] = 8.0
    with pytest.raises(OverloadedError, match="wait 8 s to be processed"):
        ingest.check_capacity("flood")
    ingest.check_capacity("card-processor")  # under its share: let in


def test_several_keys_flooding_at_once_are_each_turned_away_and_the_others_let_in() -> None:
    """Found by a re-test: two keys flooding at equal rates each sent less than 1.5 times the
    mean of what keys sent, so neither was turned away before the hard bound, and another
    producer's detections waited 48 s. Shared out max-min fairly, what was processed lately
    gives each flooding key a share far under what it sent."""
    clock, lag = FixedClock(1_000.0), Lag()
    metrics = Metrics()
    waited = [0.0]
    ingest = waiting_service(clock, lag, lambda: waited[0], metrics, 1_000_000)
    for _ in range(10):  # ten seconds: each flood 25,000 events a second, the other 20; 3,000 processed
        ingest._shares.add("flood-1", 25_000)
        ingest._shares.add("flood-2", 25_000)
        ingest._shares.add("flood-3", 25_000)
        ingest._shares.add("card-processor", 20)
        metrics.events_processed.inc(3_000)
        clock.advance(1.0)
    waited[0] = 8.0
    for flood in ("flood-1", "flood-2", "flood-3"):
        with pytest.raises(OverloadedError, match="more than its share"):
            ingest.check_capacity(flood)
    ingest.check_capacity("card-processor")


def test_with_nothing_processed_here_the_mean_of_what_keys_sent_is_the_share() -> None:
    """The kafka runtime's ingest processes nothing itself: its shares are as before."""
    clock, lag = FixedClock(1_000.0), Lag()
    ingest = service(clock, lag)
    ingest._shares.add("flood-1", 25_000)
    ingest._shares.add("flood-2", 25_000)
    ingest._shares.add("card-processor", 20)
    lag.events = 600
    ingest.check_capacity("flood-1")  # 1.5 times the mean is 25,010: not over it
    ingest._shares.add("flood-1", 25_000)
    with pytest.raises(OverloadedError, match="more than its share"):
        ingest.check_capacity("flood-1")


def test_a_key_sending_alone_is_turned_away_once_what_it_queued_would_wait_too_long_and_a_newcomer_let_in() -> None:
    """A re-test: 6 s of one key's alert-raising events, sent alone, were all taken (it had
    nobody to share with) and held the next key's alerts 34 s. Past MAX_WAIT_S, a key sending
    more than what the processor gets through is turned away even alone; a key sending little
    is let in, its events behind the queue rather than refused."""
    clock, lag = FixedClock(1_000.0), Lag()
    metrics = Metrics()
    waited = [0.0]
    ingest = waiting_service(clock, lag, lambda: waited[0], metrics, 1_000_000)
    for _ in range(3):  # 17,000 a second taken, 3,000 processed
        ingest._shares.add("burst", 17_000)
        metrics.events_processed.inc(3_000)
        clock.advance(1.0)
    waited[0] = ingest_module.SOFT_LAG_S + 1
    ingest.check_capacity("burst")  # alone, under the most: let in
    waited[0] = ingest_module.MAX_WAIT_S + 1
    with pytest.raises(OverloadedError, match="more than its share"):
        ingest.check_capacity("burst")
    ingest.check_capacity("victim")  # sent nothing yet: let in
    ingest._shares.add("victim", 17)
    ingest.check_capacity("victim")
    # a key alone sending less than is processed is let in, whatever the wait
    quiet = waiting_service(clock, lag, lambda: ingest_module.MAX_WAIT_S + 1, metrics, 1_000_000)
    for _ in range(3):
        quiet._shares.add("steady", 1_000)
        metrics.events_processed.inc(3_000)
        clock.advance(1.0)
    quiet.check_capacity("steady")
