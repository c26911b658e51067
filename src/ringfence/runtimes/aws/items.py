"""DynamoDB plumbing the alerts table's adapters share: attribute values, sort keys, opaque
cursors, paging, and a transaction that says whether it lost a race.

Item layout of the alerts table (key ``pk`` + ``sk``); the modules named own the items:

| item | pk | sk | module |
|---|---|---|---|
| alert | ``a|<alert id>`` | ``alert`` | :mod:`.alerts` |
| history entry | ``a|<alert id>`` | ``h|<at>|<n>`` | :mod:`.alerts` |
| group membership | ``a|<alert id>`` | ``g|<group key>`` | :mod:`.groups` |
| announcement owed | ``a|<alert id>`` | ``owe|<change>`` (``by_active``: ``~announce``) | :mod:`.announcements` |
| dedup pointer | ``d|<rule id>|<dedup key>`` (over 2 KB: ``dh|<rule id>|<sha256>``) | ``ptr`` | :mod:`.alerts` |
| group | ``g|<group key>`` | ``g`` | :mod:`.groups` |
| the dispatcher's next wake-up | ``dispatch`` | ``wake`` | :mod:`.groups` |
| notification | ``n|<notification id>`` | ``n`` | :mod:`.notification_log` |
| silence | ``silences`` | silence id | :mod:`.silences` |
| audit entry, chain head | ``audit|<block>``, ``audit`` | ``<seq>``, ``head`` | :mod:`.audit` |
| a key's budget (of changes) | ``budget|<kind>|<digest of the key>`` | ``b`` | :mod:`.budgets` |

Indexes: ``by_created`` (``gp`` + ``gs``) lists alerts (``gp`` = ``alerts``),
notifications (``notifications``) and silences (``silences``) newest first; ``by_customer`` a customer's alerts;
``by_active`` (``act`` + ``updated_at``, keys only) holds what the pipeline must come back
to: unresolved alerts under their rule id (by last update, for auto-resolve), and under
:data:`DUE_GROUP` / :data:`DUE_NOTIFICATION` the groups and notifications due at
``updated_at`` (rule ids never start with ``~``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

from ringfence.errors import InvalidCursor, StoreError
from ringfence.runtimes.aws.resources import RETRY_CODES, batch_get, cancellation_codes, error_code

CREATED_INDEX = "by_created"
CUSTOMER_INDEX = "by_customer"
ACTIVE_INDEX = "by_active"
DUE_GROUP = "~group"
DUE_NOTIFICATION = "~notify"
LIST_PAGES = 5  # the DynamoDB pages one listing request reads at most, however little its filter matches
_KEY_BYTES = 1024  # the longest key attribute DynamoDB takes (a sort key; a partition key may be 2048)
_json = msgspec.json.Encoder()
_CURSOR_CONTEXT = b"ringfence/aws/listing-cursor/v1"


def s(value: str) -> dict[str, str]:
    return {"S": value}


def n(value: float) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def json_s(value: Any) -> dict[str, str]:
    return {"S": _json.encode(value).decode()}


def sort_time(at: float) -> str:
    """A time as a sort key that orders as the time does."""
    return f"{at:020.6f}"


class CursorSeal:
    """Cursors a caller holds but can neither read nor forge: AES-GCM under a key derived from
    the deployment's secret (its audit key). A listing reads DynamoDB's pages and keeps only what
    the caller may see, so a page can end on an item it may not (another desk's alert): as
    plain JSON, its cursor would name that item, its id and when it was made. Without a secret
    (a deployment without ``RINGFENCE_SECRET_AUDIT_KEY``, which the template requires) cursors
    stay plain."""

    def __init__(self, secret: bytes | None) -> None:
        self._aead: Any = None
        if secret is not None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # the aws extra's

            self._aead = AESGCM(hmac.new(secret, b"ringfence listing cursors", hashlib.sha256).digest())

    def seal(self, plain: bytes) -> bytes:
        if self._aead is None:
            return plain
        nonce = secrets.token_bytes(12)
        return nonce + bytes(self._aead.encrypt(nonce, plain, _CURSOR_CONTEXT))

    def open(self, sealed: bytes) -> bytes:
        """InvalidCursor unless this deployment sealed it (untouched)."""
        if self._aead is None:
            return sealed
        from cryptography.exceptions import InvalidTag

        try:
            return bytes(self._aead.decrypt(sealed[:12], sealed[12:], _CURSOR_CONTEXT))
        except (InvalidTag, ValueError):
            raise InvalidCursor from None


PLAIN_CURSORS = CursorSeal(None)


def encode_cursor(key: dict[str, Any], seal: CursorSeal = PLAIN_CURSORS) -> str:
    return base64.urlsafe_b64encode(seal.seal(_json.encode(key))).decode()


def decode_cursor(cursor: str, key: Mapping[str, str | None], seal: CursorSeal = PLAIN_CURSORS) -> dict[str, Any]:
    """The index key an :func:`encode_cursor` cursor holds, as DynamoDB takes it back.

    It must be a key of the index being queried: the attributes of ``key``, each a string (every
    key attribute of the alerts table is one) DynamoDB could hold, and where ``key`` gives a
    value (the index's partition, a fixed sort key), that value. Anything else is InvalidCursor:
    DynamoDB would refuse it (a 500) or page another listing.
    """
    try:
        plain = seal.open(base64.urlsafe_b64decode(cursor.encode()))
        decoded = msgspec.json.decode(plain, type=dict[str, dict[str, str]])
        values = {name: value["S"] for name, value in decoded.items() if list(value) == ["S"]}
        fits = all(0 < len(v.encode()) <= _KEY_BYTES for v in values.values())
    except (ValueError, msgspec.DecodeError):  # UnicodeEncodeError (a lone surrogate) is a ValueError
        raise InvalidCursor from None
    if len(values) != len(decoded):  # an attribute of another type (N, B, NULL...) beside them
        raise InvalidCursor
    if not fits or values.keys() != key.keys() or any(values[k] != v for k, v in key.items() if v is not None):
        raise InvalidCursor
    return {name: s(value) for name, value in values.items()}


class TransactionRefused(StoreError):
    """DynamoDB cancelled a transaction for a reason another try would meet again (an item
    over its size), not a race."""


class TableItems:
    """One DynamoDB table, read consistently, written in transactions."""

    def __init__(self, dynamodb: Any, table: str, cursor_secret: bytes | None = None) -> None:
        self.db = dynamodb
        self.table = table
        self.cursors = CursorSeal(cursor_secret)

    def get(self, pk: str, sk: str) -> dict[str, Any] | None:
        reply = self.db.get_item(TableName=self.table, Key={"pk": s(pk), "sk": s(sk)}, ConsistentRead=True)
        item: dict[str, Any] | None = reply.get("Item")
        return item

    def get_many(self, keys: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """The items that exist of ``keys`` (any order), read consistently."""
        found: list[dict[str, Any]] = []
        wanted = [{"pk": s(pk), "sk": s(sk)} for pk, sk in dict.fromkeys(keys)]
        while wanted:
            batch, wanted = wanted[:100], wanted[100:]  # BatchGetItem takes 100 keys at most
            found += batch_get(self.db, self.table, {"Keys": batch, "ConsistentRead": True})
        return found

    def pages(self, **query: Any) -> Iterator[list[dict[str, Any]]]:
        """The pages of one query, on the table or one of its indexes, in order."""
        while True:
            reply = self.db.query(TableName=self.table, **query)
            yield reply.get("Items", [])
            if "LastEvaluatedKey" not in reply:
                return
            query["ExclusiveStartKey"] = reply["LastEvaluatedKey"]

    def listing(
        self, query: dict[str, Any], limit: int, cursor: str | None, key: Mapping[str, str | None]
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Up to ``limit`` (at least 1) items of a filtered index ``query``, and the cursor of the
        rest (None: there is no more). ``key``: the index key's attributes, as for :func:`decode_cursor`.

        It reads at most :data:`LIST_PAGES` pages of twice ``limit`` (at least 20) items, so that a
        filter matching little costs a bounded read: the page then ends short, even empty, with
        the cursor where the reading stopped, and clients follow ``next_cursor`` until there is none.
        """
        query = {**query, "Limit": max(limit * 2, 20)}
        if cursor is not None:
            query["ExclusiveStartKey"] = decode_cursor(cursor, key, self.cursors)
        found: list[dict[str, Any]] = []
        resume: dict[str, Any] | None = None
        for _ in range(LIST_PAGES):
            reply = self.db.query(TableName=self.table, **query)
            found += reply.get("Items", [])
            resume = query["ExclusiveStartKey"] = reply.get("LastEvaluatedKey")
            if resume is None or len(found) > limit:
                break
        if len(found) > limit:
            resume = {k: found[limit - 1][k] for k in key}
        return found[:limit], encode_cursor(resume, self.cursors) if resume else None

    def transact(self, items: list[dict[str, Any]]) -> bool:
        """Write ``items`` together; False if a condition failed, another transaction had an
        item (a racing writer: read again) or the partition was throttled. A cancellation for
        any other reason (an item over its size) would fail again: it is raised."""
        try:
            self.db.transact_write_items(TransactItems=items)
        except Exception as exc:
            if error_code(exc) != "TransactionCanceledException":
                raise
            refused = set(cancellation_codes(exc)) - RETRY_CODES
            if refused:  # not worth another try
                raise TransactionRefused(f"DynamoDB cancelled the transaction: {sorted(refused)}") from exc
            return False
        return True

    def update_if(self, key: dict[str, Any], **request: Any) -> bool:
        """One conditional ``UpdateItem`` of the item at ``key``; False if its condition failed."""
        return self._if(self.db.update_item, Key=key, **request)

    def put_if(self, item: dict[str, Any], **request: Any) -> bool:
        """One conditional ``PutItem`` of a whole ``item``; False if its condition failed. For an
        item written whole each time: a reader never meets it part-written (moto, unlike
        DynamoDB, makes an updated item's key before its attributes)."""
        return self._if(self.db.put_item, Item=item, **request)

    def _if(self, call: Any, **request: Any) -> bool:
        try:
            call(TableName=self.table, **request)
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def due(self, kind: str, now: float, limit: int) -> list[tuple[str, str]]:
        """Keys of the items of ``kind`` in ``by_active`` due by ``now``, earliest first."""
        reply = self.db.query(
            TableName=self.table,
            IndexName=ACTIVE_INDEX,
            KeyConditionExpression="act = :k AND updated_at <= :t",
            ExpressionAttributeValues={":k": s(kind), ":t": n(now)},
            Limit=limit,
        )
        return [(i["pk"]["S"], i["sk"]["S"]) for i in reply.get("Items", [])]

    def earliest(self, kind: str) -> float | None:
        """When the first item of ``kind`` in ``by_active`` is due (None: none is)."""
        reply = self.db.query(
            TableName=self.table,
            IndexName=ACTIVE_INDEX,
            KeyConditionExpression="act = :k",
            ExpressionAttributeValues={":k": s(kind)},
            Limit=1,
        )
        items = reply.get("Items", [])
        return float(items[0]["updated_at"]["N"]) if items else None
