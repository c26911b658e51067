"""No secret is ever committed: API keys, private keys, or credentials in tracked files."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATTERNS = {
    "Ringfence API key": re.compile(rb"rf_[0-9a-f]{12}_[A-Za-z0-9_-]{43}"),
    "private key": re.compile(rb"-----BEGIN (?:RSA |EC |OPENSSH )?PRIVATE KEY-----"),
    "AWS access key": re.compile(rb"AKIA[0-9A-Z]{16}"),
    "Slack token": re.compile(rb"xox[abprs]-[0-9A-Za-z-]{10,}"),
}


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_no_tracked_file_holds_a_secret() -> None:
    files = tracked_files()
    assert len(files) > 50
    found = []
    for path in files:
        if not path.is_file():
            continue
        content = path.read_bytes()
        found += [f"{path.relative_to(ROOT)}: {name}" for name, rx in PATTERNS.items() if rx.search(content)]
    assert found == []


def test_the_scanner_finds_a_planted_key() -> None:
    planted = b"key = rf_0123456789ab_" + b"A" * 43
    assert PATTERNS["Ringfence API key"].search(planted)
