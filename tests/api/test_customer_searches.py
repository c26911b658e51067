"""A search of the log for a customer's events (a scan of their partition, seconds when they are
not there) is one per key at a time: one key looping over absent customers holds one of the
log's scanners, never every one of them (found by a hostile test of the kafka runtime)."""

from __future__ import annotations

import pytest

from ringfence.api.customers import Searches
from ringfence.errors import RequestError


def test_a_key_has_one_search_under_way_at_a_time_and_others_are_not_held_up() -> None:
    searches = Searches()
    with searches.one_of("analyst-1"):
        with pytest.raises(RequestError) as refused, searches.one_of("analyst-1"):
            pass
        assert (refused.value.status, refused.value.code) == (429, "too_many_searches")
        with searches.one_of("analyst-2"):  # another key's search goes on
            pass
    with searches.one_of("analyst-1"):  # given back however the search ended
        pass
    with pytest.raises(ValueError, match="the log failed"), searches.one_of("analyst-1"):
        raise ValueError("the log failed")
    with searches.one_of("analyst-1"):
        pass
