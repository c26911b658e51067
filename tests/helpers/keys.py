"""The API keys of each kind the shared embedded ``server`` fixture is started with."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Keys:
    admin: str
    producer: str
    reader: str
    analyst: str
