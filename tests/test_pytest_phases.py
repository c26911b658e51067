"""scripts/_pytest_phases.sh, the suite's pytest runs: which arguments make one run, which two.

A stand-in pytest records each call's arguments and answers with a chosen exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PHASES = ROOT / "scripts" / "_pytest_phases.sh"
TWO_PHASES = [["-n", "2", "--dist", "loadfile", "-m", "not serial"], ["-m", "serial"]]


def run(tmp_path: Path, *args: str, statuses: tuple[int, ...] = (0, 0)) -> tuple[int, list[list[str]]]:
    """The script's exit status and the stand-in's calls, each call's arguments."""
    calls = tmp_path / "calls"
    stand_in = tmp_path / "pytest"
    stand_in.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"calls = open({str(calls)!r}, 'a+')\n"
        "calls.seek(0)\n"
        "done = len(calls.readlines())\n"
        "calls.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"sys.exit({list(statuses)!r}[done])\n"
    )
    stand_in.chmod(0o755)
    finished = subprocess.run(
        [str(PHASES), *args], cwd=ROOT, env={**os.environ, "PYTEST": str(stand_in)}, check=False, timeout=30
    )
    lines = calls.read_text().splitlines() if calls.exists() else []
    return finished.returncode, [json.loads(line) for line in lines]


def test_no_arguments_run_the_workers_phase_then_the_serial_tests_alone(tmp_path: Path) -> None:
    assert run(tmp_path) == (0, TWO_PHASES)


@pytest.mark.parametrize(
    "args",
    [
        ["tests/engine", "-x"],
        ["tests/events/test_pan.py::test_luhn_agrees_with_the_checksum_as_published"],
        ["-k", "luhn"],
        ["-kluhn"],
        ["-m", "serial"],
        ["--lf"],
        ["--sw-skip"],
        ["--deselect=tests/engine"],
        ["-xk", "luhn"],  # bundled short options
        ["-xm", "serial"],
        ["-vkluhn"],
    ],
)
def test_arguments_that_pick_tests_make_one_plain_run(tmp_path: Path, args: list[str]) -> None:
    assert run(tmp_path, *args) == (0, [args])


@pytest.mark.parametrize(
    "args",
    [
        ["-c", "pyproject.toml"],
        ["--rootdir", "tests"],
        ["--screenshots", "docs/screenshots"],
        ["--durations=30", "-p", "no:cacheprovider"],
        ["--ignore", "tests/engine"],
        ["-vc", "pyproject.toml"],
        ["--rsyncdir", "src"],
        ["-x", "-pno:randomly", "-o", "xfail_strict=true"],
    ],
)
def test_an_options_value_that_names_a_path_picks_no_tests(tmp_path: Path, args: list[str]) -> None:
    assert run(tmp_path, *args) == (0, [TWO_PHASES[0] + args, TWO_PHASES[1] + args])


@pytest.mark.parametrize(
    ("workers", "left"),
    [
        (["-n", "4"], []),
        (["-n4"], []),
        (["--numprocesses=4", "--dist", "load"], []),
        (["-xn4"], ["-x"]),  # bundled
        (["-vn", "4"], ["-v"]),
        (["-vpno:randomly"], ["-vpno:randomly"]),  # an n in another option's value stays
    ],
)
def test_workers_asked_for_run_the_first_phase_only(tmp_path: Path, workers: list[str], left: list[str]) -> None:
    assert run(tmp_path, *workers, "-q") == (0, [TWO_PHASES[0] + workers + ["-q"], TWO_PHASES[1] + left + ["-q"]])


@pytest.mark.parametrize("option", [["--junitxml=out/report.xml"], ["--junit-xml", "out/report.xml"]])
def test_each_phase_writes_a_junit_report_of_its_own(tmp_path: Path, option: list[str]) -> None:
    serial = [arg.replace("report.xml", "report.serial.xml") for arg in option]
    assert run(tmp_path, *option, "-q") == (0, [TWO_PHASES[0] + option + ["-q"], TWO_PHASES[1] + serial + ["-q"]])


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ((1, 0), 1),  # a failure among the workers' tests fails the run
        ((0, 1), 1),  # ... and among the serial tests
        ((5, 0), 0),  # a selection may leave one phase empty
        ((0, 5), 0),
        ((5, 5), 5),  # not both
        ((3, 0), 3),  # an internal error is kept
    ],
)
def test_the_status_is_the_first_phases_failure_or_else_the_serials(
    tmp_path: Path, statuses: tuple[int, int], expected: int
) -> None:
    status, calls = run(tmp_path, statuses=statuses)
    assert (status, len(calls)) == (expected, 2)


def test_an_interrupted_first_phase_runs_no_second(tmp_path: Path) -> None:
    assert run(tmp_path, statuses=(2,)) == (2, [TWO_PHASES[0]])
