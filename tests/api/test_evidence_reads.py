"""Reading an alert's evidence back from the log has a time of its own: a log slow to answer
(a stalled broker, records retention removed on one that waited for them) lists the rest
unread, and says so, instead of holding the request and one of the API's threads for minutes."""

from __future__ import annotations

import time

from ringfence.api.alerts import read_evidence
from ringfence.log.base import Record


class SlowLog:
    """Each read takes ``delay_s``; offsets under 100 are gone (None)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.reads: list[int] = []

    def get(self, offset: int) -> Record | None:
        self.reads.append(offset)
        time.sleep(self.delay_s)
        return Record(offset, 0, 1.0, b'{"event_id": "e%d"}' % offset) if offset >= 100 else None


def cited(*offsets: int) -> list[dict[str, object]]:
    return [{"offset": o, "event_id": f"e{o}"} for o in offsets]


def test_every_event_is_read_when_the_log_answers_in_time() -> None:
    items, complete = read_evidence(SlowLog(0.0), cited(5, 100, 101), within_s=5.0)  # type: ignore[arg-type]
    assert complete
    assert [i["event"] for i in items] == [None, {"event_id": "e100"}, {"event_id": "e101"}]


def test_past_its_time_the_rest_is_listed_unread_and_not_complete() -> None:
    log = SlowLog(0.2)
    began = time.monotonic()
    items, complete = read_evidence(log, cited(*range(100, 150)), within_s=0.5)  # type: ignore[arg-type]
    assert time.monotonic() - began < 1.5  # 50 reads would take 10 s
    assert not complete
    assert len(items) == 50
    assert [i["event_id"] for i in items] == [f"e{o}" for o in range(100, 150)]
    read = [i for i in items if i["event"] is not None]
    assert 1 <= len(read) == len(log.reads) < 50
    assert all(i["event"] is None for i in items[len(read) :])
