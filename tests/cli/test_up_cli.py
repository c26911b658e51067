"""``ringfence up``: demo traffic raises alerts; Ctrl-C and SIGTERM stop it cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ringfence.testing import start_server


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


def test_a_bad_alerting_config_stops_start_up_with_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "alerting.yaml"
    config.write_text("route: {receiver: nobody}\n")
    result = subprocess.run(
        [sys.executable, "-m", "ringfence", "up", "--data-dir", str(tmp_path / "d"), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RINGFENCE_ALERTING": str(config)},
    )
    assert result.returncode == 2
    assert "route: unknown receiver 'nobody'" in result.stderr
