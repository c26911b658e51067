"""A partition key's recent event ids (the aws runtime's duplicate window): the window of
arrival, the cap, and the digest."""

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


def test_an_id_that_arrived_within_the_window_of_the_newest_is_kept() -> None:
    t0 = 1_700_000_000
    blob = dedup.with_ids(b"", ids(("web|new", t0)))
    blob = dedup.with_ids(blob, ids(("web|earlier", t0 - dedup.WINDOW_S)))  # at the window's edge
    assert dedup.digest("web|earlier") in dedup.ids_of(blob)


def test_the_digest_tells_the_source_and_the_id_apart() -> None:
    assert len(dedup.digest("web|evt-1")) == 8
    assert dedup.digest("web|evt-1") != dedup.digest("mobile-app|evt-1")
    assert dedup.digest("web|evt-1") == dedup.digest("web|evt-1")


def test_the_cap_keeps_the_last_to_arrive_within_one_second() -> None:
    blob = b""
    for i in range(dedup.KEPT + 5):  # a burst: every id the same second
        blob = dedup.with_ids(blob, ids((f"svc|{i}", 1_700_000_000)))
    kept = dedup.ids_of(blob)
    assert [dedup.digest(f"svc|{i}") for i in range(5, dedup.KEPT + 5)] == list(kept)
