"""Audit the lock against the advisory databases with pip-audit; run by ``scripts/audit``.

OSV is asked first, then PyPI. Exit 1 when a locked package has a known vulnerability, 2 when
pip-audit itself fails; when no database could be reached, say plainly that nothing was
checked and exit 0, so an offline CI run does not fail for lack of network.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCK = Path("requirements/dev.txt")
OSV_URL = "https://api.osv.dev/v1/query"
# what pip-audit prints when its database cannot be reached (requests/urllib3 exceptions)
UNREACHABLE = re.compile(
    r"ConnectionError|Could not connect|NameResolutionError|Max retries exceeded|timed out|ProxyError"
)


@dataclass
class Verdict:
    code: int
    message: str


def judge(report: dict[str, Any], source: str) -> Verdict | None:
    """The verdict on one database's JSON report, or None when it had no data for any package
    (unreachable, or a mirror that does not serve advisories)."""
    deps = report.get("dependencies", [])
    audited = [d for d in deps if "skip_reason" not in d]
    if deps and not audited:
        return None
    vulnerable = [d for d in audited if d.get("vulns")]
    skipped = sorted(d["name"] for d in deps if "skip_reason" in d)
    lines = [
        f"{d['name']} {d['version']}: {v['id']} (fixed in {', '.join(v['fix_versions']) or 'no release yet'})"
        for d in vulnerable
        for v in d["vulns"]
    ]
    if skipped:
        lines.append(f"not audited ({source} had no data): {', '.join(skipped)}")
    if vulnerable:
        head = f"{len(vulnerable)} of {len(audited)} locked packages have known vulnerabilities ({source}):"
        return Verdict(1, "\n".join([head, *lines]))
    return Verdict(0, "\n".join([f"no known vulnerabilities in {len(audited)} locked packages ({source})", *lines]))


def run_pip_audit(lock: Path, service: str, osv_url: str, timeout: int) -> Verdict | None:
    """Run pip-audit on ``lock`` against one database; None when it could not be reached."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        options = {
            "--requirement": str(lock),
            "--vulnerability-service": service,
            "--osv-url": osv_url,
            "--timeout": str(timeout),
            "--format": "json",
            "--output": str(out),
            "--progress-spinner": "off",
            "--desc": "off",
        }
        flags = [part for pair in options.items() for part in pair]
        command = [sys.executable, "-m", "pip_audit", "--disable-pip", "--require-hashes", *flags]
        done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv
        if out.exists() and out.stat().st_size:
            return judge(json.loads(out.read_text()), service)
        if UNREACHABLE.search(done.stderr):
            return None
        return Verdict(2, f"pip-audit failed ({service}):\n{done.stderr.strip()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/audit", description=__doc__)
    parser.add_argument("--lock", type=Path, default=LOCK, help=f"hash-pinned requirements [default: {LOCK}]")
    parser.add_argument("--service", action="append", choices=["osv", "pypi"], help="[default: osv, then pypi]")
    parser.add_argument("--osv-url", default=OSV_URL, help=f"[default: {OSV_URL}]")
    parser.add_argument("--timeout", type=int, default=15, help="seconds per request [default: 15]")
    args = parser.parse_args(argv)
    for service in args.service or ["osv", "pypi"]:
        verdict = run_pip_audit(args.lock, service, args.osv_url, args.timeout)
        if verdict is not None:
            print(verdict.message)
            return verdict.code
    print(
        f"NOT AUDITED: no advisory database could be reached ({', '.join(args.service or ['osv', 'pypi'])}); "
        f"nothing in {args.lock} was checked. Run scripts/audit where one is reachable."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
