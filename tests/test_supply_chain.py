"""The supply chain: the lock pins every package by hash, matches pyproject.toml, and no floor
(declared or locked) drops below a release with a known advisory; scripts/audit tells a
vulnerable lock from an unreachable advisory database."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from ringfence.bench.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "dev.txt"
LOCKED_EXTRAS = ("dev", "ml", "aws")  # what scripts/lock resolves, besides the runtime dependencies

# The first release past every advisory we know of: pyproject.toml must not declare a lower
# floor for these, and the lock must not pin a lower version.
SAFE_FLOORS: dict[str, tuple[str, str]] = {
    "starlette": ("0.49.1", "CVE-2024-24762, CVE-2024-47874, CVE-2025-54121, CVE-2025-62727"),
    "h11": ("0.16.0", "CVE-2025-43859 (through uvicorn and httpcore)"),
    "anyio": ("4.4.0", "race in to_thread.run_sync"),
    "idna": ("3.7", "CVE-2024-3651"),
    "certifi": ("2024.7.4", "CVE-2023-37920, CVE-2024-39689"),
    "cryptography": ("44.0.1", "CVE-2023-50782, CVE-2024-26130, CVE-2024-12797"),
    "aiosmtpd": ("1.4.6", "CVE-2024-27305, CVE-2024-34083"),
    "pyyaml": ("5.4", "CVE-2020-14343"),
    "httpx": ("0.23.0", "CVE-2021-41945"),
    "uvicorn": ("0.11.7", "CVE-2020-7694, CVE-2020-7695"),
}
# Only in the lock, through a dev tool (moto's server, requests, matplotlib, ...): the lock's pin
# must be past these.
SAFE_LOCKED: dict[str, tuple[str, str]] = {
    "jinja2": ("3.1.6", "CVE-2024-22195, CVE-2024-34064, CVE-2024-56201, CVE-2024-56326, CVE-2025-27516"),
    "werkzeug": ("3.0.6", "CVE-2024-34069, CVE-2024-49766, CVE-2024-49767"),
    "flask": ("3.1.1", "CVE-2025-47278"),
    "flask-cors": ("6.0.0", "CVE-2024-1681, CVE-2024-6221, CVE-2024-6839, CVE-2024-6844, CVE-2024-6866"),
    "urllib3": ("2.5.0", "CVE-2024-37891, CVE-2025-50181, CVE-2025-50182"),
    "requests": ("2.32.4", "CVE-2024-35195, CVE-2024-47081"),
    "pillow": ("11.3.0", "CVE-2024-28219, CVE-2025-48379"),
    "pydantic": ("2.4.0", "CVE-2024-3772"),
    "pygments": ("2.15.0", "CVE-2022-40896"),
    "pip": ("25.3", "CVE-2023-5752, CVE-2025-8869"),
    "websockets": ("9.1", "CVE-2021-33880"),
}


def locked() -> dict[str, tuple[Version, list[str]]]:
    """The lock's packages: canonical name -> (pinned version, its sha256 hashes)."""
    entries: dict[str, tuple[Version, list[str]]] = {}
    text = LOCK.read_text()
    for block in re.split(r"\n(?=\S)", text):
        first = block.split("\\", 1)[0].strip()
        if not first or first.startswith("#"):
            continue
        name, sep, version = first.partition("==")
        assert sep, f"not pinned with ==: {first!r}"
        entries[canonicalize_name(name)] = (
            Version(version.strip()),
            re.findall(r"--hash=sha256:([0-9a-f]{64})", block),
        )
    return entries


def declared() -> list[Requirement]:
    """Every requirement pyproject.toml declares for the locked install."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in [*project["dependencies"], *(r for e in LOCKED_EXTRAS for r in extras[e])]]


def floor(requirement: Requirement) -> Version | None:
    bounds = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==", "~=", ">")]
    return max(bounds) if bounds else None


def test_every_locked_package_is_pinned_to_one_version_with_hashes() -> None:
    entries = locked()
    assert len(entries) > 100
    unhashed = [name for name, (_, hashes) in entries.items() if not hashes]
    assert unhashed == []


def test_the_lock_holds_every_declared_dependency_at_a_version_pyproject_allows() -> None:
    entries = locked()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{name} is declared but not locked: run scripts/lock"
        assert requirement.specifier.contains(entries[name][0], prereleases=True), (
            f"{name}=={entries[name][0]} is locked but pyproject.toml asks {requirement.specifier}: run scripts/lock"
        )


def test_the_lock_includes_the_install_tools_and_leaves_setuptools_out() -> None:
    entries = locked()
    assert {"pip", "hatchling", "editables"} <= set(entries)
    assert "setuptools" not in entries  # scripts/_venv.sh removes the venv's bundled one


@pytest.mark.parametrize("name", sorted(SAFE_FLOORS))
def test_no_declared_floor_admits_a_release_with_a_known_advisory(name: str) -> None:
    safe, advisories = SAFE_FLOORS[name]
    requirements = [r for r in declared() if canonicalize_name(r.name) == name]
    if name in ("h11", "anyio", "idna", "certifi", "starlette", "httpx", "uvicorn", "pyyaml"):
        assert requirements, f"{name} must be declared with a floor past {advisories}"
    for requirement in requirements:
        lowest = floor(requirement)
        assert lowest is not None, f"{requirement} has no floor"
        assert lowest >= Version(safe), f"{requirement} admits {advisories}"


@pytest.mark.parametrize("name", sorted({**SAFE_FLOORS, **SAFE_LOCKED}))
def test_no_locked_version_has_a_known_advisory(name: str) -> None:
    safe, advisories = {**SAFE_FLOORS, **SAFE_LOCKED}[name]
    entries = locked()
    if name in entries:
        assert entries[name][0] >= Version(safe), f"{name}=={entries[name][0]}: {advisories}"


# scripts/audit, against a local stand-in for the OSV database


class FakeOsv(BaseHTTPRequestHandler):
    """Answers OSV queries: jinja2 3.1.2 has one advisory, everything else none."""

    def do_POST(self) -> None:
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answer: dict[str, Any] = {}
        if query["package"]["name"] == "jinja2" and query["version"] == "3.1.2":
            answer = {
                "vulns": [
                    {
                        "id": "GHSA-h5c8-rqwp-cp95",
                        "summary": "xmlattr filter allows keys with spaces",
                        "affected": [
                            {
                                "package": {"name": "jinja2", "ecosystem": "PyPI"},
                                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.1.3"}]}],
                            }
                        ],
                    }
                ]
            }
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def osv_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOsv)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/query"
    server.shutdown()
    server.server_close()


def small_lock(tmp_path: Path, jinja2: str) -> Path:
    hashes = "--hash=sha256:" + "0" * 64
    path = tmp_path / "lock.txt"
    path.write_text(f"jinja2=={jinja2} {hashes}\nmarkupsafe==3.0.2 {hashes}\n")
    return path


def audit(*args: str) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec("pip_audit") is None:
        if os.environ.get("CI"):
            pytest.fail("pip-audit is not installed")
        pytest.skip("pip-audit is not installed (scripts/_venv.sh installs the lock)")
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "_audit.py"), "--service", "osv", "--timeout", "5", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_audit_fails_on_a_locked_package_with_an_advisory(tmp_path: Path, osv_url: str) -> None:
    out = audit("--lock", str(small_lock(tmp_path, "3.1.2")), "--osv-url", osv_url)
    assert out.returncode == 1, out
    assert "jinja2 3.1.2: GHSA-h5c8-rqwp-cp95 (fixed in 3.1.3)" in out.stdout


def test_audit_passes_a_clean_lock(tmp_path: Path, osv_url: str) -> None:
    out = audit("--lock", str(small_lock(tmp_path, "3.1.6")), "--osv-url", osv_url)
    assert out.returncode == 0, out
    assert "no known vulnerabilities in 2 locked packages (osv)" in out.stdout


def test_audit_says_plainly_when_no_database_is_reachable(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1/query"
    out = audit("--lock", str(small_lock(tmp_path, "3.1.2")), "--osv-url", closed)
    assert out.returncode == 0, out
    assert out.stdout.startswith("NOT AUDITED: no advisory database could be reached")
