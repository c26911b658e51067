"""Where the handlers find their AWS resources: names from the environment (the SAM template
sets them), and boto3 clients made on first use and kept for the life of the container."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ringfence.errors import ConfigError

_VARIABLES = {
    "stream": "RINGFENCE_AWS_STREAM",
    "state_table": "RINGFENCE_AWS_STATE_TABLE",
    "alerts_table": "RINGFENCE_AWS_ALERTS_TABLE",
    "alerts_topic_arn": "RINGFENCE_AWS_ALERTS_TOPIC_ARN",
    "poison_queue_url": "RINGFENCE_AWS_POISON_QUEUE_URL",
}


@dataclass(frozen=True)
class AwsNames:
    """The stream, tables, topic and queue one deployment uses."""

    stream: str
    state_table: str
    alerts_table: str
    alerts_topic_arn: str
    poison_queue_url: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> AwsNames:
        """Read the names from ``RINGFENCE_*`` variables; raise ConfigError naming any missing."""
        missing = [var for var in _VARIABLES.values() if not env.get(var)]
        if missing:
            raise ConfigError(f"the aws runtime needs these environment variables: {', '.join(missing)}")
        return cls(**{name: env[var] for name, var in _VARIABLES.items()})

    def to_env(self) -> dict[str, str]:
        return {var: getattr(self, name) for name, var in _VARIABLES.items()}


# a quick client's bounds (SNS: what it does not take is owed, not lost), and the longest one
# call of it may take, backoff included: an invocation asks it only with that much time left
QUICK_CONNECT_S, QUICK_READ_S, QUICK_ATTEMPTS = 2, 5, 2
QUICK_CALL_MAX_S = (QUICK_CONNECT_S + QUICK_READ_S) * QUICK_ATTEMPTS + 1


@dataclass
class AwsClients:
    """Low-level boto3 clients. The endpoint and credentials come from boto3's usual sources
    (``AWS_ENDPOINT_URL`` points them at a local endpoint in tests)."""

    region: str | None = None

    def _client(self, service: str, *, quick: bool = False) -> Any:
        import boto3  # the aws extra: imported only by the aws runtime
        from botocore.config import Config

        if quick:
            config = Config(
                retries={"mode": "standard", "max_attempts": QUICK_ATTEMPTS},
                connect_timeout=QUICK_CONNECT_S,
                read_timeout=QUICK_READ_S,
            )
        else:
            config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30)
        return boto3.client(service, region_name=self.region or os.environ.get("AWS_REGION"), config=config)

    @cached_property
    def kinesis(self) -> Any:
        return self._client("kinesis")

    @cached_property
    def dynamodb(self) -> Any:
        return self._client("dynamodb")

    @cached_property
    def sns(self) -> Any:
        """Quick: a publish is a few milliseconds, and what SNS does not take stays owed (sent by
        a later invocation or the tick), so a slow SNS holds an invocation for seconds, not minutes."""
        return self._client("sns", quick=True)

    @cached_property
    def sqs(self) -> Any:
        return self._client("sqs")


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


# a cancelled transaction's per-item reasons worth another try after a pause: a racing writer
# (read again and redo) or a hot partition throttled; any other (an item over its size, a
# malformed request) would fail again
RETRY_CODES = frozenset(
    {"None", "ConditionalCheckFailed", "TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
)


def cancellation_codes(exc: BaseException) -> list[str]:
    """Per-item reasons of a cancelled DynamoDB transaction ('None' for items that were fine)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return []
    return [str(r.get("Code", "None")) for r in response.get("CancellationReasons", [])]


def contention_pause_s(retry: int, rng: random.Random, base_s: float = 0.025, cap_s: float = 1.0) -> float:
    """How long to wait before ``retry`` (1, 2…) of a write that lost a race for an item: up to
    ``base_s`` for the first, doubling each time to at most ``cap_s``, drawn at random (AWS's
    "full jitter"). Writers racing for one hot item (an address every shard sees) spread out
    instead of retrying in step."""
    return rng.uniform(0.0, min(cap_s, base_s * 2 ** (retry - 1)))


def batch_get(db: Any, table: str, request: dict[str, Any]) -> list[dict[str, Any]]:
    """The items one ``BatchGetItem`` request on ``table`` finds (100 keys at most), asking again
    for the keys DynamoDB left unprocessed (it throttled them) after a pause doubling from
    50 ms to a second, as AWS advises: a retry at once would be throttled again."""
    found: list[dict[str, Any]] = []
    pending: dict[str, Any] = {table: request}
    delay = 0.05
    while pending:
        reply = db.batch_get_item(RequestItems=pending)
        found += reply.get("Responses", {}).get(table, [])
        pending = reply.get("UnprocessedKeys") or {}
        if pending:
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    return found
