"""The analytics engine: features, expressions, rules. Pure: no I/O."""

from ringfence.engine.engine import Engine
from ringfence.engine.pack import RulePack, default_pack_text, load_pack, load_pack_file
from ringfence.engine.rules import AlertSignal

__all__ = ["AlertSignal", "Engine", "RulePack", "default_pack_text", "load_pack", "load_pack_file"]
