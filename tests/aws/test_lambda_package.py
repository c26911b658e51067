"""The Lambda functions' code as `sam build` makes it (deploy/aws/lambda/Makefile runs
deploy/aws/build-code): the compiled core as a manylinux2014 wheel that needs no glibc newer than
2.17, every other binary wheel within Lambda's glibc, and the package importing with nothing but
itself on the path, as /var/task is on Lambda."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ringfence.runtimes.aws.local import TEMPLATE, load_template

ROOT = TEMPLATE.parents[2]
BUILD = ROOT / "deploy" / "aws" / "build-code"
CORE_GLIBC = (2, 17)  # manylinux2014: older than every Lambda runtime's


def functions() -> dict[str, dict[str, Any]]:
    resources: dict[str, dict[str, Any]] = load_template()["Resources"]
    return {name: r for name, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}


def runtime_python() -> str:
    runtime: str = load_template()["Globals"]["Function"]["Runtime"]
    assert runtime.startswith("python")
    return runtime.removeprefix("python")


def glibc(tag: str) -> tuple[int, int] | None:
    """The glibc a wheel's platform tag asks for (None: not a manylinux tag)."""
    legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    if match := re.match(r"manylinux_(\d+)_(\d+)_", tag):
        return int(match[1]), int(match[2])
    return next((v for k, v in legacy.items() if tag.startswith(k + "_")), None)


def run_python(python: str, package: Path, code: str) -> None:
    """``code`` in ``python`` with only the standard library and ``package`` importable."""
    result = subprocess.run(
        [python, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(package)!r}); {code}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def lambda_python(version: str) -> str | None:
    """An interpreter of the Lambda runtime's version here, if there is one (pyenv's too)."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [shutil.which(f"python{version}") or ""]
    candidates += sorted(str(p) for p in pyenv.glob(f"versions/{version}.*/bin/python{version}"))
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-c", ""], capture_output=True, check=False).returncode == 0:
            return candidate
    return None


def test_every_function_is_built_by_the_makefile() -> None:
    template = load_template()
    code = TEMPLATE.parent / template["Globals"]["Function"]["CodeUri"]
    assert template["Globals"]["Function"]["Architectures"] == ["x86_64"]
    for name, function in functions().items():
        assert function["Metadata"] == {"BuildMethod": "makefile"}, name
        dry_run = subprocess.run(
            ["make", "-n", "-f", str(code / "Makefile"), f"build-{name}", "ARTIFACTS_DIR=/nonexistent"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert dry_run.returncode == 0, dry_run.stderr
        assert "deploy/aws/build-code" in dry_run.stdout


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("cargo") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must build the Lambda package: no Rust toolchain (cargo)")
        pytest.skip("no Rust toolchain (cargo) to build the compiled core")
    out = tmp_path_factory.mktemp("lambda") / "code"
    result = subprocess.run([str(BUILD), str(out)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_the_compiled_core_is_a_manylinux2014_wheel_for_every_lambda_python(package: Path) -> None:
    (wheel,) = package.glob("ringfence_native-*.dist-info/WHEEL")
    tags = re.findall(r"^Tag: (\S+)$", wheel.read_text(), re.M)
    assert "cp311-abi3-manylinux_2_17_x86_64" in tags, tags
    (library,) = (package / "ringfence_native").glob("*.so")
    symbols = subprocess.run(["objdump", "-T", str(library)], capture_output=True, text=True, check=True).stdout
    needed = {tuple(int(n) for n in v.split(".")[:2]) for v in re.findall(r"GLIBC_(\d+\.\d+(?:\.\d+)?)", symbols)}
    assert needed
    assert max(needed) <= CORE_GLIBC, sorted(needed)
    run_python(sys.executable, package, "import ringfence_native")


def test_every_binary_wheel_runs_on_lambdas_glibc(package: Path) -> None:
    # Python 3.12 on runs on Amazon Linux 2023 (glibc 2.34), the older ones on Amazon Linux 2 (2.26)
    lambda_glibc = (2, 34) if int(runtime_python().split(".")[1]) >= 12 else (2, 26)
    for wheel in package.glob("*.dist-info/WHEEL"):
        platforms = [t.split("-")[2] for t in re.findall(r"^Tag: (\S+)$", wheel.read_text(), re.M)]
        needs = [g for g in map(glibc, platforms) if g is not None]
        assert not needs or min(needs) <= lambda_glibc, (wheel.parent.name, platforms)


def test_the_package_imports_on_the_lambda_python_with_the_compiled_core(package: Path) -> None:
    version = runtime_python()
    python = lambda_python(version)
    if python is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must import the Lambda package with Python {version}")
        pytest.skip(f"no Python {version} here")
    run_python(
        python,
        package,
        "import ringfence.aws_lambda; from ringfence.engine import native; assert native.available(); "
        # the API's listing cursors are sealed with AES-GCM (the aws extra's cryptography)
        "from ringfence.runtimes.aws.items import CursorSeal; CursorSeal(b'k' * 32).seal(b'{}')",
    )
