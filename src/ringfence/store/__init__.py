"""The store: alerts, history, checkpoints, keys and audit."""

from ringfence.store.base import Checkpoint, LateEvent
from ringfence.store.keys import SCOPES, ApiKeys, KeyInfo
from ringfence.store.sqlite import SqliteStore

__all__ = ["SCOPES", "ApiKeys", "Checkpoint", "KeyInfo", "LateEvent", "SqliteStore"]
