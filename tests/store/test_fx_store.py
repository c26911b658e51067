"""FX rate tables in both stores: every load a version, the newest in force, audited; the
settings' rates file loaded once; a table of another reference never used."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from ringfence.errors import ConfigError, RequestError
from ringfence.events.fx import FxRate, FxTable
from ringfence.store.fx import FollowedRates, FxRepository
from ringfence.store.sql import SqlStore
from ringfence.store.sqlite import SqliteStore

NOW = dt.datetime(2026, 12, 2, 12, tzinfo=dt.UTC).timestamp()
DAY = dt.date(2026, 12, 1)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> SqlStore:
    if request.param == "sqlite":
        return SqliteStore(tmp_path / "store.db")
    make: Callable[..., SqlStore] = request.getfixturevalue("make_pg_store")
    return make()


def test_each_load_is_a_new_audited_version_and_the_newest_is_in_force(store: SqlStore) -> None:
    repo = FxRepository(store, "EUR", max_age_days=4)
    assert repo.current().version == 0
    assert repo.current().rates == {}
    first = repo.load([FxRate("USD", Decimal("0.92"), DAY), FxRate("JPY", Decimal("0.0061"), DAY)], "alice", NOW)
    second = repo.load([FxRate("USD", Decimal("0.93"), DAY), FxRate("GBP", Decimal("1.17"), DAY)], "bob", NOW + 1)
    assert second.version > first.version
    current = repo.current()
    assert current.version == second.version == repo.version()
    assert {c: str(r.rate) for c, r in current.rates.items()} == {"USD": "0.93", "GBP": "1.17"}
    assert (current.loaded_by, current.max_age_days) == ("bob", 4)
    entries, _ = store.list_audit(10)
    loads = [e for e in entries if e["action"] == "fx.load"]
    assert [e["actor"] for e in loads] == ["bob", "alice"]
    assert loads[0]["detail"] | {"version": 0} == {
        "version": 0,
        "reference": "EUR",
        "rates": 2,
        "added": ["GBP"],
        "removed": ["JPY"],
        "changed": ["USD"],
    }
    assert store.verify_audit().ok


def test_a_table_with_no_rate_never_replaces_rates_in_force(store: SqlStore) -> None:
    """A CSV of its header only wiped every rate: amounts in other currencies lost their
    reference value. An empty table is taken only where none is in force (nothing converts)."""
    repo = FxRepository(store, "EUR", max_age_days=4)
    assert repo.load([], "alice", NOW).rates == {}  # a deployment that converts nothing
    repo.load([FxRate("USD", Decimal("0.92"), DAY)], "alice", NOW + 1)
    with pytest.raises(RequestError) as refused:
        repo.load([], "mallory", NOW + 2)
    message = "no rate of a currency other than EUR: it would replace the 1 in force"
    assert refused.value.details == {"errors": [{"field": "rates", "message": message}]}
    assert set(repo.current().rates) == {"USD"}


def test_a_table_against_another_reference_is_not_used(store: SqlStore) -> None:
    stored = FxRepository(store, "EUR", 4).load([FxRate("USD", Decimal("0.92"), DAY)], "alice", NOW)
    switched = FxRepository(store, "USD", 4).current()
    assert (switched.reference, switched.rates) == ("USD", {})
    assert switched.version == stored.version  # so a follower does not read it again every 5 s
    with pytest.raises(ConfigError, match="not an ISO 4217 currency"):
        FxRepository(store, "EUX", 4)


def test_the_settings_rates_file_is_loaded_when_it_changes_and_a_bad_one_stops_the_start(
    store: SqlStore, tmp_path: Path
) -> None:
    rates = tmp_path / "rates.csv"
    rates.write_text("\ufeffcurrency,rate,as_of\nUSD,0.92,2026-12-01\n")  # a spreadsheet's BOM
    repo = FxRepository(store, "EUR", 4)
    loaded = repo.startup(rates, NOW)
    assert loaded.version > 0
    assert list(loaded.rates) == ["USD"]
    assert repo.startup(rates, NOW + 60).version == loaded.version  # the same file: no new version
    later = repo.load([FxRate("USD", Decimal("0.95"), DAY)], "key:treasury", NOW + 120)
    assert repo.startup(rates, NOW + 180).version == later.version  # a restart keeps the later load
    rates.write_text("currency,rate,as_of\nUSD,0.93,2026-12-01\n")
    changed = repo.startup(rates, NOW + 240)  # the file itself changed: it is loaded
    assert (changed.version > later.version, str(changed.rates["USD"].rate)) == (True, "0.93")
    rates.write_text("currency,rate,as_of\nUSD,zero,2026-12-01\n")
    with pytest.raises(ConfigError, match=r"rates\[0\]\.rate"):
        repo.startup(rates, NOW)
    with pytest.raises(ConfigError, match="cannot read"):
        repo.startup(tmp_path / "missing.csv", NOW)


def test_a_follower_picks_up_another_process_load(store: SqlStore) -> None:
    repo = FxRepository(store, "EUR", 4)
    followed = FollowedRates(repo, repo.current())
    other = FxRepository(store, "EUR", 4)  # the CLI, or another API instance
    other.load([FxRate("CHF", Decimal("1.06"), DAY)], "cli", NOW)
    assert followed.table.version == 0
    followed.refresh()
    assert list(followed.table.rates) == ["CHF"]
    newer = followed.load([FxRate("CHF", Decimal("1.07"), DAY)], "api", NOW + 1)
    followed._adopt(FxTable("EUR", {}, newer.version - 1))  # a read that raced the load, adopted after it
    assert followed.table is newer
