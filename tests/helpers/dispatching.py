"""The alert pipeline stepped by hand in tests: a dispatcher over a store, with an injected clock,
and the signals that make its alerts."""

from __future__ import annotations

import os
from typing import Any

from ringfence.alerts.config import build_config
from ringfence.alerts.dispatcher import Dispatcher
from ringfence.metrics import Metrics
from ringfence.store import Checkpoint
from ringfence.store.sql import SqlStore
from ringfence.testing import FixedClock
from tests.helpers.store import signal

SECRET = "s3cret-for-tests"


def dispatcher(store: SqlStore, clock: FixedClock, config: dict[str, Any], **kw: Any) -> Dispatcher:
    os.environ["RINGFENCE_SECRET_TEST_WEBHOOK"] = SECRET
    os.environ["RINGFENCE_SECRET_TEST_PD"] = "pd-routing-key"
    return Dispatcher(store, build_config(config), clock, Metrics(), **kw)


def webhook_config(url: str, **route: Any) -> dict[str, Any]:
    return {
        "receivers": [
            {"name": "hook", "webhook": {"url": url + "/hook", "secret_env": "RINGFENCE_SECRET_TEST_WEBHOOK"}}
        ],
        "route": {
            "receiver": "hook",
            "group_by": ["customer_id"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            **route,
        },
        "retry": {"base_delay": "1s", "max_delay": "10s", "max_attempts": 4},
    }


def hit(store: SqlStore, clock: FixedClock, offset: int, **kw: Any) -> None:
    store.commit_batch([signal(offset, **kw)], Checkpoint("p", offset), clock.time())


def run(d: Dispatcher, clock: FixedClock, seconds: float, step: float = 1.0) -> None:
    """Step the dispatcher while time passes."""
    d.step()
    end = clock.now + seconds
    while clock.now < end:
        clock.advance(step)
        d.step()
