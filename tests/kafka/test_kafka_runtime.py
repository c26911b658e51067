"""The kafka runtime against a real broker and a real PostgreSQL: the alerts of the embedded
runtime on the same input, through worker crashes and scale-out, with notifications sent once."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from ringfence import testing
from ringfence.clock import iso
from ringfence.config import load_settings
from ringfence.engine.backtest import backtest
from ringfence.engine.engine import Engine
from ringfence.engine.features import decode_state
from ringfence.engine.pack import default_pack_text, load_pack, load_pack_file
from ringfence.events.decode import validate_event
from ringfence.events.model import Event
from ringfence.runtimes.kafka.changelog import replay
from ringfence.runtimes.kafka.records import partition_for
from ringfence.runtimes.kafka.restore import read_changelogs
from ringfence.runtimes.kafka.topics import client_config, topics_of
from tests.helpers import parity
from tests.helpers.http import all_alerts, post_batch
from tests.helpers.kafka import PARTITIONS, KafkaStack, Service, stored_codecs
from tests.helpers.receivers import RecordingReceiver
from tests.helpers.servers import KafkaBroker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    events = parity.workload("kafka")
    # producers retry: some events arrive twice (same event_id), and must count once
    return events + events[300:340]


@pytest.fixture(scope="module")
def expected(events: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, int]]:
    alerts = parity.embedded_alerts(tmp_path_factory.mktemp("embedded") / "data", events)
    # the input exercises many detections, keyed by customer and by card, IP, device, endpoint
    assert len(alerts) >= 50
    rules = {r for r, _ in alerts.values()}
    assert {"credential_stuffing_ip", "card_testing", "ops_api_error_rate", "card_velocity"} <= rules
    assert any(count > 1 for _, count in alerts.values())
    return alerts


def post(ingest: Service, key: str, batch: list[dict[str, Any]]) -> None:
    post_batch(ingest, key, batch)


def settled(
    stack: KafkaStack, api: Service, key: str, quiet_s: float = 4.0, timeout_s: float = 120.0
) -> dict[str, tuple[str, int]]:
    """The alerts once every input topic of the workers is consumed (the events', the stages',
    the join's: a killed worker's open transaction holds the last two back until the broker
    aborts it) and the alerts stopped changing for ``quiet_s`` (they still cross the alerts
    topic after that)."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, tuple[str, int]] | None = None
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        with api.client(key) as c:
            lag = c.get("/readyz").json()["lag_events"]
        alerts = all_alerts(api, key)
        if alerts != last or lag or stack.unprocessed():
            last, stable_since = alerts, time.monotonic()
        elif time.monotonic() - stable_since >= quiet_s:
            return alerts
        time.sleep(0.5)
    raise TimeoutError(f"alerts did not settle: {len(last or {})} so far")


def lifetime_card_auths(stack: KafkaStack) -> dict[str, int]:
    """The committed ``card_auths_lifetime`` (a count keyed by customer) of every customer, read
    from the customer stage's changelog as a worker restoring it would."""
    settings = load_settings(environ=stack.env)
    topics = topics_of(settings)
    spec = next(f for f in load_pack_file(None).features if f.name == "card_auths_lifetime")
    changelog = topics.changelog
    entries = read_changelogs(settings, topics, [(changelog, p) for p in range(PARTITIONS)])
    out = {}
    for partition_entries in entries.values():
        customers = [(offset, entry) for offset, entry in partition_entries if entry.stage == "customer"]
        for (name, key), raw in replay(customers).state_rows().items():
            if name.startswith("card_auths_lifetime#"):
                out[key] = spec.value(decode_state(raw), 4e9)
    return out


def trimmed_changelogs(stack: KafkaStack) -> int:
    """Changelog partitions whose first records a complete snapshot made redundant, and were deleted."""
    from confluent_kafka import Consumer, TopicPartition

    settings = load_settings(environ=stack.env)
    topics = topics_of(settings)
    names = [topics.changelog]
    consumer = Consumer(client_config(settings, **{"group.id": topics.group("test")}))
    try:
        starts = [consumer.get_watermark_offsets(TopicPartition(t, p), 10)[0] for t in names for p in range(PARTITIONS)]
    finally:
        consumer.close()
    return sum(1 for start in starts if start > 0)


def card_auths_in(events: list[dict[str, Any]]) -> dict[str, int]:
    """What ``card_auths_lifetime`` must count: each approved authorization once, retried or not."""
    unique = {e["event_id"]: e for e in events if e["type"] == "card.authorization" and e["data"]["approved"]}
    return dict(Counter(e["customer_id"] for e in unique.values()))


def in_memory_backtest(events: list[dict[str, Any]], candidate: str) -> dict[str, dict[str, int]]:
    """The back-test of ``events`` in posting order, each in its customer's partition, a retried
    one once."""
    rows = [
        (i, partition_for(str(e.customer_id or e.data.get("service") or "").encode(), PARTITIONS), 0.0, e)
        for i, e in enumerate(first_copies(events))
    ]
    return backtest(rows, load_pack_file(None), load_pack(candidate), {})


def first_copies(events: list[dict[str, Any]]) -> list[Event]:
    """``events`` validated, a retried one once (its first copy), as the workers count them."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for event in (validate_event(msgspec.json.encode(e), time.time() + 86400) for e in events):
        if (event.source, event.event_id) not in seen:
            seen.add((event.source, event.event_id))
            kept.append(event)
    return kept


def in_memory_features(events: list[dict[str, Any]], customer: str) -> tuple[float, dict[str, Any]]:
    """A customer's features after one engine processed ``events`` (a retried one once)."""
    engine = Engine(load_pack_file(None))
    for i, event in enumerate(first_copies(events)):
        key = str(event.customer_id or event.data.get("service") or "").encode()
        engine.process(event, i, partition_for(key, PARTITIONS), 0.0)
    at = engine.max_event_time[partition_for(customer.encode(), PARTITIONS)]
    return at, msgspec.json.decode(msgspec.json.encode(engine.features_of({"customer_id": customer}, at)))


def produce_raw(stack: KafkaStack, topic: str, value: bytes, partition: int) -> None:
    from confluent_kafka import Producer

    producer = Producer(client_config(load_settings(environ=stack.env)))
    producer.produce(topic, value, partition=partition)
    assert producer.flush(30) == 0


def restores(worker: Service) -> list[tuple[int, int, float]]:
    found = re.findall(r"restored (\d+) partitions \((\d+) changelog rows\) in ([\d.]+) s", worker.log())
    return [(int(a), int(b), float(c)) for a, b, c in found]


def test_services_raise_the_alerts_of_the_embedded_runtime(
    kafka_stack: KafkaStack,
    kafka_broker: KafkaBroker,
    events: list[dict[str, Any]],
    expected: dict[str, tuple[str, int]],
) -> None:
    key, ingest, api = kafka_stack.services("w1", "w2")
    for start in range(0, len(events), 100):
        post(ingest, key, events[start : start + 100])
    invalid = [{**events[0], "event_id": f"bad-{i}", "occurred_at": "yesterday"} for i in range(3)]
    with ingest.client(key) as c:
        answer = c.post("/v1/events", json=invalid)
    assert answer.status_code == 400, answer.text
    assert len(answer.json()["error"]["details"]["rejected"]) == len(invalid)

    assert settled(kafka_stack, api, key) == expected
    assert lifetime_card_auths(kafka_stack) == card_auths_in(events)
    # what an event costs the broker (issue 18): ingest writes the stages' copies in a record
    # per transaction and partition, the workers one changelog entry a task and one join record
    # a partition per batch, not a record per stage, state and contribution
    read, written = kafka_stack.records_per_event(key)
    print(f"records per event: read {read:.3f}, written {written:.3f}")
    assert read <= 2.0, read
    assert written <= 2.0, written
    # and what the workers write reaches the broker compressed (4x fewer bytes than plain)
    prefix = kafka_stack.env["RINGFENCE_KAFKA_TOPIC_PREFIX"]
    codecs = stored_codecs(kafka_broker.workdir / "data", prefix, ("join", "changelog", "alerts"))
    assert codecs.keys() == {"lz4"}, codecs  # none stored at all fails too
    # the api service serves what lives in PostgreSQL, and says what it cannot
    with api.client(key) as c:
        assert c.post("/v1/events", json=events[0]).status_code == 404
        # its statistics count what every service did, not what this process did (nothing): the
        # events ingest rejected and the producers' retries the workers dropped, which only
        # those processes see, come through the store within seconds
        deadline = time.monotonic() + 20
        while (totals := c.get("/v1/stats").json()["totals"])["processed"] < len(events) or totals["duplicates"] < 40:
            assert time.monotonic() < deadline, totals
            time.sleep(0.5)
        # (records of the events topic: a retry ingest let through is one, which the workers drop)
        assert totals["ingested"] == totals["processed"] >= len(events)
        assert totals["alerts"] == len(expected)
        assert (totals["rejected"], totals["duplicates"], totals["late"]) == (len(invalid), 40, 0), totals
        # an alert's evidence events are read back from the events topic
        alert_id = next(a for a, (rule, _) in expected.items() if rule == "card_velocity")
        evidence = c.get(f"/v1/alerts/{alert_id}/events").json()["items"]
        assert evidence
        assert all(item["event"]["event_id"] == item["event_id"] for item in evidence)
        # a customer's recent events, newest first, read back from their partition of the events topic
        busiest = Counter(e.get("customer_id") for e in events if e.get("customer_id")).most_common(1)[0][0]
        theirs = list(dict.fromkeys(e["event_id"] for e in events if e.get("customer_id") == busiest))
        answer = c.get(f"/v1/customers/{busiest}/events", params={"limit": 5}).json()
        assert [item["event"]["event_id"] for item in answer["items"]] == theirs[::-1][:5]
        # a producer's retry that ingest let through is listed once, as the workers counted it
        retried = next(e["customer_id"] for e in events[300:340] if e.get("customer_id"))
        listed = c.get(f"/v1/customers/{retried}/events", params={"limit": 100}).json()["items"]
        ids = [item["event"]["event_id"] for item in listed]
        assert len(ids) == len(set(ids))
        assert set(ids) == {e["event_id"] for e in events if e.get("customer_id") == retried}
        assert all(item["event"]["customer_id"] == busiest for item in answer["items"])
        assert c.get("/v1/customers/nobody-at-all/events").json()["items"] == []
        # a customer's current features, asked of the worker holding them: what an engine that
        # processed the same events (each once) holds, at the newest event time of their partition;
        # a query that is none is skipped, not answered and not fatal
        queries = topics_of(load_settings(environ=kafka_stack.env)).queries
        produce_raw(kafka_stack, queries, b"\xc1 not a query", partition_for(busiest.encode(), PARTITIONS))
        answer = c.get(f"/v1/customers/{busiest}/features")
        assert answer.status_code == 200, answer.text
        at, features = in_memory_features(events, busiest)
        assert answer.json()["features"] == features
        assert answer.json()["at"] == iso(at)
        assert c.get("/v1/customers/nobody-at-all/features").json()["features"]["card_auths_lifetime"] == 0
    # a back-test replays the events topic in a child of the api service (a producer's retry once,
    # as the workers count it): per customer in the order ingest wrote them, so customer and card
    # detections hit as often as in a back-test over the same events in memory
    candidate = default_pack_text().replace("when: card_auths_10m >= 8", "when: card_auths_10m >= 6")
    yaml = {"Content-Type": "application/yaml"}
    with api.client(kafka_stack.key("analyst", "admin")) as c:
        answer = c.post("/v1/rules/backtest", content=candidate, headers=yaml)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert (result["events"], result["failed_events"], result["truncated"]) == (len(events), 0, False)
    assert result["duplicate_events"] == len(events) - len(first_copies(events)) > 0
    in_memory = in_memory_backtest(events, candidate)
    for rule in ("card_velocity", "notify_low_balance"):
        assert result["hits"][rule] == in_memory[rule], rule
    assert in_memory["card_velocity"]["candidate"] > in_memory["card_velocity"]["live"] > 0
    with api.client(kafka_stack.key("analyst-2", "admin")) as c:  # the newest 100 records, at most
        newest = c.post("/v1/rules/backtest", params={"limit": 100}, content=candidate, headers=yaml).json()
    assert 0 < newest["events"] <= 100, newest


def test_a_worker_killed_mid_stream_loses_nothing_and_counts_nothing_twice(
    kafka_stack: KafkaStack, events: list[dict[str, Any]], expected: dict[str, tuple[str, int]]
) -> None:
    key, ingest, api = kafka_stack.services()
    with api.client(key) as c:  # no worker holds the customer yet: nobody answers, say so and when to ask again
        started = time.monotonic()
        unanswered = c.get("/v1/customers/c1/features")
        assert unanswered.status_code == 503, unanswered.text
        assert unanswered.headers["retry-after"] == "1"
        assert time.monotonic() - started < 15
    survivor, victim = kafka_stack.worker("w1"), kafka_stack.worker("w2")
    posted = 0
    failures: list[BaseException] = []

    def stream() -> None:  # a steady stream, so the victim dies with work in hand
        nonlocal posted
        try:
            for start in range(0, len(events), 25):
                post(ingest, key, events[start : start + 25])
                posted = start + 25
                time.sleep(0.02)
        except BaseException as exc:
            failures.append(exc)

    producer = threading.Thread(target=stream)
    producer.start()
    deadline = time.monotonic() + 60
    while not (restores(survivor) and restores(victim) and posted >= len(events) // 3):
        assert time.monotonic() < deadline, survivor.log()[-2000:]
        time.sleep(0.05)
    before_kill = len(restores(survivor))
    victim.kill()
    killed_at = posted
    producer.join()
    assert failures == []
    assert killed_at < len(events)  # mid-stream

    assert settled(kafka_stack, api, key) == expected
    assert lifetime_card_auths(kafka_stack) == card_auths_in(events)
    # snapshots were written behind the changelogs and what they made redundant deleted: the
    # state above was restored from them
    assert trimmed_changelogs(kafka_stack) > 0
    # the survivor took the victim's partitions over, restoring their state, and said how long it took
    takeovers = restores(survivor)[before_kill:]
    assert takeovers, survivor.log()[-3000:]
    assert any(rows > 0 for _, rows, _ in takeovers)
    assert all(seconds < 60 for _, _, seconds in takeovers)


def test_adding_a_worker_rebalances_without_losing_or_duplicating_alerts(
    kafka_stack: KafkaStack, events: list[dict[str, Any]], expected: dict[str, tuple[str, int]]
) -> None:
    key, ingest, api = kafka_stack.services()
    first = kafka_stack.worker("w1")
    half = len(events) // 2
    for start in range(0, half, 50):
        post(ingest, key, events[start : start + 50])
    second = kafka_stack.worker("w2")
    for start in range(half, len(events), 50):
        post(ingest, key, events[start : start + 50])

    assert settled(kafka_stack, api, key) == expected
    assert lifetime_card_auths(kafka_stack) == card_auths_in(events)
    assert restores(second), second.log()[-3000:]
    assert len(restores(first)) >= 2  # its assignment changed: it gave partitions up and restored its share


def test_a_dispatcher_killed_before_notifying_sends_the_notification_once_after_restart(
    kafka_stack: KafkaStack, receiver: RecordingReceiver, tmp_path: Path
) -> None:
    config = tmp_path / "alerting.yaml"
    config.write_text(
        "receivers:\n"
        f"  - name: hook\n    webhook: {{url: '{receiver.url}/hook', secret_env: RINGFENCE_SECRET_TEST_HOOK}}\n"
        "route: {receiver: hook, group_by: [customer_id], group_wait: 3s}\n"
    )
    env = {"RINGFENCE_ALERTING": str(config), "RINGFENCE_SECRET_TEST_HOOK": "k"}
    key = kafka_stack.key("producer", "events:write", "alerts:read")
    ingest = kafka_stack.start("ingest", "ingest", http=True)
    worker = kafka_stack.worker("w1")
    dispatch = kafka_stack.start("dispatch", "dispatch", env=env)
    # a record no Ringfence service wrote: the worker skips it, saying so, and goes on
    from confluent_kafka import Producer

    stray = Producer({"bootstrap.servers": kafka_stack.env["RINGFENCE_KAFKA_BOOTSTRAP"]})
    stray.produce(topics_of(load_settings(environ=kafka_stack.env)).events, b"{not json", b"cus-notify")
    stray.flush(30)
    transfer = {
        "event_id": "tr-1",
        "type": "transfer.initiated",
        "occurred_at": "2026-11-28T10:00:00Z",
        "customer_id": "cus-notify",
        "source": "core-banking",
        "data": {"amount": "900.00", "currency": "EUR", "payee_id": "p1", "payee_country": "KP"},
    }
    post(ingest, key, [transfer])
    deadline = time.monotonic() + 60
    while not kafka_stack.sql("SELECT id FROM alerts WHERE customer_id = %s", "cus-notify"):
        assert time.monotonic() < deadline, dispatch.log()[-2000:]
        time.sleep(0.1)
    dispatch.kill()  # consumed and stored; its group still waits: nothing was sent
    assert receiver.received == []

    kafka_stack.start("dispatch-again", "dispatch", env=env)
    (request,) = receiver.wait_for(1, timeout=30)
    time.sleep(4)  # time for a duplicate to show up, if there were one
    assert len(receiver.received) == 1
    assert request.json()["alerts"][0]["customer_id"] == "cus-notify"
    assert kafka_stack.sql("SELECT count(*) FROM alerts") == [(1,)]
    assert kafka_stack.sql("SELECT status FROM notifications") == [("sent",)]
    assert "skipped undecodable record" in worker.log()


def test_rates_loaded_with_the_cli_reach_ingest_and_amounts_are_compared_converted(kafka_stack: KafkaStack) -> None:
    key, ingest, api = kafka_stack.services("w1")
    admin = kafka_stack.key("fx-admin", "admin")
    today = time.strftime("%Y-%m-%d", time.gmtime())
    rates = kafka_stack.workdir / "rates.csv"
    rates.write_text(f"currency,rate,as_of\nHUF,0.0025,{today}\n")
    version = int(kafka_stack.cli("fx", "load", str(rates)).stdout.split()[3].rstrip(":"))
    deadline = time.monotonic() + 30
    with ingest.client(admin) as c:  # the ingest service follows the store (every 5 s)
        while c.get("/v1/fx/rates").json()["version"] != version:
            assert time.monotonic() < deadline, "the ingest service did not follow the load"
            time.sleep(0.5)
        # a producer-facing service: nothing an analyst reads or changes, whatever the key
        for path in ("/v1/alerts", "/v1/customers/cus_fx/events", "/v1/audit", "/"):
            assert c.get(path).status_code == 404, path
        assert c.put("/v1/fx/rates", content=rates.read_text(), headers={"Content-Type": "text/csv"}).status_code in (
            404,
            405,
        )
    small = event_of("transfer.initiated", "cus_fx", amount="2000.00", currency="HUF", payee_id="pay_1")
    large = event_of("transfer.initiated", "cus_fx", amount="1000000.00", currency="HUF", payee_id="pay_1")
    post(ingest, key, [small, large])  # one customer: one partition, in this order
    deadline = time.monotonic() + 60
    while not (found := [a for a in customer_alerts(api, key, "cus_fx") if a["rule_id"] == "notify_large_transaction"]):
        assert time.monotonic() < deadline, "no large-payment alert"
        time.sleep(0.5)
    (alert,) = found  # 2,000 HUF (about EUR 5) raised none
    with api.client(key) as c:
        evidence = c.get(f"/v1/alerts/{alert['id']}").json()["evidence"]["events"]
    assert [e["event_id"] for e in evidence] == [large["event_id"]]
    assert evidence[-1]["fx"] == {"reference": "EUR", "rate": "0.0025", "as_of": today}


def event_of(type_: str, customer: str, **data: Any) -> dict[str, Any]:
    return testing.event(type_, customer_id=customer, event_id=f"fx-{time.time_ns()}", **data)


def customer_alerts(api: Service, key: str, customer: str) -> list[dict[str, Any]]:
    with api.client(key) as c:
        items: list[dict[str, Any]] = c.get("/v1/alerts", params={"customer_id": customer}).json()["items"]
    return items


def test_the_api_streams_alerts_live_that_dispatch_took_in(
    kafka_stack: KafkaStack, events: list[dict[str, Any]]
) -> None:
    """Found by a hostile test: the api's live stream was never fed (dispatch, another process,
    takes the changes in), so the dashboard never saw an alert arrive. An ack made through the
    api shows too, and a key limited to one audience sees only that audience's changes."""
    key, ingest, api = kafka_stack.services("w1")
    created = kafka_stack.cli("keys", "create", "--name", "aml-desk", "--scope", "alerts:read", "--audience", "aml")
    aml_only = created.stdout.strip().splitlines()[-1]
    seen: dict[str, list[dict[str, Any]]] = {"all": [], "aml": []}
    connected = threading.Barrier(3, timeout=60)

    def watch(name: str, watcher: str) -> None:
        headers = {"Authorization": f"Bearer {watcher}"}
        try:
            with httpx.stream("GET", f"{api.url}/v1/alerts/stream", headers=headers, timeout=90) as answer:
                lines = answer.iter_lines()
                assert next(lines) == ": connected"
                connected.wait()
                kind = ""
                for line in lines:
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: ") and kind == "alert":  # not the last "closed" at the stop
                        seen[name].append(json.loads(line[6:]))
                    if any(e["change"] == "acknowledged" for e in seen[name]):
                        return
        except httpx.HTTPError:
            return  # the services stopped at the test's end

    watchers = [threading.Thread(target=watch, args=(n, k), daemon=True) for n, k in (("all", key), ("aml", aml_only))]
    for t in watchers:
        t.start()
    connected.wait()
    for start in range(0, 600, 100):
        post(ingest, key, events[start : start + 100])
    deadline = time.monotonic() + 60
    while not seen["all"]:
        assert time.monotonic() < deadline, "no alert was streamed"
        time.sleep(0.2)
    first = seen["all"][0]
    assert {"id", "rule_id", "audience", "change"} <= first.keys()
    analyst = kafka_stack.key("analyst", "alerts:read", "alerts:write")
    with api.client(analyst) as c:
        assert c.post(f"/v1/alerts/{first['id']}/ack", json={"reason": "on it"}).status_code == 200
    watchers[0].join(60)
    assert any(e["change"] == "acknowledged" and e["id"] == first["id"] for e in seen["all"])
    assert all(e["audience"] == "aml" for e in seen["aml"])
