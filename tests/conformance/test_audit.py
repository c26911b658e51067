"""The audit trail on every runtime: each change people make (a transition, a silence created
or expired) adds one entry, chained to the one before with the audit key; the chain verifies,
and an entry rewritten in storage behind the runtime's back is found."""

from __future__ import annotations

from ringfence.alerts.model import Action, alert_id
from tests.helpers.conformance import ANALYST, Harness, webhook_alerting
from tests.helpers.receivers import RecordingReceiver
from tests.helpers.store import signal

VELOCITY = alert_id("velocity", "tok_1", 1)


def test_each_change_people_make_is_one_entry_of_a_chain_that_verifies(
    runtime: Harness, receiver: RecordingReceiver
) -> None:
    runtime.configure(webhook_alerting(receiver.url))
    assert runtime.verify_audit().ok
    runtime.hit(signal(1))
    runtime.step()
    assert runtime.audit_entries() == []  # what the pipeline does is in the alert's history
    runtime.transition(VELOCITY, Action.ACKNOWLEDGE, "on it")
    runtime.clock.advance(1)
    silence = runtime.create_silence(["customer_id=c9"], "known test customer")
    runtime.expire_silence(silence.id)
    entries = runtime.audit_entries()
    assert [(e["seq"], e["actor"], e["action"], e["target"]) for e in entries] == [
        (3, ANALYST, "silence.expire", silence.id),
        (2, ANALYST, "silence.create", silence.id),
        (1, ANALYST, "alert.acknowledge", VELOCITY),
    ]
    assert entries[2]["detail"] == {"reason": "on it"}
    assert entries[1]["detail"]["matchers"] == ["customer_id=c9"]
    assert entries[1]["detail"]["comment"] == "known test customer"
    verdict = runtime.verify_audit()
    assert (verdict.ok, verdict.entries, verdict.problems) == (True, 3, [])


def test_an_entry_rewritten_in_storage_is_found(runtime: Harness) -> None:
    silences = [runtime.create_silence([f"customer_id=c{i}"], f"reason {i}") for i in range(3)]
    runtime.tamper_audit(2, "someone-else")
    verdict = runtime.verify_audit()
    assert (verdict.ok, verdict.entries) == (False, 3)
    assert verdict.problems == [f"entry 2 (silence.create {silences[1].id}) was altered, or its chain was forged"]
    assert [e["actor"] for e in runtime.audit_entries()] == [ANALYST, "someone-else", ANALYST]
