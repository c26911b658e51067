"""Producer request signing: a key may carry an Ed25519 public key; requests made with it
must then be signed, so a leaked bearer token alone cannot inject events.

Ed25519 rather than HMAC: an HMAC needs a secret the server keeps, and Ringfence stores no
secret; a public key is not one. The producer signs ``"<unix timestamp>.<raw body>"`` and
sends ``X-Ringfence-Timestamp`` and ``X-Ringfence-Signature: ed25519=<base64>``; requests
outside a 5-minute window are refused (a replayed body is a duplicate anyway).
Needs ``pip install 'ringfence[signing]'`` (cryptography) where it is used.
"""

from __future__ import annotations

import base64
import binascii

from ringfence.api.params import parse_int
from ringfence.errors import AuthError, StoreError

TIMESTAMP_HEADER = "x-ringfence-timestamp"
SIGNATURE_HEADER = "x-ringfence-signature"
WINDOW_S = 300


def _ed25519() -> object:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise StoreError("request signing needs cryptography: pip install 'ringfence[signing]'") from None
    return ed25519


def public_key_from_pem(pem: bytes) -> str:
    """The raw Ed25519 public key (base64) in a PEM file. Raises StoreError if it is not one."""
    ed25519 = _ed25519()
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise StoreError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):  # type: ignore[attr-defined]
        raise StoreError("the signing key must be an Ed25519 public key")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def verify_request(public_key_b64: str, body: bytes, timestamp: str | None, signature: str | None, now: float) -> None:
    """Raise AuthError unless ``signature`` is the key's over ``timestamp.body``, in the window."""
    if not timestamp or not signature:
        raise AuthError("this key must sign its requests (X-Ringfence-Timestamp, X-Ringfence-Signature)")
    sent_at = parse_int(timestamp, 0, 2**40)  # ASCII digits only: "²".isdigit() is true, int() refuses it
    if sent_at is None or abs(now - sent_at) > WINDOW_S:
        raise AuthError("request signature timestamp is outside the 5-minute window")
    scheme, _, value = signature.partition("=")
    try:
        raw_signature = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw_signature = b""
    ed25519 = _ed25519()
    from cryptography.exceptions import InvalidSignature

    key = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))  # type: ignore[attr-defined]
    try:
        if scheme != "ed25519":
            raise InvalidSignature
        key.verify(raw_signature, timestamp.encode() + b"." + body)
    except InvalidSignature:
        raise AuthError("invalid request signature") from None
