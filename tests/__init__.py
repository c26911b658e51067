"""Ringfence's test suite (scripts/test runs it)."""

from tests.helpers.ports import share_free_ports

share_free_ports()  # before any test module imports free_port by name: see tests/helpers/ports.py
