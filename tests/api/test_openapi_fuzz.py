"""Schemathesis drives the running server from the committed OpenAPI document: no 5xx,
every response conforms to the document, unsupported methods and missing auth answered right.
Its hooks (``fuzz_hooks``) add crafted digits to every integer parameter, each answered 400."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from ringfence.bench.servers import create_key, start_server
from tests.helpers.fuzz_hooks import HOSTILE_INTEGERS, INTEGER_PARAMETERS

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = ROOT / "src" / "ringfence" / "api" / "openapi.json"
CHECKS = (
    "not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance,"
    "unsupported_method,missing_required_header,ignored_auth"
)


def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    key = create_key(data_dir, "fuzzer", "admin")
    # the fuzzer sends many bad keys on purpose: lift the abuse limits for this run
    limits = {
        "RINGFENCE_AUTH_FAILURES_PER_MIN": "1000000",
        "RINGFENCE_RATE_LIMIT_PER_S": "1000000",
        "RINGFENCE_RATE_LIMIT_BURST": "1000000",
    }
    server = start_server(data_dir, env=limits)
    har = tmp_path / "requests.har"
    try:
        st = Path(sys.executable).parent / "st"
        result = subprocess.run(
            [
                str(st),
                "run",
                str(OPENAPI),
                "--url",
                server.url,
                "-H",
                f"Authorization: Bearer {key}",
                "--checks",
                CHECKS,
                "--max-examples",
                os.environ.get("RINGFENCE_FUZZ_EXAMPLES", "25"),
                "--seed",
                os.environ.get("RINGFENCE_FUZZ_SEED", "20261128"),
                "--workers",
                "1",  # threads hit CPython 3.11's "AST constructor recursion depth mismatch" (gh-106905)
                "--exclude-path",
                "/v1/alerts/stream",  # endless by design; tested in test_pipeline_api
                "--request-timeout",
                "10",
                "--report",
                "har",
                "--report-har-path",
                str(har),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
            env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.helpers.fuzz_hooks", "PYTHONPATH": str(ROOT)},
        )
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        assert " passed" in result.stdout
        assert crafted_digits_answered(har) == {(path, name): {400} for path, name in integer_parameters()}
    finally:
        assert server.stop()


def integer_parameters() -> set[tuple[str, str]]:
    return {(path, name) for (_, path), names in INTEGER_PARAMETERS.items() for name in names}


def crafted_digits_answered(har: Path) -> dict[tuple[str, str], set[int]]:
    """The statuses the server gave, per (path template, parameter), to the hooks' crafted digits."""
    wanted = integer_parameters()
    templates = {re.compile(re.sub(r"\{[^}]+\}", "[^/]+", path)): path for path, _ in wanted}
    answered: dict[tuple[str, str], set[int]] = {}
    for entry in json.loads(har.read_text())["log"]["entries"]:
        url = urlsplit(entry["request"]["url"])
        path = next((t for pattern, t in templates.items() if pattern.fullmatch(url.path)), None)
        for name, value in parse_qsl(url.query, keep_blank_values=True):
            if (path, name) in wanted and value in HOSTILE_INTEGERS:
                answered.setdefault((path, name), set()).add(entry["response"]["status"])
    return answered
