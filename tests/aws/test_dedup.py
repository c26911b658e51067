"""A partition key's recent event ids (the aws runtime's duplicate window): the window of
event time, the cap, and the digest."""

from __future__ import annotations

from ringfence.runtimes.aws import dedup


def ids(*pairs: tuple[str, int]) -> list[tuple[bytes, int]]:
    return [(dedup.digest(name), at) for name, at in pairs]


def test_ids_are_kept_within_the_window_of_the_newest() -> None:
    t0 = 1_700_000_000
    blob = dedup.with_ids(b"", ids(("web|a", t0), ("web|b", t0 + 10)))
    assert set(dedup.ids_of(blob)) == {dedup.digest("web|a"), dedup.digest("web|b")}
    blob = dedup.with_ids(blob, ids(("web|c", t0 + dedup.WINDOW_S + 5)))  # a's window has passed, b's not
    assert dedup.ids_of(blob) == {dedup.digest("web|b"): t0 + 10, dedup.digest("web|c"): t0 + dedup.WINDOW_S + 5}


def test_a_busy_key_keeps_its_newest_ids() -> None:
    t0 = 1_700_000_000
    blob = b""
    for i in range(dedup.KEPT + 20):
        blob = dedup.with_ids(blob, ids((f"svc|{i}", t0 + i)))
    kept = dedup.ids_of(blob)
    assert len(kept) == dedup.KEPT
    assert len(blob) == 12 * dedup.KEPT
    assert dedup.digest(f"svc|{dedup.KEPT + 19}") in kept
    assert dedup.digest("svc|19") not in kept  # the oldest went first
    assert dedup.digest("svc|20") in kept


def test_an_event_late_by_its_own_time_is_kept_while_the_window_holds_it() -> None:
    t0 = 1_700_000_000
    blob = dedup.with_ids(b"", ids(("web|new", t0)))
    blob = dedup.with_ids(blob, ids(("web|late", t0 - 60)))  # arrives after, happened before
    assert dedup.digest("web|late") in dedup.ids_of(blob)


def test_the_digest_tells_the_source_and_the_id_apart() -> None:
    assert len(dedup.digest("web|evt-1")) == 8
    assert dedup.digest("web|evt-1") != dedup.digest("mobile-app|evt-1")
    assert dedup.digest("web|evt-1") == dedup.digest("web|evt-1")
