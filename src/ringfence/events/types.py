"""The v1 event wire contract: the envelope and the ``data`` of each built-in type.

These structs validate what producers send; :mod:`ringfence.events.decode` turns them
into the normalised :class:`~ringfence.events.model.Event` the rest of Ringfence uses.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

MIN_OCCURRED_AT = 946_684_800.0  # 2000-01-01T00:00:00Z
MAX_FUTURE_SKEW_S = 300.0  # producers' clocks run a little ahead; more would move every watermark ahead
MAX_EVENT_BYTES = 64 * 1024
CUSTOMERLESS_TYPES = ("api.request",)  # the types whose events need no customer_id

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Text = Annotated[str, msgspec.Meta(max_length=256)]
Country = Annotated[str, msgspec.Meta(pattern="^[A-Z]{2}$")]
Currency = Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")]
Mcc = Annotated[str, msgspec.Meta(pattern="^[0-9]{4}$")]
IpText = Annotated[str, msgspec.Meta(min_length=2, max_length=45)]
Money = int | float | str
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]
Source = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern="^[A-Za-z0-9_.:-]+$")]
TypeName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern="^[a-z][a-z0-9_]*(\\.[a-z][a-z0-9_]*)+$")]


class _Data(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Base of every built-in ``data`` object: unknown fields are rejected."""


class Geo(_Data):
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)]
    country: Country | None = None


class Merchant(_Data):
    id: Id
    mcc: Mcc
    country: Country
    name: Text | None = None


class LoginData(_Data):
    device_id: Id
    ip: IpText
    geo: Geo | None = None
    method: Text | None = None
    reason: Text | None = None


class DeviceRegisteredData(_Data):
    device_id: Id
    platform: Text | None = None


class SecurityChangeData(_Data):
    device_id: Id | None = None
    ip: IpText | None = None
    channel: Text | None = None


class PayeeAddedData(_Data):
    payee_id: Id
    payee_country: Country
    payee_account: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class CardAuthorizationData(_Data):
    card_id: Id
    amount: Money
    currency: Currency
    merchant: Merchant
    channel: Literal["pos", "ecom", "atm", "contactless"]
    approved: bool
    decline_reason: Text | None = None
    geo: Geo | None = None


class TransferInitiatedData(_Data):
    amount: Money
    currency: Currency
    payee_id: Id
    payee_country: Country | None = None
    channel: Text | None = None


class DepositReceivedData(_Data):
    amount: Money
    currency: Currency
    method: Literal["cash", "transfer", "salary", "card"]
    counterparty: Text | None = None


class BalanceUpdatedData(_Data):
    balance: Money
    currency: Currency


class ApiRequestData(_Data):
    service: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    endpoint: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    status: Annotated[int, msgspec.Meta(ge=100, le=599)]
    latency_ms: Annotated[float, msgspec.Meta(ge=0, le=86_400_000)]


BUILTIN_TYPES: dict[str, type[_Data]] = {
    "login.succeeded": LoginData,
    "login.failed": LoginData,
    "device.registered": DeviceRegisteredData,
    "password.reset": SecurityChangeData,
    "contact.changed": SecurityChangeData,
    "mfa.changed": SecurityChangeData,
    "payee.added": PayeeAddedData,
    "card.authorization": CardAuthorizationData,
    "transfer.initiated": TransferInitiatedData,
    "deposit.received": DepositReceivedData,
    "balance.updated": BalanceUpdatedData,
    "api.request": ApiRequestData,
}

# Fields of ``data`` that hold money, and the field naming their currency.
MONEY_FIELDS = ("amount", "balance")
CURRENCY_FIELD = "currency"
# each in the reference currency, set by ingest (:mod:`ringfence.events.fx`); read as numbers too
REFERENCE_MONEY_FIELDS = ("amount_ref", "balance_ref")
NUMERIC_MONEY_FIELDS = frozenset(MONEY_FIELDS + REFERENCE_MONEY_FIELDS)
# Fields masked before storage (account numbers).
MASKED_FIELDS = ("payee_account",)
# The field holding an IP address, checked as one.
IP_FIELD = "ip"


class Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """The v1 envelope as producers send it; ``data`` is validated per type afterwards."""

    event_id: Id
    type: TypeName
    occurred_at: AwareTime
    source: Source
    data: msgspec.Raw
    customer_id: Id | None = None
    account_id: Id | None = None
