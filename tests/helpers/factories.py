"""Factories for validated events in unit tests."""

from __future__ import annotations

import json
from typing import Any

from ringfence.events import Event, validate_event
from ringfence.testing import event

T0 = 1_795_000_000.0  # a fixed event time (2026-11-18)
# a one-feature pack: card authorizations per card over 10 minutes
AUTHS_10M_PACK = """
version: t1
features:
  - name: auths_10m
    on: [card.authorization]
    by: data.card_id
    agg: count
    window: 10m
"""


def ev(type_: str = "card.authorization", at: float = T0, **kwargs: Any) -> Event:
    """A validated :class:`Event`; keyword arguments as for :func:`ringfence.testing.event`."""
    return validate_event(json.dumps(event(type_, at=at, **kwargs)).encode(), now=at)
