"""Synthetic bank traffic with labelled scenarios."""

from ringfence.simulate.population import Label
from ringfence.simulate.scenarios import SCENARIOS
from ringfence.simulate.traffic import Traffic

__all__ = ["SCENARIOS", "Label", "Traffic"]
