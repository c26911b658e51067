"""``ringfence replay``: a file through the pipeline, into a data dir or to a running server."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import httpx
import pytest

from ringfence.bench.servers import create_key, ringfence_cli, run_embedded
from ringfence.testing import event


def write_events(path: Path, *, invalid: int = 0) -> list[dict[str, object]]:
    events = [
        event("transfer.initiated", customer_id=f"cus_{i}", payee_country="KP", amount="100.00") for i in range(30)
    ]
    lines = [json.dumps(e) for e in events] + ['{"event_id": "broken"'] * invalid
    path.write_text("\n".join(lines) + "\n")
    return events


def test_replay_into_a_data_dir_processes_every_event(tmp_path: Path) -> None:
    write_events(tmp_path / "events.ndjson", invalid=1)
    data_dir = tmp_path / "d"
    out = ringfence_cli("replay", str(tmp_path / "events.ndjson"), data_dir=data_dir, check=False)
    assert out.returncode == 1  # a line was rejected
    assert "accepted 30, duplicates 0, rejected 1" in out.stdout
    assert "rejected line 31" in out.stdout
    again = ringfence_cli("replay", str(tmp_path / "events.ndjson"), "--allow-rejects", data_dir=data_dir)
    assert "accepted 0, duplicates 30, rejected 1" in again.stdout
    key = create_key(data_dir, "reader", "alerts:read")
    with run_embedded(data_dir) as server:
        alerts = httpx.get(
            f"{server.url}/v1/alerts",
            params={"rule_id": "transfer_high_risk_country"},
            headers={"Authorization": f"Bearer {key}"},
        ).json()["items"]
    assert len(alerts) == 30


def test_replay_to_a_running_server(tmp_path: Path) -> None:
    write_events(tmp_path / "events.ndjson", invalid=1)
    data_dir = tmp_path / "d"
    key = create_key(data_dir, "producer", "events:write")
    with run_embedded(data_dir):
        refused = ringfence_cli("replay", str(tmp_path / "events.ndjson"), data_dir=data_dir, check=False)
        assert refused.returncode == 2
        assert "another Ringfence process is running" in refused.stderr
    with run_embedded(data_dir) as server:
        out = ringfence_cli(
            "replay", str(tmp_path / "events.ndjson"), "--url", server.url, "--key", key, data_dir=data_dir, check=False
        )
    assert out.returncode == 1
    assert "accepted 30, duplicates 0, rejected 1" in out.stdout


def test_replay_fails_when_lines_are_rejected_and_counts_those_it_does_not_show(tmp_path: Path) -> None:
    lines = ['{"event_id": "broken"'] * 24 + ["[1, 2]"]
    (tmp_path / "bad.ndjson").write_text("\n".join(lines) + "\n")
    out = ringfence_cli("replay", str(tmp_path / "bad.ndjson"), data_dir=tmp_path / "d", check=False)
    assert out.returncode == 1
    assert "accepted 0, duplicates 0, rejected 25" in out.stdout
    shown = [line for line in out.stdout.splitlines() if line.startswith("  rejected line")]
    assert len(shown) == 20
    assert "  ... and 5 more rejected lines not shown" in out.stdout
    assert "(None)" not in out.stdout
    allowed = ringfence_cli("replay", str(tmp_path / "bad.ndjson"), "--allow-rejects", data_dir=tmp_path / "d")
    assert allowed.returncode == 0


class _Front(http.server.BaseHTTPRequestHandler):
    """A server in front of (or instead of) Ringfence: each POST gets the next planned answer."""

    answers: list[tuple[int, dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        status, headers, body = self.answers.pop(0) if self.answers else (500, {}, b"")
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("answers", "code", "said"),
    [
        ([(502, {"Content-Type": "text/html"}, b"<html>Bad Gateway</html>")], 1, "with no answer of Ringfence's"),
        ([(202, {}, b'{"accepted": 1}')], 1, "with no answer of Ringfence's"),
        ([(202, {}, b'{"error": "oops"}')], 1, "with no answer of Ringfence's"),
        (  # Retry-After as an HTTP date (RFC 9110), then the answer
            [
                (503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, b"{}"),
                (429, {"Retry-After": "soon"}, b"{}"),
                (202, {}, b'{"accepted": 2, "duplicates": 0, "rejected": []}'),
            ],
            0,
            "accepted 2, duplicates 0, rejected 0",
        ),
    ],
)
def test_replay_to_something_that_is_not_ringfence_says_so_in_one_line(
    tmp_path: Path, answers: list[tuple[int, dict[str, str], bytes]], code: int, said: str
) -> None:
    (tmp_path / "events.ndjson").write_text(json.dumps(event()) + "\n" + json.dumps(event()) + "\n")
    _Front.answers = list(answers)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Front)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        out = ringfence_cli(
            "replay", str(tmp_path / "events.ndjson"), "--url", url, "--key", "k", data_dir=tmp_path / "d", check=False
        )
    finally:
        server.shutdown()
        server.server_close()
    assert (out.returncode, "Traceback" in out.stderr) == (code, False), out.stderr
    assert said in out.stdout + out.stderr
