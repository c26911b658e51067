"""Settings: defaults, file, environment and overrides, in that order; bad values named."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from ringfence.config import Settings, audit_key, load_settings
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
        ({"RINGFENCE_JOURNAL_SEGMENT_S": "0.5"}, "journal_segment_s must be between 1 and 86400 s"),
        ({"RINGFENCE_JOURNAL_SEGMENT_S": "nan"}, "journal_segment_s must be a finite number"),
        # NaN passes "<= 0": it would have turned the brute-force limits off
        ({"RINGFENCE_AUTH_FAILURES_PER_MIN": "nan"}, "auth_failures_per_min must be a finite number"),
        ({"RINGFENCE_SIGNIN_ATTEMPTS_PER_MIN": "inf"}, "signin_attempts_per_min must be a finite number"),
        ({"RINGFENCE_RATE_LIMIT_PER_S": "-inf"}, "rate_limit_per_s must be a finite number"),
        ({"RINGFENCE_ALLOWED_LATENESS_S": "-100"}, "allowed_lateness_s must be 0..604800 s"),
        ({"RINGFENCE_LOG_RETENTION_S": "nan"}, "log_retention_s must be a finite number"),
        ({"RINGFENCE_KAFKA_DEDUP_WINDOW_S": "0"}, "kafka_dedup_window_s must be positive"),
        ({"RINGFENCE_PORT": "70000"}, "port must be 1..65535"),
        (
            {"RINGFENCE_FX_MAX_AGE_DAYS": "1" + "0" * 400},
            "fx_max_age_days must be at most 3,650",
        ),  # overflowed per event
        ({"RINGFENCE_BACKTEST_TIME_BUDGET_S": "1e19"}, "backtest_time_budget_s must be at most 86,400"),
        (
            {"RINGFENCE_JOURNAL_SEGMENT_S": "7200", "RINGFENCE_LOG_RETENTION_S": "3600"},
            "journal_segment_s must not exceed log_retention_s",
        ),
        ({"RINGFENCE_JOURNAL_SEGMENT_S": "60"}, r"at least log_retention_s / 1,000 \(604.8 s\)"),
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


def test_a_retired_setting_still_loads_and_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = tmp_path / "rf.toml"
    file.write_text("checkpoint_interval_s = 2.0\nport = 9000\n")
    with caplog.at_level(logging.WARNING, logger="ringfence.config"):
        s = load_settings(file, environ={"RINGFENCE_CHECKPOINT_INTERVAL_S": "1"})
    assert s.port == 9000
    assert "checkpoint_interval_s" not in Settings.__struct_fields__
    assert (
        "setting checkpoint_interval_s (environment variable RINGFENCE_CHECKPOINT_INTERVAL_S) is ignored" in caplog.text
    )


def test_secrets_and_the_cli_key_are_not_settings() -> None:
    s = load_settings(environ={"RINGFENCE_API_KEY": "rf_x", "RINGFENCE_SECRET_HOOK": "s", "RINGFENCE_PORT": "9001"})
    assert s.port == 9001


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("environ", "overrides", "message"),
    [
        ({"RINGFENCE_PORT": "xyz"}, {}, "invalid setting port (environment variable RINGFENCE_PORT)"),
        ({"RINGFENCE_MAX_CONNECTIONS": "0"}, {}, "max_connections must be positive (environment variable"),
        ({}, {"port": -1}, "port must be 1..65535, got -1 (option --port)"),
        ({"RINGFENCE_KAFKA_COMMIT_INTERVAL_MS": "0"}, {}, "kafka_commit_interval_ms must be positive"),
        ({"RINGFENCE_KAFKA_COMMIT_INTERVAL_MS": "5000"}, {}, "kafka_commit_interval_ms must be at most 1000"),
        ({"RINGFENCE_FORWARDED_ALLOW_IPS": "10.0.0.1,*"}, {}, "got '*' (environment variable"),
    ],
)
def test_an_error_names_the_variable_or_option_at_fault(
    environ: dict[str, str], overrides: dict[str, int], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(environ=environ, **overrides)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"data_dir = 5\n", "invalid setting data_dir (key 'data_dir' of"),
        (b"port = \xff\n", "cannot read settings file"),  # not UTF-8
        (b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
    ],
)
def test_a_settings_file_that_cannot_be_read_is_named_not_a_traceback(
    tmp_path: Path, text: bytes, message: str
) -> None:
    path = tmp_path / "settings.toml"
    path.write_bytes(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(path, environ={})


def test_an_error_names_the_settings_file_key(tmp_path: Path) -> None:
    file = tmp_path / "rf.toml"
    file.write_text('request_head_timeout_s = "soon"\n')
    with pytest.raises(ConfigError, match=f"request_head_timeout_s \\(key 'request_head_timeout_s' of {file}\\)"):
        load_settings(file, environ={})


def test_proxies_are_trusted_only_when_named() -> None:
    assert load_settings(environ={}).forwarded_allow_ips == ""
    named = load_settings(environ={"RINGFENCE_FORWARDED_ALLOW_IPS": "10.0.0.0/8, 192.0.2.7"})
    assert named.forwarded_allow_ips == "10.0.0.0/8, 192.0.2.7"


def test_connections_are_bounded_and_heads_timed_out_by_default() -> None:
    settings = Settings()
    assert (settings.max_connections, settings.request_head_timeout_s) == (1_000, 5.0)


def test_the_audit_secret_must_be_long_enough_to_be_a_key() -> None:
    assert audit_key({}) is None
    assert audit_key({"RINGFENCE_SECRET_AUDIT_KEY": "a" * 64}) == b"a" * 64
    with pytest.raises(ConfigError, match="RINGFENCE_SECRET_AUDIT_KEY is too short"):
        audit_key({"RINGFENCE_SECRET_AUDIT_KEY": "hunter2"})
