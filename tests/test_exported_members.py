"""The public facade: sorted, complete, and every name importable."""

from __future__ import annotations

import ringfence


def test_all_is_sorted_and_importable() -> None:
    assert ringfence.__all__ == sorted(ringfence.__all__)
    for name in ringfence.__all__:
        assert getattr(ringfence, name) is not None


def test_public_names_are_exactly_the_exported_ones() -> None:
    public = {
        n for n in dir(ringfence) if not n.startswith("_") and not isinstance(getattr(ringfence, n), type(ringfence))
    }
    assert public == {n for n in ringfence.__all__ if not n.startswith("__")}
