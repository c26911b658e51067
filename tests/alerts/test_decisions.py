"""The alert pipeline's decisions, as pure functions every runtime shares: transitions, muting
(silences, inhibition with ``equal``), silence validation, evidence, and delivery retries."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping

import pytest

from ringfence.alerts.config import InhibitRule, RetryPolicy
from ringfence.alerts.delivery import after_attempt, retry_delay
from ringfence.alerts.lifecycle import (
    MAX_EVIDENCE_EVENTS,
    another_hit,
    merge_evidence,
    muted_status,
    new_evidence,
    transition,
)
from ringfence.alerts.matchers import parse_matchers
from ringfence.alerts.model import STATUSES, Action, AlertStatus, NotificationStatus
from ringfence.alerts.muting import InhibitionSources, inhibited_by, label_set, mute_reason, silenced_by
from ringfence.alerts.notify.base import Delivery, Outcome
from ringfence.alerts.silences import MAX_MATCHERS, Silence, SilenceError, check_silence
from ringfence.errors import Conflict
from tests.helpers.store import signal

OPEN, ACKED, RESOLVED, SUPPRESSED = (
    AlertStatus.OPEN,
    AlertStatus.ACKNOWLEDGED,
    AlertStatus.RESOLVED,
    AlertStatus.SUPPRESSED,
)

# -- transitions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "status", "to"),
    [
        (Action.ACKNOWLEDGE, OPEN, ACKED),
        (Action.ACKNOWLEDGE, ACKED, None),  # already there: nothing changes
        (Action.RESOLVE, OPEN, RESOLVED),
        (Action.RESOLVE, ACKED, RESOLVED),
        (Action.RESOLVE, SUPPRESSED, RESOLVED),
        (Action.RESOLVE, RESOLVED, None),
    ],
)
def test_allowed_transitions(action: Action, status: AlertStatus, to: AlertStatus | None) -> None:
    assert transition(action, status) == to


@pytest.mark.parametrize("status", [RESOLVED, SUPPRESSED])
def test_acknowledging_a_resolved_or_suppressed_alert_is_a_conflict(status: AlertStatus) -> None:
    with pytest.raises(Conflict, match=f"cannot acknowledge an alert that is {status}"):
        transition(Action.ACKNOWLEDGE, status)


@pytest.mark.parametrize(
    ("status", "muted", "to"),
    [
        (OPEN, True, SUPPRESSED),
        (SUPPRESSED, False, OPEN),
        (OPEN, False, None),
        (SUPPRESSED, True, None),
        (ACKED, True, None),  # someone is on it: muting does not hide it
        (RESOLVED, False, None),
    ],
)
def test_muting_suppresses_open_alerts_and_reopens_them(
    status: AlertStatus, muted: bool, to: AlertStatus | None
) -> None:
    assert muted_status(status, muted=muted) == to


def test_statuses_are_stored_and_shown_as_their_values() -> None:
    assert STATUSES == ("open", "acknowledged", "resolved", "suppressed")
    assert f"{AlertStatus.OPEN}" == "open"
    assert NotificationStatus.DEAD == "dead"


# -- evidence ---------------------------------------------------------------------------------


def test_evidence_keeps_the_latest_events_and_the_latest_features() -> None:
    evidence = new_evidence(signal(0))
    for i in range(1, MAX_EVIDENCE_EVENTS + 3):
        evidence = merge_evidence(evidence, signal(i))
    assert len(evidence["events"]) == MAX_EVIDENCE_EVENTS
    assert evidence["events"][0]["event_id"] == "e3"
    assert evidence["events"][-1]["event_id"] == f"e{MAX_EVIDENCE_EVENTS + 2}"
    assert evidence["features"] == {"n": MAX_EVIDENCE_EVENTS + 2}


def test_another_hit_widens_the_seen_range_whatever_order_hits_come_in() -> None:
    late = signal(5, t=0.0, title="latest title")
    hit = another_hit(100.0, 200.0, late)
    assert (hit.first_seen, hit.last_seen, hit.title) == (5.0, 200.0, "latest title")


# -- silences ---------------------------------------------------------------------------------


def _labels(alert_id: str = "al_1", **labels: str) -> dict[str, str]:
    fields = {"rule_id", "severity", "audience", "customer_id"}
    alert = {
        "id": alert_id,
        "rule_id": labels.get("rule_id", "ato"),
        "severity": labels.get("severity", "medium"),
        "audience": "fraud",
        "customer_id": labels.get("customer_id"),
        "labels": {k: v for k, v in labels.items() if k not in fields},
    }
    return label_set(alert)


def _silence(*matchers: str, starts_at: float = 0.0, ends_at: float = 100.0) -> Silence:
    return Silence("sil_1", parse_matchers(list(matchers)), starts_at, ends_at, "key:ana", "why", 0.0)


def test_a_silence_without_matchers_mutes_nothing() -> None:
    assert silenced_by([_silence()], _labels(), now=50.0) is None


def test_a_silence_mutes_only_while_active_and_only_what_all_its_matchers_match() -> None:
    silence = _silence("customer_id=c1", "rule_id=~at.*", starts_at=10.0)
    assert silenced_by([silence], _labels(customer_id="c1"), now=50.0) is silence
    assert silenced_by([silence], _labels(customer_id="c2"), now=50.0) is None
    assert silenced_by([silence], _labels(customer_id="c1"), now=5.0) is None  # pending
    assert silenced_by([silence], _labels(customer_id="c1"), now=100.0) is None  # expired
    assert [silence.to_dict(t)["state"] for t in (5.0, 50.0, 100.0)] == ["pending", "active", "expired"]


@pytest.mark.parametrize(
    ("matchers", "starts", "ends", "comment", "problem"),
    [
        ([], 0.0, 60.0, "why", "at least one matcher"),
        (["a=b"] * (MAX_MATCHERS + 1), 0.0, 60.0, "why", "at most 20 matchers"),
        (["a=b"], 0.0, 367 * 86400.0, "why", "at most a year"),
        (["a=b"], 60.0, 60.0, "why", "end after it starts"),
        (["a=b"], 0.0, 60.0, "  ", "comment must say why"),
        (["a=b"], 0.0, 60.0, "x" * 1001, "comment must say why"),
        (["a=~("], 0.0, 60.0, "why", "invalid regex"),  # a bad pattern is a 400, not a crash
        (["a=b"], 0.0, 30.0, "why", "end in the future"),  # ended already at 30: mutes nothing, kept 30 days
        # within the characters, but 60,000 RE2 instructions each alert would run (a pen test's)
        (['customer_id=~"' + "a{1000}" * 60 + '"'], 0.0, 60.0, "why", "more than 2000 RE2 instructions"),
        ([f'k{i}=~"[a-z]{{300}}"' for i in range(7)], 0.0, 60.0, "why", "at most 2000 RE2 instructions"),
    ],
)
def test_unacceptable_silences_are_a_400_naming_the_problem(
    matchers: list[str], starts: float, ends: float, comment: str, problem: str
) -> None:
    with pytest.raises(SilenceError, match=problem) as caught:
        check_silence(matchers, starts, ends, comment, now=30.0)
    assert (caught.value.status, caught.value.code) == (400, "invalid_body")


def test_an_acceptable_silence_gives_its_parsed_matchers() -> None:
    (matcher,) = check_silence(["customer_id=c1"], 0.0, 366 * 86400.0, "holiday")
    assert str(matcher) == 'customer_id="c1"'
    assert len(check_silence(['customer_id=~"cus_[a-z0-9_]{1,64}"'] * 5, 0.0, 60.0, "holiday")) == 5


# -- inhibition -------------------------------------------------------------------------------


def _sources(*alerts: Mapping[str, str]) -> InhibitionSources:
    def sources(rule: InhibitRule, labels: Mapping[str, str]) -> Iterable[Mapping[str, str]]:
        return alerts

    return sources


def _rule(*equal: str) -> InhibitRule:
    return InhibitRule(parse_matchers(["severity=critical"]), parse_matchers(["severity=medium"]), equal)


@pytest.mark.parametrize(
    ("equal", "source", "target", "inhibited"),
    [
        (("customer_id",), {"customer_id": "c1"}, {"customer_id": "c1"}, True),
        (("customer_id",), {"customer_id": "c1"}, {"customer_id": "c2"}, False),  # across customers: no
        (("customer_id",), {}, {}, True),  # neither has a customer: they agree
        (("customer_id",), {"customer_id": "c1"}, {}, False),
        ((), {"customer_id": "c1"}, {"customer_id": "c2"}, True),  # no equal: across customers
        (("card",), {"customer_id": "c1", "card": "t1"}, {"customer_id": "c2", "card": "t1"}, True),
        (("card",), {"card": "t1"}, {"card": "t2"}, False),
    ],
)
def test_inhibition_needs_the_equal_labels_to_agree(
    equal: tuple[str, ...], source: dict[str, str], target: dict[str, str], inhibited: bool
) -> None:
    firing = _labels("al_src", severity="critical", **source)
    found = inhibited_by([_rule(*equal)], _labels("al_tgt", **target), _sources(firing))
    assert (found is firing) is inhibited


def test_an_alert_never_inhibits_itself_and_needs_a_matching_source() -> None:
    itself = _labels("al_1", severity="critical")
    rule = InhibitRule(parse_matchers(["severity=critical"]), parse_matchers(["severity=~critical|medium"]), ())
    assert inhibited_by([rule], itself, _sources(itself)) is None
    low = _labels("al_2", severity="low")
    assert inhibited_by([rule], _labels("al_3"), _sources(low)) is None


def test_the_mute_reason_names_the_silence_first_then_the_inhibiting_alert() -> None:
    target = _labels("al_tgt", customer_id="c1")
    source = _labels("al_src", severity="critical", customer_id="c1")
    sources = _sources(source)
    silence = _silence("customer_id=c1")
    assert mute_reason([silence], [_rule()], target, sources, now=1.0) == "silenced by sil_1"
    assert mute_reason([], [_rule()], target, sources, now=1.0) == "inhibited by al_src"
    assert mute_reason([], [], target, sources, now=1.0) is None


# -- delivery ---------------------------------------------------------------------------------

POLICY = RetryPolicy(max_attempts=4, base_delay_s=2.0, max_delay_s=30.0)


@pytest.mark.parametrize(("attempts", "full"), [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 30.0), (9, 30.0)])
def test_retries_back_off_exponentially_with_jitter_up_to_the_maximum(attempts: int, full: float) -> None:
    rng = random.Random(7)
    delays = [retry_delay(POLICY, attempts, None, rng) for _ in range(200)]
    assert all(full / 2 <= d <= full for d in delays)
    assert max(delays) - min(delays) > full / 4  # jittered, so retries do not stampede


def test_retry_after_is_a_floor_capped_at_the_maximum_delay() -> None:
    rng = random.Random(7)
    assert all(retry_delay(POLICY, 1, 12.0, rng) >= 12.0 for _ in range(50))
    assert all(retry_delay(POLICY, 1, 3600.0, rng) == 30.0 for _ in range(50))
    assert all(retry_delay(POLICY, 5, 1.0, rng) >= 15.0 for _ in range(50))  # the backoff when longer


@pytest.mark.parametrize(
    ("delivery", "attempts_before", "status"),
    [
        (Delivery(Outcome.SENT, "HTTP 200"), 0, NotificationStatus.SENT),
        (Delivery(Outcome.RETRY, "HTTP 503"), 0, NotificationStatus.PENDING),
        (Delivery(Outcome.RETRY, "HTTP 503"), POLICY.max_attempts - 2, NotificationStatus.PENDING),
        (Delivery(Outcome.RETRY, "HTTP 503"), POLICY.max_attempts - 1, NotificationStatus.DEAD),  # out of attempts
        (Delivery(Outcome.FAILED, "HTTP 400: no"), 0, NotificationStatus.DEAD),  # refused: retrying will not help
    ],
)
def test_after_an_attempt(delivery: Delivery, attempts_before: int, status: NotificationStatus) -> None:
    step = after_attempt(delivery, attempts_before, POLICY, 1000.0, random.Random(7))
    assert step.status is status
    assert step.attempts == attempts_before + 1
    assert step.detail == ("" if status is NotificationStatus.SENT else delivery.detail)
    if status is NotificationStatus.PENDING:
        assert 1000.0 < step.next_attempt_at <= 1000.0 + POLICY.max_delay_s
    else:
        assert step.next_attempt_at == 1000.0


def test_a_retry_waits_at_least_what_the_receiver_asked() -> None:
    step = after_attempt(Delivery(Outcome.RETRY, "HTTP 429", 20.0), 0, POLICY, 1000.0, random.Random(7))
    assert step.next_attempt_at >= 1020.0


def test_a_refused_pattern_is_not_kept_compiled() -> None:
    """A review: refused patterns were cached before the size check, 1,000 of them some GBs."""
    from ringfence.alerts.matchers import compile_pattern

    held = compile_pattern.cache_info().currsize
    for i in range(20):
        with pytest.raises(SilenceError, match="more than 2000 RE2 instructions"):
            check_silence([f'customer_id=~"x{i}' + "a{1000}" * 3 + '"'], 0.0, 60.0, "why")
    assert compile_pattern.cache_info().currsize == held
