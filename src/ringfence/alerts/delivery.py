"""What a delivery attempt's result means for its notification, for every runtime: sent,
tried again later (exponential backoff with jitter, never sooner than the receiver's
Retry-After), or dead (a receiver's refusal, or out of attempts)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ringfence.alerts.config import RetryPolicy
from ringfence.alerts.model import NotificationStatus
from ringfence.alerts.notify.base import Delivery, Outcome


@dataclass(frozen=True)
class NextStep:
    """The notification's status after an attempt, when to try again if pending, and the
    attempt's failure (``detail``; empty once sent)."""

    status: NotificationStatus
    attempts: int
    next_attempt_at: float
    detail: str


def retry_delay(policy: RetryPolicy, attempts: int, retry_after: float | None, rng: random.Random) -> float:
    """Seconds before try ``attempts + 1``: base x 2^(attempts-1) capped at the policy's
    maximum, scaled by a random 0.5..1 so retries of many notifications do not stampede, and
    never shorter than the receiver's Retry-After (itself capped at the maximum)."""
    delay: float = min(policy.max_delay_s, policy.base_delay_s * 2 ** max(0, attempts - 1))
    delay *= rng.uniform(0.5, 1.0)
    if retry_after is not None:
        delay = max(delay, min(retry_after, policy.max_delay_s))
    return delay


def after_attempt(
    result: Delivery, attempts_before: int, policy: RetryPolicy, now: float, rng: random.Random
) -> NextStep:
    """The next step of a notification whose attempt number ``attempts_before + 1`` gave ``result``."""
    attempts = attempts_before + 1
    if result.outcome is Outcome.SENT:
        return NextStep(NotificationStatus.SENT, attempts, now, "")
    if result.outcome is Outcome.RETRY and attempts < policy.max_attempts:
        delay = retry_delay(policy, attempts, result.retry_after, rng)
        return NextStep(NotificationStatus.PENDING, attempts, now + delay, result.detail)
    return NextStep(NotificationStatus.DEAD, attempts, now, result.detail)
