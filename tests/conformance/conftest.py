"""The runtime conformance suite runs each test against every runtime's alert pipeline (the
``runtime`` fixture, see :mod:`tests.helpers.conformance`) with the same expectations.

A runtime that genuinely differs is marked on the test with
``@pytest.mark.known_difference("aws", reason=...)``: that runtime's run is then a strict
xfail (it fails the suite the day the difference is gone, so the mark goes too).
PostgreSQL and the local AWS endpoint skip on a laptop without them and fail under CI=true.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ringfence.store.sql import SqlStore
from tests.helpers.aws import REGION
from tests.helpers.conformance import DynamoHarness, Harness, SqlHarness
from tests.helpers.receivers import RecordingReceiver

RUNTIMES = ("embedded", "postgres", "aws")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "known_difference(runtime, reason): the runtime differs here; its run is a strict xfail"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        params = getattr(item, "callspec", None)
        runtime = params.params.get("runtime") if params is not None else None
        for mark in item.iter_markers("known_difference"):
            if mark.args[0] == runtime:
                item.add_marker(pytest.mark.xfail(strict=True, reason=f"{runtime}: {mark.kwargs['reason']}"))


@pytest.fixture(scope="session")
def session_receiver() -> Iterator[RecordingReceiver]:
    r = RecordingReceiver()
    yield r
    r.close()


@pytest.fixture
def receiver(session_receiver: RecordingReceiver) -> RecordingReceiver:
    """A webhook receiver as good as new: the session's, emptied (each test's notifications are
    sent within its dispatcher steps, so none arrives late), since stopping one takes 0.5 s."""
    session_receiver.statuses.clear()
    session_receiver.received.clear()
    session_receiver.retry_after = None
    return session_receiver


@pytest.fixture(scope="session")
def dynamodb(aws_endpoint: str) -> Any:
    from ringfence.runtimes.aws.resources import AwsClients

    return AwsClients(REGION).dynamodb


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """The alert pipeline of the embedded, kafka (PostgreSQL) or aws (DynamoDB) runtime."""
    harness: Harness
    if request.param == "embedded":
        from ringfence.store.sqlite import SqliteStore

        store = SqliteStore(tmp_path / "store.db")
        harness = SqlHarness("embedded", store)
        yield harness
        harness.close()
        store.close()
        return
    if request.param == "postgres":
        make: Callable[..., SqlStore] = request.getfixturevalue("make_pg_store")
        harness = SqlHarness("postgres", make())  # the fixture closes the store
    else:
        harness = DynamoHarness(request.getfixturevalue("dynamodb"))
    yield harness
    harness.close()
