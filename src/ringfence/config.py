"""The one settings object. This module is the only place that reads the environment
or a settings file; everything else is handed a :class:`Settings`.

Precedence, lowest first: defaults, the TOML settings file, ``RINGFENCE_*`` environment
variables, explicit overrides (CLI flags). An unknown setting is refused, naming it; a
retired one (:data:`RETIRED_SETTINGS`) is ignored with a logged warning, so a settings file
written for an older release still loads.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from ringfence.errors import ConfigError
from ringfence.private_files import read_input

DEFAULT_DATA_DIR = Path("ringfence-data")
DEFAULT_REFERENCE_CURRENCY = "EUR"
DEFAULT_FX_MAX_AGE_DAYS = 4  # a Friday's rates still serve the Monday after a holiday weekend
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_PARTITIONS = 8
DEFAULT_ALLOWED_LATENESS_S = 5.0
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_BATCH_EVENTS = 10_000
DEFAULT_MAX_LAG_EVENTS = 500_000
DEFAULT_MIN_FREE_MEMORY_MIB = 512
DEFAULT_MIN_FREE_DISK_MIB = 1024
MAX_COMMIT_INTERVAL_MS = 1_000  # kafka_commit_interval_ms at most: what an event may wait at each hop
DEFAULT_LOG_RETENTION_S = 7 * 24 * 3600.0
DEFAULT_JOURNAL_SEGMENT_S = 3600.0
MIN_JOURNAL_SEGMENT_S, MAX_JOURNAL_SEGMENT_S = 1.0, 86400.0  # a file a second at most; a day's index at most
MAX_JOURNAL_SEGMENTS = 1_000  # segment files over the retention (168 by default)
DEFAULT_RATE_LIMIT_PER_S = 500.0
DEFAULT_RATE_LIMIT_BURST = 1_000.0
DEFAULT_PEOPLE_WRITES_MIB_PER_HOUR = 8.0
DEFAULT_AUTH_FAILURES_PER_MIN = 30.0
DEFAULT_REQUEST_TIMEOUT_S = 30.0
DEFAULT_MAX_CONNECTIONS = 1_000
DEFAULT_REQUEST_HEAD_TIMEOUT_S = 5.0
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 100
DEFAULT_MAX_STREAMS_PER_KEY = 5
DEFAULT_SIGNIN_ATTEMPTS_PER_MIN = 10.0
DEFAULT_BACKTEST_TIME_BUDGET_S = 120.0
# which engine runs rule packs (ringfence.engine.native.make_engine): the compiled core where it can
# run the pack, else the Python engine; the compiled core only; the Python engine only
ENGINES = ("auto", "native", "python")
MIN_AUDIT_KEY_CHARS = 32
ENV_PREFIX = "RINGFENCE_"
# not settings: the CLI's API key, and secrets that receivers name (RINGFENCE_SECRET_*)
NOT_SETTINGS = ("RINGFENCE_CONFIG", "RINGFENCE_API_KEY")
AWS_PREFIX = "RINGFENCE_AWS_"  # the aws runtime's resource names (its template sets them), not settings
SECRET_PREFIX = "RINGFENCE_SECRET_"  # nosec B105 # noqa: S105 - a name prefix, not a secret
# settings that no longer do anything, each with what replaced it
MAX_SETTINGS_BYTES = 1024 * 1024
UPPER_BOUNDS = {
    "fx_max_age_days": 3650,
    "backtest_time_budget_s": 86400,
    "request_timeout_s": 3600,
    "request_head_timeout_s": 3600,
    "kafka_dedup_window_s": 7 * 86400,
}
MAX_ALLOWED_LATENESS_S = 7 * 86400.0  # a week: every absence timer waits this much past its deadline
RETIRED_SETTINGS = {
    "checkpoint_interval_s": "never read: state and offsets are committed with each processed batch",
}
log = logging.getLogger("ringfence.config")


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Every tunable of a Ringfence process.

    Attributes:
        data_dir: where the embedded runtime keeps its journal and store.
        host, port: where the HTTP API listens.
        partitions: how many partitions the log has (fixed when the journal is created).
        allowed_lateness_s: watermark = max event time seen - this.
        max_body_bytes: largest request body accepted by ``POST /v1/events``.
        max_batch_events: most events accepted in one request.
        max_lag_events: ingest answers 503 once the processor is this far behind.
        min_free_memory_mib: the embedded runtime's ingest answers 503 while the machine (or the
            process's cgroup) has less memory than this left: the engine's state grows with the
            keys events bring, and a process that ran out would be killed, not slowed.
        min_free_disk_mib: the embedded runtime's ingest answers 503 while the data dir's disk has
            less than this free: the journal, the changelog and the snapshots share it, and a full
            disk stops processing and the next start; the rest is the processor's to commit with.
            Under half of it, changes to alerts and silences answer 503 too.
        log_retention_s: processed journal records older than this are deleted, a segment (an hour
            of ingest) at a time once all its records are; the newest stays until ingest opens another.
        journal_sync: SQLite ``synchronous`` for the journal: ``full`` survives power loss.
        journal_segment_s: ingest time a journal segment file spans (at most
            ``log_retention_s``, and at least a thousandth of it). Retention drops segments
            whole, never the newest; a retried event is always found a duplicate within this
            time of its first.
        ingest_process: decode and append producers' events in a worker process (uses a
            second core); off, ingest shares the API process with the processor thread.
        rule_pack: a rule pack file to load instead of the packaged default.
        alerting: the alerting config (receivers, routes, inhibition); default: dashboard only.
        tls_cert, tls_key: serve HTTPS (and send HSTS) with this PEM certificate and key.
        log_level: ``debug``, ``info``, ``warning`` or ``error``.
        rate_limit_per_s, rate_limit_burst: requests a second (and burst) per API key.
        people_writes_mib_per_hour: what one key's changes to alerts and silences may add to the
            store an hour (comments, reasons, assignments, silences, their history and audit
            entries; a burst of as much); past it, 429 ``change_budget`` with Retry-After.
        auth_failures_per_min: failed authentications a minute per client address.
        request_timeout_s: the longest a request body may take to arrive (bodies of at most 16 KiB,
            such as a sign-in's, get ``request_head_timeout_s``).
        max_connections: open HTTP connections the server keeps at most; past it the oldest one
            still waiting for a request head or body is closed, or the new one refused (503).
        request_head_timeout_s: a connection that has not sent a complete request head by then
            is closed; also the deadline of a TLS handshake.
        max_connections_per_address: open HTTP connections from one client address at most (429
            past it); connections from ``forwarded_allow_ips`` are not counted. Raise it when many
            producers share one NAT address.
        max_streams_per_key: live alert streams (``/v1/alerts/stream``) one key, with all its
            sessions, may hold open at once (429 past it).
        forwarded_allow_ips: comma-separated proxy addresses whose X-Forwarded-* headers are trusted
            (default: none, so the client address and scheme are the socket's own).
        signin_attempts_per_min: sign-in attempts (``POST /v1/session``) a minute per key and per address.
        backtest_time_budget_s: the longest one rule back-test may run before it is stopped.
        kafka_bootstrap: the kafka runtime's brokers (``host:port,...``).
        kafka_topic_prefix: the kafka runtime's topic and consumer group names start with it.
        kafka_partitions, kafka_replication: of the topics ``ringfence kafka init`` creates.
        kafka_security_protocol: ``plaintext``, ``ssl``, ``sasl_plaintext`` or ``sasl_ssl``.
        kafka_sasl_mechanism, kafka_sasl_username: SASL login (the password is the secret
            ``RINGFENCE_SECRET_KAFKA_SASL_PASSWORD``).
        kafka_dedup_window_s: how long (of arrival: ingest's clock) a process worker remembers
            event ids to drop producers' retried events.
        kafka_commit_interval_ms: (1 to 1,000) a transaction of an ingest service or a process
            worker begins no sooner than this after its previous one began (what arrives meanwhile
            joins it): every transaction costs the brokers requests and a marker in each partition
            it writes, whatever it holds, so this bounds their work by the second; an event waits
            up to this much more at ingest and at each worker it passes.
        kafka_snapshot_rows: rows (the engine's and the task's own) a process task's changelog
            entries gather before it writes a snapshot behind them (or half the rows it holds, if
            more); once a snapshot is complete the log before it is deleted, so the restore of a
            moved partition reads one or two snapshots and the entries since.
        postgres_dsn: the kafka runtime's store, a libpq URI without password (libpq reads
            ``PGPASSWORD`` or ``~/.pgpass``).
        postgres_pool_size: connections each service may hold.
        reference_currency: the ISO 4217 currency every amount is compared in (rules and features
            read ``data.amount_ref``); a rates table loaded for another reference is not used.
        fx_rates: a rates file (CSV: currency, rate, as_of) loaded at start when it changed since
            it was last loaded; the AWS runtime's only table (it ships with the deployment).
        fx_max_age_days: a rate older than this many days is stale: still used, but flagged on
            the events it converts and counted in the operations view.
        engine: which engine runs the rule pack in every runtime: ``auto`` (the compiled core where
            it is installed and can run the pack, else the Python engine, and the log says why),
            ``native`` (the compiled core, or refuse to start) or ``python`` (the reference engine).
    """

    data_dir: Path = DEFAULT_DATA_DIR
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    partitions: int = DEFAULT_PARTITIONS
    allowed_lateness_s: float = DEFAULT_ALLOWED_LATENESS_S
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS
    max_lag_events: int = DEFAULT_MAX_LAG_EVENTS
    min_free_memory_mib: int = DEFAULT_MIN_FREE_MEMORY_MIB
    min_free_disk_mib: int = DEFAULT_MIN_FREE_DISK_MIB
    log_retention_s: float = DEFAULT_LOG_RETENTION_S
    journal_sync: str = "full"
    journal_segment_s: float = DEFAULT_JOURNAL_SEGMENT_S
    ingest_process: bool = True
    rule_pack: Path | None = None
    alerting: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    log_level: str = "info"
    rate_limit_per_s: float = DEFAULT_RATE_LIMIT_PER_S
    rate_limit_burst: float = DEFAULT_RATE_LIMIT_BURST
    people_writes_mib_per_hour: float = DEFAULT_PEOPLE_WRITES_MIB_PER_HOUR
    auth_failures_per_min: float = DEFAULT_AUTH_FAILURES_PER_MIN
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    request_head_timeout_s: float = DEFAULT_REQUEST_HEAD_TIMEOUT_S
    max_connections_per_address: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS
    max_streams_per_key: int = DEFAULT_MAX_STREAMS_PER_KEY
    forwarded_allow_ips: str = ""
    signin_attempts_per_min: float = DEFAULT_SIGNIN_ATTEMPTS_PER_MIN
    backtest_time_budget_s: float = DEFAULT_BACKTEST_TIME_BUDGET_S
    kafka_bootstrap: str = ""
    kafka_topic_prefix: str = "ringfence"
    kafka_partitions: int = 12
    kafka_replication: int = 1
    kafka_security_protocol: str = "plaintext"
    kafka_sasl_mechanism: str = ""
    kafka_sasl_username: str = ""
    kafka_dedup_window_s: float = 600.0
    kafka_snapshot_rows: int = 100_000
    kafka_commit_interval_ms: int = 50
    postgres_dsn: str = ""
    postgres_pool_size: int = 8
    engine: str = "auto"
    reference_currency: str = DEFAULT_REFERENCE_CURRENCY
    fx_rates: Path | None = None
    fx_max_age_days: int = DEFAULT_FX_MAX_AGE_DAYS

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:  # NaN passes every comparison's "not": refused first
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"port must be 1..65535, got {self.port}")
        for name, most in UPPER_BOUNDS.items():  # a huge value overflowed where it was used, every time
            if getattr(self, name) > most:
                raise ConfigError(f"{name} must be at most {most:,}, got {getattr(self, name)!r}")
        if not 0 <= self.allowed_lateness_s <= MAX_ALLOWED_LATENESS_S:
            raise ConfigError(
                f"allowed_lateness_s must be 0..{MAX_ALLOWED_LATENESS_S:g} s (timers wait this long), "
                f"got {self.allowed_lateness_s!r}"
            )
        if not 1 <= self.partitions <= 1024:
            raise ConfigError(f"partitions must be 1..1024, got {self.partitions}")
        if not MIN_JOURNAL_SEGMENT_S <= self.journal_segment_s <= MAX_JOURNAL_SEGMENT_S:
            raise ConfigError(
                f"journal_segment_s must be between {MIN_JOURNAL_SEGMENT_S:g} and {MAX_JOURNAL_SEGMENT_S:g} s, "
                f"got {self.journal_segment_s!r}"
            )
        if self.journal_segment_s > self.log_retention_s:
            raise ConfigError(
                "journal_segment_s must not exceed log_retention_s: retention could drop the segment "
                "a retry is looked for in"
            )
        if self.log_retention_s / self.journal_segment_s > MAX_JOURNAL_SEGMENTS:
            raise ConfigError(
                f"journal_segment_s must be at least log_retention_s / {MAX_JOURNAL_SEGMENTS:,} "
                f"({self.log_retention_s / MAX_JOURNAL_SEGMENTS:g} s): more segments would be files to list and drop"
            )
        if self.journal_sync not in ("normal", "full"):
            raise ConfigError(f"journal_sync must be 'normal' or 'full', got {self.journal_sync!r}")
        if not re.fullmatch(r"[A-Z]{3}", self.reference_currency):
            raise ConfigError(f"reference_currency must be an ISO 4217 code, got {self.reference_currency!r}")
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be {'|'.join(ENGINES)}, got {self.engine!r}")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level must be debug|info|warning|error, got {self.log_level!r}")
        if self.kafka_security_protocol not in ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl"):
            raise ConfigError(
                "kafka_security_protocol must be plaintext|ssl|sasl_plaintext|sasl_ssl, "
                f"got {self.kafka_security_protocol!r}"
            )
        if not re.fullmatch(r"[a-zA-Z0-9._-]{1,100}", self.kafka_topic_prefix):
            raise ConfigError(
                f"kafka_topic_prefix must be letters, digits, '.', '_' or '-', got {self.kafka_topic_prefix!r}"
            )
        if self.kafka_commit_interval_ms > MAX_COMMIT_INTERVAL_MS:
            raise ConfigError(
                f"kafka_commit_interval_ms must be at most {MAX_COMMIT_INTERVAL_MS}: an event waits up to it "
                f"at ingest and at each worker, got {self.kafka_commit_interval_ms}"
            )
        for proxy in _proxies(self.forwarded_allow_ips):
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError(
                    f"forwarded_allow_ips must be IP addresses or networks, comma-separated; got {proxy!r}"
                ) from None
        if self.postgres_dsn and _dsn_holds_password(self.postgres_dsn):
            raise ConfigError("postgres_dsn must not hold a password: set PGPASSWORD or use ~/.pgpass")
        for name in (
            "kafka_partitions",
            "kafka_replication",
            "kafka_snapshot_rows",
            "kafka_commit_interval_ms",
            "postgres_pool_size",
            "max_body_bytes",
            "max_batch_events",
            "max_lag_events",
            "min_free_memory_mib",
            "min_free_disk_mib",
            "port",
            "rate_limit_per_s",
            "rate_limit_burst",
            "people_writes_mib_per_hour",
            "auth_failures_per_min",
            "request_timeout_s",
            "max_connections",
            "request_head_timeout_s",
            "max_connections_per_address",
            "max_streams_per_key",
            "signin_attempts_per_min",
            "backtest_time_budget_s",
            "fx_max_age_days",
            "log_retention_s",
            "kafka_dedup_window_s",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (``None`` values are ignored)."""
        return msgspec.structs.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _dsn_holds_password(dsn: str) -> bool:
    """Whether libpq would read a password from ``dsn`` (parsed as libpq parses it: ``password =
    x`` and quoted values are passwords too); ConfigError if libpq could not read it at all."""
    try:
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict  # the postgres extra: the only user of a DSN
    except ImportError:  # no driver to parse it with, nor to connect with: the pattern covers the usual forms
        return re.search(r"://[^/@]*:[^/@]*@|password\s*=", dsn, re.IGNORECASE) is not None
    try:
        return bool(conninfo_to_dict(dsn).get("password"))
    except ProgrammingError:  # libpq's message quotes the string, password and all
        raise ConfigError("postgres_dsn is not a libpq connection string (keywords, or a postgresql:// URI)") from None


def _proxies(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _decode_path(kind: type, value: Any) -> Any:
    if kind is Path and isinstance(value, str | Path):
        return Path(value)
    raise TypeError(f"expected a path (text), got {type(value).__name__}")


def load_settings(
    file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build the settings from defaults, ``file`` (TOML), ``RINGFENCE_*`` and ``overrides``."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    origin: dict[str, str] = {}  # where each value came from, to name it in an error
    if file is None and environ.get(ENV_PREFIX + "CONFIG"):
        file = Path(environ[ENV_PREFIX + "CONFIG"])
    if file is not None:
        try:
            raw.update(tomllib.loads(read_input(file, MAX_SETTINGS_BYTES).decode()))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read settings file {file}: {exc}") from exc
        except RecursionError:  # tomllib parses nested arrays and tables recursively
            raise ConfigError(f"cannot read settings file {file}: nested too deeply") from None
        origin.update({name: f"key {name!r} of {file}" for name in raw})
    fields = set(Settings.__struct_fields__)
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX) and key not in NOT_SETTINGS and not key.startswith((SECRET_PREFIX, AWS_PREFIX)):
            name = key[len(ENV_PREFIX) :].lower()
            if name not in fields and name not in RETIRED_SETTINGS:
                raise ConfigError(f"unknown setting {key}")
            raw[name] = value
            origin[name] = f"environment variable {key}"
    given = {k: v for k, v in overrides.items() if v is not None}
    raw.update(given)
    origin.update({name: f"option --{name.replace('_', '-')}" for name in given})
    for name in RETIRED_SETTINGS.keys() & raw.keys():
        del raw[name]
        log.warning("setting %s (%s) is ignored: %s", name, origin[name], RETIRED_SETTINGS[name])
    try:
        return msgspec.convert(raw, Settings, strict=False, dec_hook=_decode_path)
    except msgspec.ValidationError as exc:
        path = re.search(r"at `\$\.(\w+)", str(exc))
        name = path.group(1) if path else ""
        where = f" ({origin[name]})" if name in origin else ""
        raise ConfigError(f"invalid setting {name or '?'}{where}: {str(exc).partition(' - at ')[0]}") from exc
    except ConfigError as exc:  # from Settings.__post_init__, which names the field first
        name = str(exc).split(" ", 1)[0]
        if name in origin:
            raise ConfigError(f"{exc} ({origin[name]})") from exc
        raise


def secret(name: str, environ: Mapping[str, str] | None = None) -> str:
    """The secret in environment variable ``name``, or "" (never logged, never a setting)."""
    environ = os.environ if environ is None else environ
    return environ.get(name, "")


def audit_key(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The key of the audit chain's HMAC, from ``RINGFENCE_SECRET_AUDIT_KEY``; None when it is
    not set (the embedded runtime then keeps a random one in the data dir)."""
    value = secret(SECRET_PREFIX + "AUDIT_KEY", environ)
    if value and len(value) < MIN_AUDIT_KEY_CHARS:
        raise ConfigError(
            f"{SECRET_PREFIX}AUDIT_KEY is too short: use at least {MIN_AUDIT_KEY_CHARS} random characters "
            "(e.g. `openssl rand -hex 32`)"
        )
    return value.encode() if value else None
