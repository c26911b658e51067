"""Silences on every runtime: what may not be a silence is refused before storage, with the
reason; an active silence mutes what it matches (suppressed, and why, in the history), and a
muted alert opens again at its next change once nothing mutes it."""

from __future__ import annotations

import pytest

from ringfence.alerts.model import alert_id
from ringfence.alerts.silences import SILENCE_KEPT_S, SilenceError
from ringfence.alerts.stages import HOUSEKEEPING_EVERY_S
from ringfence.errors import InvalidCursor, NotFound
from tests.helpers.conformance import Harness, webhook_alerting
from tests.helpers.receivers import RecordingReceiver
from tests.helpers.store import signal

VELOCITY = alert_id("velocity", "tok_1", 1)
OTHER = alert_id("other", "tok_2", 1)


def told(receiver: RecordingReceiver) -> list[str]:
    """The ids of the alerts the receiver was told of, in order."""
    return [a["id"] for r in receiver.received for a in r.json()["alerts"]]


def test_a_silence_without_matchers_is_refused_never_stored_and_mutes_nothing(
    runtime: Harness, receiver: RecordingReceiver
) -> None:
    runtime.configure(webhook_alerting(receiver.url))
    with pytest.raises(SilenceError, match="a silence needs at least one matcher"):
        runtime.create_silence([])
    assert runtime.silences() == []
    assert runtime.audit_entries() == []
    runtime.hit(signal(1))
    runtime.step()
    assert runtime.statuses() == {VELOCITY: "open"}
    assert told(receiver) == [VELOCITY]


@pytest.mark.parametrize(
    ("matchers", "comment", "lasts_s", "why"),
    [
        (["customer_id=c1"], "", 3600.0, "comment must say why"),
        (["customer_id=c1"], "   ", 3600.0, "comment must say why"),
        ([f"label{i}=v" for i in range(21)], "maintenance", 3600.0, "at most 20 matchers"),
        (["customer_id=c1"], "maintenance", 367 * 86400.0, "lasts at most a year"),
        (["customer_id=~(unclosed"], "maintenance", 3600.0, "customer_id=~\\(unclosed"),
        (["customer_id=c1"], "maintenance", 0.0, "must end after it starts"),
        ([f"label{i}={'v' * 400}" for i in range(11)], "maintenance", 3600.0, "4096 characters in all"),
    ],
    ids=["no-comment", "blank-comment", "21-matchers", "over-a-year", "bad-regex", "empty-range", "long-matchers"],
)
def test_an_unacceptable_silence_is_refused_with_the_reason(
    runtime: Harness, matchers: list[str], comment: str, lasts_s: float, why: str
) -> None:
    with pytest.raises(SilenceError, match=why) as refused:
        runtime.create_silence(matchers, comment, lasts_s)
    assert (refused.value.status, refused.value.code) == (400, "invalid_body")
    assert runtime.silences() == []
    assert runtime.audit_entries() == []


def test_the_limits_themselves_are_accepted(runtime: Harness) -> None:
    runtime.create_silence([f"label{i}=v" for i in range(20)], "x" * 1000, 366 * 86400.0)
    runtime.create_silence([f"l{i:02d}={'v' * 201}" for i in range(19)] + ["l19=" + "v" * 197], "in all")
    assert len(runtime.silences()) == 2


def test_silences_are_listed_newest_first_a_page_at_a_time(runtime: Harness) -> None:
    made = []
    for i in range(5):
        made.append(runtime.create_silence([f"customer_id=c{i}"]).id)
        runtime.clock.advance(1)
    runtime.expire_silence(made[1])  # ended ones are listed too
    assert [s.id for s in runtime.silences(page_size=2)] == made[::-1]
    assert [s.id for s in runtime.silences(page_size=5)] == made[::-1]
    first, cursor = runtime.silence_store.silences(2, None, runtime.clock.time())
    assert [s.id for s in first] == made[:2:-1]
    assert cursor is not None
    with pytest.raises(InvalidCursor):
        runtime.silence_store.silences(2, "not-a-cursor", runtime.clock.time())


def test_current_silences_are_counted_until_they_end(runtime: Harness) -> None:
    now = runtime.clock.time()
    lasting = runtime.create_silence(["rule_id=a"])
    runtime.create_silence(["rule_id=b"], lasts_s=60)
    runtime.silence_store.create_silence(["rule_id=c"], now + 600, now + 1200, "analyst-1", "later", now)  # pending
    assert runtime.silence_store.current_count(now) == 3
    runtime.clock.advance(60)
    assert runtime.silence_store.current_count(runtime.clock.time()) == 2
    runtime.expire_silence(lasting.id)
    assert runtime.silence_store.current_count(runtime.clock.time()) == 1
    assert len(runtime.silences()) == 3


def test_an_ended_silence_is_listed_30_days_then_forgotten(runtime: Harness, receiver: RecordingReceiver) -> None:
    runtime.configure(webhook_alerting(receiver.url))
    ended = runtime.create_silence(["rule_id=a"], lasts_s=60)
    lasting = runtime.create_silence(["rule_id=b"], lasts_s=60 * 86400.0)
    runtime.step(60 + SILENCE_KEPT_S - 1)
    assert {s.id for s in runtime.silences()} == {ended.id, lasting.id}
    runtime.step(HOUSEKEEPING_EVERY_S)  # retention runs this often
    assert [s.id for s in runtime.silences()] == [lasting.id]


def test_an_active_silence_suppresses_what_it_matches_with_the_reason(
    runtime: Harness, receiver: RecordingReceiver
) -> None:
    runtime.configure(webhook_alerting(receiver.url))
    silence = runtime.create_silence(["customer_id=c1", "rule_id=~velo.*"], "customer on holiday")
    runtime.hit(signal(1))  # matches
    runtime.hit(signal(2, rule="other", key="tok_2"))  # another rule: not silenced
    runtime.step()
    assert runtime.statuses() == {VELOCITY: "suppressed", OTHER: "open"}
    assert told(receiver) == [OTHER]
    (suppressed,) = [h for h in runtime.get(VELOCITY).history if h.action == "suppress"]
    assert (suppressed.reason, suppressed.from_status, suppressed.to_status) == (
        f"silenced by {silence.id}",
        "open",
        "suppressed",
    )


def test_an_expired_silence_unmutes_the_alert_at_its_next_hit(runtime: Harness, receiver: RecordingReceiver) -> None:
    runtime.configure(webhook_alerting(receiver.url))
    silence = runtime.create_silence(["rule_id=velocity"])
    runtime.hit(signal(1))
    runtime.step()
    runtime.expire_silence(silence.id)
    assert [s.state(runtime.clock.time()) for s in runtime.silences()] == ["expired"]
    runtime.step(60)
    assert runtime.statuses() == {VELOCITY: "suppressed"}  # nothing changed since: still muted
    runtime.hit(signal(2))  # the next hit of the same alert
    runtime.step()
    alert = runtime.get(VELOCITY)
    assert (alert.status, alert.count) == ("open", 2)
    assert [(h.action, h.reason) for h in alert.history if h.action in ("suppress", "unsuppress")] == [
        ("suppress", f"silenced by {silence.id}"),
        ("unsuppress", "no silence or inhibition matches any more"),
    ]
    assert told(receiver) == [VELOCITY]


def test_a_silence_mutes_an_alert_already_open_at_its_next_hit(runtime: Harness, receiver: RecordingReceiver) -> None:
    runtime.configure(webhook_alerting(receiver.url, repeat_interval="1h"))
    runtime.hit(signal(1))
    runtime.step()
    assert told(receiver) == [VELOCITY]
    silence = runtime.create_silence(["rule_id=velocity"], "noisy: known issue")
    runtime.hit(signal(2))
    runtime.step()
    assert runtime.statuses() == {VELOCITY: "suppressed"}
    assert runtime.get(VELOCITY).history[-1].reason == f"silenced by {silence.id}"
    runtime.step(3600)  # the repeat is not sent: nothing in the group fires
    assert told(receiver) == [VELOCITY]


def test_a_silence_is_expired_once(runtime: Harness) -> None:
    silence = runtime.create_silence(["rule_id=velocity"])
    runtime.clock.advance(60)
    expired = runtime.expire_silence(silence.id)
    assert (expired.starts_at, expired.ends_at) == (silence.starts_at, runtime.clock.time())
    with pytest.raises(NotFound):
        runtime.expire_silence(silence.id)
    with pytest.raises(NotFound):
        runtime.expire_silence("sil_missing")
    assert [(s.id, s.ends_at) for s in runtime.silences()] == [(silence.id, runtime.clock.time())]
