"""Synthetic bank traffic with labelled scenarios."""

from ringfence.simulate.traffic import SCENARIOS, Label, Traffic

__all__ = ["SCENARIOS", "Label", "Traffic"]
