"""``ringfence up``: demo traffic raises alerts; Ctrl-C and SIGTERM stop it cleanly."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ringfence.bench.servers import free_port, ringfence_cli, start_server
from ringfence.testing import event


def test_up_demo_prints_a_key_and_its_traffic_raises_alerts(tmp_path: Path) -> None:
    server = start_server(tmp_path / "d", "--demo", "--demo-rate", "400")
    try:
        deadline = time.monotonic() + 60
        while not (match := re.search(r"Demo key: (\S+)", server.log_path.read_text())):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        headers = {"Authorization": f"Bearer {match.group(1)}"}
        while True:
            items = httpx.get(f"{server.url}/v1/alerts", headers=headers).json()["items"]
            if items:
                break
            assert time.monotonic() < deadline, "demo traffic raised no alert in 60 s"
            time.sleep(0.25)
        assert {"id", "rule_id", "evidence"} <= set(items[0])
    finally:
        assert server.stop()


def test_ctrl_c_shuts_down_cleanly(tmp_path: Path) -> None:
    server = start_server(tmp_path / "d")
    server.process.send_signal(signal.SIGINT)
    server.process.wait(timeout=30)
    assert "embedded platform stopped" in server.log_path.read_text()
    assert server.process.returncode in (0, 130, -signal.SIGINT)  # 130: the shell's code for Ctrl-C


def test_ctrl_c_at_a_terminal_stops_the_demo_without_a_traceback(tmp_path: Path) -> None:
    """A terminal's Ctrl-C goes to the whole process group: the ingest worker process too, which
    printed a KeyboardInterrupt traceback, and the demo's traffic logged its refused batch as an
    error (found by a newcomer's walk through the README)."""
    port = free_port()
    output = tmp_path / "up.log"
    with output.open("wb") as sink:
        up = subprocess.Popen(  # nosec B603
            [
                sys.executable,
                "-m",
                "ringfence",
                "up",
                "--demo",
                "--demo-rate",
                "400",
                "--port",
                str(port),
                "--data-dir",
                str(tmp_path / "d"),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            process_group=0,  # a group of its own, as a terminal's job is
        )
    try:
        deadline = time.monotonic() + 60
        while "Demo key:" not in output.read_text():
            assert up.poll() is None, output.read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(2)  # demo batches under way
        os.killpg(up.pid, signal.SIGINT)
        up.wait(timeout=30)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
    text = output.read_text()
    assert "embedded platform stopped" in text
    assert "Traceback" not in text
    assert "KeyboardInterrupt" not in text
    assert '"level": "error"' not in text, text[-3000:]


def test_a_bad_alerting_config_stops_start_up_with_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "alerting.yaml"
    config.write_text("route: {receiver: nobody}\n")
    result = subprocess.run(
        [sys.executable, "-m", "ringfence", "up", "--data-dir", str(tmp_path / "d"), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RINGFENCE_ALERTING": str(config)},
    )
    assert result.returncode == 2
    assert "route: unknown receiver 'nobody'" in result.stderr


def test_a_busy_port_is_one_clear_line_and_exit_2_before_any_banner(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "ringfence", "up", "--data-dir", str(tmp_path / "d"), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"error: port 127.0.0.1:{port} is already in use; stop what listens there, or choose --port"
    )
    assert "API:" not in result.stdout
    assert not (tmp_path / "d").exists()  # nothing was done


def test_the_data_dir_is_0700_and_every_file_0600_whatever_the_umask_or_an_existing_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)  # as an older Ringfence, or a careless mkdir, left it
    stale = data_dir / "store.sqlite3-wal"
    stale.write_bytes(b"")
    stale.chmod(0o644)
    old_umask = os.umask(0o022)
    try:
        made = ringfence_cli("keys", "create", "--name", "ops", "--scope", "admin", data_dir=data_dir)
        key = made.stdout.strip().splitlines()[-1]  # the CLI wrote the store, audit key and anchor
        server = start_server(data_dir)
        with server.client(key) as client:
            assert client.post("/v1/events", json=[event()]).status_code == 202
            server.wait_processed(key)
        assert server.stop()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    modes = {str(p.relative_to(data_dir)): oct(stat.S_IMODE(p.stat().st_mode)) for p in data_dir.rglob("*")}
    assert {"journal.sqlite3", "store.sqlite3", "processor.lock", "audit.key", "store.sqlite3-audit-anchor"} <= set(
        modes
    )
    indexes = [p for p in data_dir.glob("journal-*.dedup") if p.is_dir()]  # RocksDB's, made in the umask's mode
    assert indexes
    assert all(any(p.iterdir()) for p in indexes)
    assert {m for name, m in modes.items() if (data_dir / name).is_dir()} == {"0o700"}, modes
    assert {m for name, m in modes.items() if not (data_dir / name).is_dir()} == {"0o600"}, modes
    assert "was open to group or others (mode 755); made it 700" in made.stderr


def test_a_busy_metrics_port_of_a_kafka_service_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from ringfence.cli.serve import _serve_metrics
    from ringfence.metrics import Metrics

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(typer.Exit) as exit_:
            _serve_metrics(Metrics(), None, "127.0.0.1", port)  # type: ignore[arg-type]  # never reached
    assert exit_.value.exit_code == 2
    assert capsys.readouterr().err == f"error: cannot serve metrics on 127.0.0.1:{port}: Address already in use\n"
