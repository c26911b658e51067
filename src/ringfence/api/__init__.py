"""The HTTP API (DESIGN §5)."""
