"""The README's five-minute tour, run as written (bash and curl) against a real ``ringfence up``
on a free port: every line works for a newcomer, in order."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ringfence.bench.servers import free_port

README = Path(__file__).resolve().parents[1] / "README.md"
pytestmark = pytest.mark.integration


def tour_script(port: int) -> str:
    """The tour's shell blocks, pointed at this interpreter's venv and the given port."""
    text = README.read_text()
    tour = text[text.index("## A five-minute tour") : text.index("## Detections")]
    script = "\n".join(re.findall(r"```sh\n(.*?)```", tour, re.S))
    bin_dir = Path(sys.executable).parent
    return script.replace("http://127.0.0.1:8080", f"http://127.0.0.1:{port}").replace(".venv/bin/", f"{bin_dir}/")


def json_objects(out: str) -> list[dict[str, Any]]:
    """The compact JSON objects in the output (curl's answers, printed without a newline)."""
    decoder = json.JSONDecoder()
    found = []
    for start in re.finditer(r'\{"', out):
        with contextlib.suppress(ValueError):
            value, _ = decoder.raw_decode(out, start.start())
            found.append(value)
    return found


def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "tour.sh").write_text("set -u\n" + tour_script(port))
    env = {**os.environ, "RINGFENCE_PORT": str(port), "RINGFENCE_LOG_LEVEL": "warning"}
    process = subprocess.Popen(
        ["bash", "tour.sh"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the tour's `ringfence up &` goes with it if the test fails
    )
    try:
        out, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert '{"accepted":1,"duplicates":0' in out, out
    acknowledged = [alert["rule_id"] for alert in json_objects(out) if alert.get("status") == "acknowledged"]
    assert acknowledged == ["transfer_high_risk_country"], out  # the AML alert, not the customer notification
    assert '"openapi": "3.1.0"' in out or '"openapi":"3.1.0"' in out
    assert "accepted 10000, duplicates 0, rejected 0" in out
    assert out.rstrip().endswith("accepted 0, duplicates 10000, rejected 0"), out[-2000:]
