"""Events: the v1 wire contract, validation, PAN rejection and masking."""

from ringfence.events.decode import (
    DecodedBatch,
    MalformedBody,
    Rejection,
    TooManyEvents,
    decode_batch,
    validate_event,
)
from ringfence.events.model import Event, decode_event, encode_event

__all__ = [
    "DecodedBatch",
    "Event",
    "MalformedBody",
    "Rejection",
    "TooManyEvents",
    "decode_batch",
    "decode_event",
    "encode_event",
    "validate_event",
]
