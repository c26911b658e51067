"""The compiled engine core as scripts/_venv.sh builds it: CI always has it, and the ``engine``
setting picks the engine every runtime builds (checked here on the embedded and kafka ones)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ringfence.config import Settings, load_settings
from ringfence.engine import native
from ringfence.engine.engine import Engine
from ringfence.engine.pack import load_pack, load_pack_file
from ringfence.engine.stages import plan_stages
from ringfence.errors import ConfigError, RulePackError
from ringfence.runtimes.embedded.platform import Platform
from ringfence.runtimes.kafka.changelog import Replayed
from ringfence.runtimes.kafka.task import Task

HST_PACK = """
version: "1"
anomaly:
  - name: odd
    kind: half_space_trees
    by: global
    on: [card.authorization]
    of: [data.amount]
rules:
  - id: odd_payment
    on: [card.authorization]
    when: odd > 0.9
    severity: low
    audience: fraud
    title: odd
"""


def need_the_core() -> None:
    if not native.available():
        if os.environ.get("CI") == "true":
            pytest.fail("CI must build the compiled core (scripts/_venv.sh) and import it")
        pytest.skip("the compiled core is not built here (no Rust toolchain when .venv was made)")


def test_ci_builds_the_compiled_core() -> None:
    need_the_core()
    assert native.available()


def test_the_python_engine_is_the_reference_engine() -> None:
    assert type(native.make_engine(load_pack_file(None), 5.0, engine="python")) is Engine


def test_make_engine_refuses_an_engine_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="engine must be one of auto, native, python, not 'rust'"):
        native.make_engine(load_pack_file(None), 5.0, engine="rust")


def test_auto_runs_python_for_a_pack_the_core_cannot_run_and_says_why_once(caplog: pytest.LogCaptureFixture) -> None:
    pack = load_pack(HST_PACK)
    with caplog.at_level("WARNING", logger="ringfence.engine"):
        engines = [native.make_engine(pack, 5.0) for _ in range(3)]
    assert all(type(e) is Engine for e in engines)
    said = [r.getMessage() for r in caplog.records if "running the Python engine" in r.getMessage()]
    assert len(said) <= 1  # once per process: an earlier test may have said it already
    if native.available():
        with pytest.raises(RulePackError, match="half_space_trees"):
            native.make_engine(pack, 5.0, engine="native")


def test_the_engine_setting_defaults_to_auto() -> None:
    assert load_settings(environ={}).engine == "auto"
    assert load_settings(environ={"RINGFENCE_ENGINE": "python"}).engine == "python"


def test_a_bad_engine_setting_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"^engine must be auto\|native\|python, got 'rust' \(environment variable RINGFENCE_ENGINE\)$",
    ):
        load_settings(environ={"RINGFENCE_ENGINE": "rust"})
    file = tmp_path / "rf.toml"
    file.write_text('engine = "Native"\n')
    with pytest.raises(ConfigError, match=f"got 'Native' \\(key 'engine' of {file}\\)"):
        load_settings(file, environ={})


@pytest.mark.parametrize("kind", ["python", "native"])
def test_the_runtimes_build_the_engine_the_setting_names(kind: str, tmp_path: Path) -> None:
    if kind == "native":
        need_the_core()
    expected = Engine if kind == "python" else native.NativeEngine
    platform = Platform(Settings(data_dir=tmp_path, engine=kind))
    try:
        assert type(platform.engine) is expected
    finally:
        platform.stop()
    stage = plan_stages(load_pack_file(None)).stages[0]
    task, _ = Task.restore(stage, 0, Replayed(), 5.0, 600.0, 0.0, engine_kind=kind, min_log_rows=1000)
    assert type(task.engine) is expected
