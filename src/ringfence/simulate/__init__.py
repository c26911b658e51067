"""Synthetic bank traffic with labelled scenarios."""

from ringfence.simulate.scenarios import SCENARIOS
from ringfence.simulate.traffic import Label, Traffic

__all__ = ["SCENARIOS", "Label", "Traffic"]
