"""A journal append that fails answers producers 503 naming no directory: its message may name
a path of the host (a re-test planted a link where the next segment's duplicate index goes, and
every producer read the data dir's path)."""

from __future__ import annotations

import asyncio

import pytest

from ringfence.errors import OverloadedError, StoreError
from ringfence.events.model import Event
from ringfence.metrics import Metrics
from ringfence.runtimes.ingest import IngestResult, IngestService
from ringfence.testing import FixedClock


class FailingJournal:
    async def append(self, events: list[Event]) -> list[int | None]:
        raise StoreError("/srv/bank/ringfence-data/journal-000000000003.dedup is a link or no directory")


def test_a_failed_append_answers_503_naming_no_path() -> None:
    ingest = IngestService(
        FailingJournal(), Metrics(), FixedClock(1_000.0), max_batch_events=10, max_lag_events=10, lag=lambda: 0
    )
    with pytest.raises(OverloadedError) as refused:
        asyncio.run(ingest.append([], IngestResult()))
    assert str(refused.value) == (
        "the journal append failed, nothing of this request was kept: "
        "journal-000000000003.dedup is a link or no directory"
    )
    assert refused.value.retry_after >= 1
