"""Settings: defaults, file, environment and overrides, in that order; bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringfence.config import Settings, load_settings
from ringfence.errors import ConfigError


def test_precedence_is_defaults_file_env_overrides(tmp_path: Path) -> None:
    file = tmp_path / "rf.toml"
    file.write_text('port = 9000\npartitions = 4\nlog_level = "debug"\n')
    s = load_settings(file, environ={"RINGFENCE_PORT": "9100", "RINGFENCE_PARTITIONS": "2"}, partitions=16)
    assert (s.port, s.partitions, s.log_level, s.host) == (9100, 16, "debug", "127.0.0.1")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"RINGFENCE_NOPE": "1"}, "unknown setting RINGFENCE_NOPE"),
        ({"RINGFENCE_PORT": "eighty"}, "port"),
        ({"RINGFENCE_PARTITIONS": "0"}, "partitions must be 1..1024"),
        ({"RINGFENCE_JOURNAL_SYNC": "off"}, "journal_sync"),
    ],
)
def test_bad_settings_are_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=environ)


def test_paths_come_from_the_environment_and_files(tmp_path: Path) -> None:
    s = load_settings(environ={"RINGFENCE_DATA_DIR": "/srv/rf", "RINGFENCE_ALERTING": "/etc/rf/alerting.yaml"})
    assert s.data_dir == Path("/srv/rf")
    assert s.alerting == Path("/etc/rf/alerting.yaml")
    file = tmp_path / "rf.toml"
    file.write_text('rule_pack = "/etc/rf/pack.yaml"\n')
    assert load_settings(file, environ={}).rule_pack == Path("/etc/rf/pack.yaml")


def test_secrets_and_the_cli_key_are_not_settings() -> None:
    s = load_settings(environ={"RINGFENCE_API_KEY": "rf_x", "RINGFENCE_SECRET_HOOK": "s", "RINGFENCE_PORT": "9001"})
    assert s.port == 9001


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().port = 1  # type: ignore[misc]
