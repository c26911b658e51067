"""Bandit runs clean and quiet, and every ``# nosec`` silences only the finding its line names.

A ``# nosec B608`` on an f-string makes bandit warn "nosec encountered, but no failed test"
although it did suppress the finding (PyCQA/bandit#1204: it checks each part of the string).
Such lines carry a bare ``# nosec`` with the finding named beside it (``noqa: S608`` is ruff's
name for B608); this test keeps a bare one from hiding anything else.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOSEC = re.compile(r"#\s*nosec\b(?P<rest>.*)$")


def bandit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bandit", "-c", "pyproject.toml", "-r", "src", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def named(comment: str) -> set[str]:
    """The bandit ids a comment names: ``B608``, or ruff's ``S608`` for the same check."""
    return {f"B{number}" for number in re.findall(r"\b[BS](\d{3})\b", comment)}


def test_bandit_finds_nothing_and_prints_no_warning() -> None:
    out = bandit("-q")
    assert out.returncode == 0, out.stdout
    assert "WARNING" not in out.stderr, out.stderr


def test_every_nosec_silences_exactly_the_findings_its_line_names(tmp_path: Path) -> None:
    bandit("-q", "--ignore-nosec", "-f", "json", "-o", str(tmp_path / "report.json"))
    report = json.loads((tmp_path / "report.json").read_text())
    found: dict[tuple[str, int], set[str]] = {}
    for issue in report["results"]:
        found.setdefault((issue["filename"], issue["line_number"]), set()).add(issue["test_id"])
    checked = 0
    for path in sorted((ROOT / "src").rglob("*.py")):
        relative = str(path.relative_to(ROOT))
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            match = NOSEC.search(line)
            if match is None:
                continue
            checked += 1
            names = named(match.group("rest"))
            issues = found.get((relative, number), set())
            assert names, f"{relative}:{number}: a nosec must name what it silences"
            assert issues, f"{relative}:{number}: nothing to silence (a stale nosec)"
            assert issues <= names, f"{relative}:{number}: silences {sorted(issues - names)} unnamed"
    assert checked > 10
