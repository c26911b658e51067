"""Ingest in a worker process: it answers like in-process ingest, and it never outlives a
killed server (so a restart gets the journal to itself)."""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import pickle
import signal
import time
from pathlib import Path

import msgspec
import pytest

from ringfence.bench.servers import create_key, start_server
from ringfence.runtimes.embedded.ingest_worker import SEGMENT_S, IngestRequest, IngestWorker, serve
from ringfence.runtimes.ingest import IngestResult
from ringfence.testing import event
from tests.helpers.http import alerts_for, post, risky_transfer, uid
from tests.helpers.processes import children, ingest_workers


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_the_ingest_worker_exits_when_its_server_is_killed(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    producer = create_key(data_dir, "p", "events:write")
    server = start_server(data_dir)
    try:
        assert post(server, producer, event()).status_code == 202
        workers = children(server.process.pid)
        assert workers, "ringfence up runs ingest in a child process"
    finally:
        server.kill()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "the ingest worker outlived its server"
        time.sleep(0.05)
    restarted = start_server(data_dir)
    try:
        assert post(restarted, producer, event()).status_code == 202
    finally:
        assert restarted.stop()


@pytest.mark.parametrize("ingest_process", ["true", "false"])
def test_ingest_answers_the_same_in_a_worker_or_in_process(tmp_path: Path, ingest_process: str) -> None:
    data_dir = tmp_path / "d"
    producer = create_key(data_dir, "p", "events:write")
    reader = create_key(data_dir, "r", "alerts:read")
    server = start_server(data_dir, env={"RINGFENCE_INGEST_PROCESS": ingest_process})
    try:
        assert len(ingest_workers(server.process.pid)) == (1 if ingest_process == "true" else 0)
        customer = uid("cus")
        good = risky_transfer(customer)
        body = [good, {**event(), "type": "card.cloned"}, good]
        response = post(server, producer, body)
        assert response.status_code == 202
        answer = response.json()
        assert answer["accepted"] == 1
        assert answer["duplicates"] == 1
        assert answer["duplicate_event_ids"] == [good["event_id"]]
        assert [r["index"] for r in answer["rejected"]] == [1]
        malformed = post(server, producer, b"{not json")
        assert malformed.status_code == 400
        assert malformed.json()["error"]["details"]["errors"][0]["field"] == "$"
        server.wait_processed(reader)
        assert [a["rule_id"] for a in alerts_for(server, reader, customer)] == ["transfer_high_risk_country"]
    finally:
        assert server.stop(), server.log_path.read_text()[-2000:]


def test_a_killed_ingest_worker_is_replaced_and_ingest_goes_on(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    producer = create_key(data_dir, "p", "events:write")
    reader = create_key(data_dir, "r", "alerts:read")
    server = start_server(data_dir)
    try:
        assert post(server, producer, event()).status_code == 202
        (worker,) = ingest_workers(server.process.pid)
        os.kill(worker, signal.SIGKILL)
        sent = event("login.succeeded", customer_id=uid("cus"))
        deadline = time.monotonic() + 20
        while (response := post(server, producer, sent)).status_code != 202:
            assert response.status_code == 503, response.text  # "being replaced; retry", never lost silently
            assert "retry-after" in response.headers
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert response.json()["accepted"] + response.json()["duplicates"] == 1
        (replacement,) = ingest_workers(server.process.pid)
        assert replacement != worker
        assert server.wait_processed(reader)["log_head"] == 2
        assert "starting another" in server.log_path.read_text()
    finally:
        assert server.stop(), server.log_path.read_text()[-2000:]


def test_the_worker_answers_requests_sent_before_stop_and_then_stops(tmp_path: Path) -> None:
    ours, theirs = multiprocessing.Pipe(duplex=True)
    good = json.dumps(event()).encode()
    for request_id, body in enumerate((good, b"{not json", good)):
        ours.send(IngestRequest(request_id, body, False, time.time(), 100, frozenset()))
    ours.send(None)
    serve(theirs, str(tmp_path / "journal.sqlite3"), 8, "full")  # returns: it was told to stop
    replies = [ours.recv() for _ in range(3)]
    assert [r.request_id for r in replies] == [0, 1, 2]
    assert replies[0].appended[0][1] == 1  # offset 1
    assert replies[1].malformed is not None
    assert replies[2].appended[0][1] is None  # the same event again: a duplicate
    assert not ours.poll()


def test_a_request_that_breaks_the_worker_gets_an_error_and_the_worker_serves_the_next(tmp_path: Path) -> None:
    """Issue 15, item 2: whatever one request does, the worker answers it and lives on."""
    ours, theirs = multiprocessing.Pipe(duplex=True)
    good = json.dumps(event()).encode()
    broken = IngestRequest(1, good, False, time.time(), 100, None)  # type: ignore[arg-type] # as a bug would
    for request in (IngestRequest(0, good, False, time.time(), 100, frozenset()), broken):
        ours.send(request)
    ours.send(None)
    serve(theirs, str(tmp_path / "journal.sqlite3"), 8, "full")
    first, second = ours.recv(), ours.recv()
    assert first.error is None
    assert first.appended[0][1] == 1
    assert "internal error" in (second.error or "")
    assert second.appended == []
    ours2, theirs2 = multiprocessing.Pipe(duplex=True)
    ours2.send(IngestRequest(2, json.dumps(event()).encode(), False, time.time(), 100, frozenset()))
    ours2.send(None)
    serve(theirs2, str(tmp_path / "journal.sqlite3"), 8, "full")
    assert ours2.recv().appended[0][1] == 2  # the journal was left consistent


def test_too_many_events_and_source_bindings_cross_the_pipe(tmp_path: Path) -> None:
    ours, theirs = multiprocessing.Pipe(duplex=True)
    mine, theirs_event = event(source="mobile-app"), event(source="web")
    ours.send(IngestRequest(0, json.dumps([event()] * 3).encode(), False, time.time(), 2, frozenset()))
    body = json.dumps([mine, theirs_event]).encode()
    ours.send(IngestRequest(1, body, False, time.time(), 10, frozenset(), frozenset({"mobile-app"})))
    ours.send(None)
    serve(theirs, str(tmp_path / "journal.sqlite3"), 8, "full")
    too_many, bound = ours.recv(), ours.recv()
    assert too_many.too_many == (3, 2)
    assert [event_id for event_id, _ in bound.appended] == [mine["event_id"]]
    assert [e.field for e in bound.rejected[0].errors] == ["source"]


def test_a_body_of_many_rejections_crosses_the_pipe_as_its_answer_not_as_objects(tmp_path: Path) -> None:
    """A hostile re-test: 10,000 events of 25 unknown fields each, all rejected, came up the pipe
    as 260,000 objects; unpickling them held the API process's GIL 0.9 s (and a collection of
    them after), and every other request with it. The reply is the answer's bytes: reading it
    makes no object a rejection, and it answers as the rejections themselves would."""
    events = [{**event(), "data": {**event()["data"], **{f"x{j}": 1 for j in range(25)}}} for _ in range(2_000)]
    ours, theirs = multiprocessing.Pipe(duplex=True)
    spawn = multiprocessing.get_context("spawn")  # as the server runs it: the body is more than a pipe holds
    worker = spawn.Process(target=serve, args=(theirs, str(tmp_path / "journal.sqlite3"), 8, "full"))
    worker.start()
    ours.send(IngestRequest(0, json.dumps(events).encode(), False, time.time(), 10_000, frozenset()))
    ours.send(None)
    assert ours.poll(60)
    sent = ours.recv_bytes()
    worker.join(30)
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        reply = pickle.loads(sent)
        made = len(gc.get_objects()) - before
    finally:
        gc.enable()
    assert made < 100, f"reading the reply made {made} objects"
    assert len(reply.rejected) == 2_000
    assert reply.appended == []
    assert [len(r.errors) for r in reply.rejected] == [25] * 2_000  # read item by item on demand
    answer = msgspec.json.decode(msgspec.json.encode(IngestResult(rejected=reply.rejected).to_dict()))
    assert answer["rejected"] == [r.to_dict() for r in reply.rejected]
    assert answer["rejected"][0]["errors"][0] == {"field": "data.x0", "message": "unknown field"}


@pytest.mark.serial  # each answered within 30 s
def test_many_large_requests_at_once_are_all_answered(tmp_path: Path) -> None:
    """Found by a hostile test: 16 producers posting 1,000 events each at once hung the server
    for good (the event loop blocked sending a body down the pipe while holding the lock the
    reply reader needed, and the worker blocked sending replies nobody read). Each request is
    answered, those of valid events (some 900 KB a body) and those of invalid ones (a large
    answer each) alike, the server stays live, and it still stops on SIGTERM."""
    from concurrent.futures import ThreadPoolExecutor

    data_dir = tmp_path / "d"
    # the refused bodies have a key of their own: with CI's other work on the host, their
    # validation measured costly enough to spend that key's budget, and then its every request
    producer, refused_producer = create_key(data_dir, "p", "events:write"), create_key(data_dir, "q", "events:write")
    server = start_server(data_dir)

    def body(n: int) -> bytes:
        lines = []
        for i in range(1000):
            one = event(event_id=f"big-{n}-{i}", customer_id=f"c{n}-{i}")
            one["type"] = "login.succeeded"
            one["data"] = {"device_id": "d" * 120, "ip": "10.0.0.1", "method": "m" * 250, "reason": "r" * 250}
            if n % 2:
                one["data"]["unknown"] = 1  # every event of odd requests refused, each with its error
            lines.append(json.dumps(one).encode())
        return b"\n".join(lines)

    def send(n: int) -> tuple[int, int | str]:
        with server.client(refused_producer if n % 2 else producer) as c:
            response = c.post("/v1/events", content=body(n), headers={"Content-Type": "application/x-ndjson"})
        answer = response.json()
        return response.status_code, answer["error"]["code"] if "error" in answer else answer["accepted"]

    try:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(send, range(48)))  # each within the client's 30 s, or it raises
        assert [answers[n] for n in range(0, 48, 2)] == [(202, 1000)] * 24
        refused = [answers[n] for n in range(1, 48, 2)]
        # a validation_budget 429 is an answer too, but most must carry their long list of rejections
        assert set(refused) <= {(400, "invalid_events"), (429, "validation_budget")}
        assert refused.count((400, "invalid_events")) >= 12
        with server.client(None) as c:
            assert c.get("/healthz").status_code == 200
        assert server.stop()
    finally:
        server.kill()


def test_a_request_that_cannot_be_sent_is_answered_503_and_the_next_is_served(tmp_path: Path) -> None:
    """On a review: the sender thread ended on anything but a pipe error (a request that does
    not pickle, say), and every later request then waited for ever."""
    import asyncio

    from ringfence.errors import OverloadedError
    from ringfence.events.decode import REFERENCE_ONLY
    from ringfence.events.fx import FxTable
    from ringfence.runtimes.embedded.ingest_worker import IngestWorker

    heads: list[int] = []
    worker = IngestWorker(tmp_path / "journal.sqlite3", 8, "normal", 3600.0, heads.append)
    unpicklable = FxTable(rates={"USD": lambda: None})  # type: ignore[dict-item] # as a bug would

    async def scenario() -> int:
        good = json.dumps(event()).encode()
        options = {"ndjson": False, "now": time.time(), "max_events": 100, "custom_types": frozenset()}
        with pytest.raises(OverloadedError):
            await asyncio.wait_for(worker.submit(good, fx=unpicklable, **options), 10)  # type: ignore[arg-type]
        reply = await asyncio.wait_for(worker.submit(good, fx=REFERENCE_ONLY, **options), 10)  # type: ignore[arg-type]
        return len(reply.appended)

    try:
        assert asyncio.run(scenario()) == 1
        assert heads
    finally:
        worker.close()


def test_a_ctrl_c_while_the_worker_starts_neither_stops_it_nor_prints_a_traceback(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A terminal's Ctrl-C reaches the whole process group. A worker still importing (a second
    or more on a loaded host) took it as a KeyboardInterrupt and printed a traceback (a test of
    ``ringfence up`` under load); it starts with SIGINT ignored, and the server stops it."""
    worker = IngestWorker(tmp_path / "journal.sqlite3", 8, "full", SEGMENT_S, lambda _: None)
    pid = worker.pid
    assert pid is not None
    for _ in range(10):  # from its first moments on
        os.kill(pid, signal.SIGINT)
        time.sleep(0.05)
    time.sleep(1.0)
    assert alive(pid)
    worker.close()
    assert worker._worker.process.exitcode == 0
    assert "Traceback" not in capfd.readouterr().err
