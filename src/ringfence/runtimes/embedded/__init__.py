"""The embedded runtime: the SQLite journal, the processor, the ingest worker and the
platform that wires them over one data dir (zero infrastructure)."""
