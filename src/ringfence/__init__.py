"""Ringfence: real-time event processing and alerting for digital banking.

The names below are the stable public API; everything else is internal.
"""

from ringfence.alerts import Action, Alert, Decision, alert_id
from ringfence.config import Settings, load_settings
from ringfence.engine import (
    AlertSignal,
    Engine,
    RulePack,
    default_pack_text,
    load_pack,
    load_pack_file,
)
from ringfence.errors import (
    AuthError,
    ConfigError,
    EventError,
    ExpressionError,
    FieldError,
    ForbiddenError,
    NotFound,
    OverloadedError,
    RequestError,
    RingfenceError,
    RulePackError,
    StoreError,
)
from ringfence.events import Event, decode_batch, validate_event

__version__ = "0.1.0"

__all__ = [
    "Action",
    "Alert",
    "AlertSignal",
    "AuthError",
    "ConfigError",
    "Decision",
    "Engine",
    "Event",
    "EventError",
    "ExpressionError",
    "FieldError",
    "ForbiddenError",
    "NotFound",
    "OverloadedError",
    "RequestError",
    "RingfenceError",
    "RulePack",
    "RulePackError",
    "Settings",
    "StoreError",
    "__version__",
    "alert_id",
    "decode_batch",
    "default_pack_text",
    "load_pack",
    "load_pack_file",
    "load_settings",
    "validate_event",
]
