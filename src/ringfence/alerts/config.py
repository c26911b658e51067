"""The alerting configuration: receivers, the routing tree and inhibition rules.

Loaded from the YAML file named by the ``alerting`` setting and validated at start with
errors that name the route or receiver. Secrets are never in the file: a receiver names
the environment variable that holds its secret.
"""

from __future__ import annotations

import email.utils
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec
import yaml

from ringfence import safe_yaml
from ringfence.alerts.matchers import Matcher, MatcherError, all_match, parse_matchers
from ringfence.config import secret
from ringfence.engine.durations import parse_duration
from ringfence.errors import ConfigError
from ringfence.private_files import read_input

DEFAULT_RECEIVER = "dashboard"  # alerts only reach the API and the live stream
MAX_CONFIG_BYTES = 1024 * 1024


class _Doc(msgspec.Struct, forbid_unknown_fields=True):
    pass


# a send waits at most this (a receiver slower than that is down); NaN, 0 or less never send
TimeoutS = Annotated[float, msgspec.Meta(gt=0, le=300)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
# an address is a header's value (``rf@bank.example`` or ``Ringfence <rf@bank.example>``): no CR,
# LF or other control character, which would start another header
Address = Annotated[str, msgspec.Meta(min_length=3, max_length=320, pattern=r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]+$")]


class _AddressDoc(_Doc):
    """``url`` or ``url_env``: a receiver's URL may be its credential (a Slack incoming webhook,
    a token in a query), best kept in the environment (a ``RINGFENCE_SECRET_*`` variable) rather
    than in the config file."""

    url: str | None = None
    url_env: str | None = None

    def address(self) -> str:
        """The URL to send to (read from the environment at each send, as other secrets are)."""
        return self.url if self.url is not None else secret(self.url_env or "")


class WebhookDoc(_AddressDoc):
    secret_env: str | None = None
    timeout_s: TimeoutS = 5.0


class EmailDoc(_Doc):
    host: str
    to: Annotated[list[Address], msgspec.Meta(min_length=1, max_length=100)]
    sender: Address
    port: Port = 25
    starttls: bool = False
    username: str | None = None
    password_env: str | None = None
    timeout_s: TimeoutS = 10.0


class SlackDoc(_AddressDoc):
    timeout_s: TimeoutS = 5.0


class PagerDutyDoc(_Doc):
    url: str
    routing_key_env: str
    timeout_s: TimeoutS = 5.0


class ReceiverDoc(_Doc):
    name: str
    webhook: WebhookDoc | None = None
    email: EmailDoc | None = None
    slack: SlackDoc | None = None
    pagerduty: PagerDutyDoc | None = None


class RouteDoc(_Doc):
    receiver: str | None = None
    matchers: list[str] = []
    group_by: list[str] | None = None
    group_wait: str | None = None
    group_interval: str | None = None
    repeat_interval: str | None = None
    routes: list[RouteDoc] = []
    # ``continue`` is a Python keyword
    continue_: bool = msgspec.field(default=False, name="continue")


class InhibitDoc(_Doc):
    source_matchers: list[str]
    target_matchers: list[str]
    equal: list[str] = []


class RetryDoc(_Doc):
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    base_delay: str = "2s"
    max_delay: str = "5m"


class AlertingDoc(_Doc):
    receivers: list[ReceiverDoc] = []
    route: RouteDoc | None = None
    inhibit_rules: list[InhibitDoc] = []
    notify_resolved: bool = True
    retry: RetryDoc = msgspec.field(default_factory=RetryDoc)


class ReceiverKind(StrEnum):
    WEBHOOK = "webhook"
    EMAIL = "email"
    SLACK = "slack"
    PAGERDUTY = "pagerduty"
    DASHBOARD = "dashboard"  # sends nothing: the API and the live stream show the alerts


SENDING = (ReceiverKind.WEBHOOK, ReceiverKind.EMAIL, ReceiverKind.SLACK, ReceiverKind.PAGERDUTY)


@dataclass(frozen=True)
class Receiver:
    """A named destination, with the options of its kind (the dashboard has none)."""

    name: str
    kind: ReceiverKind
    options: Any = None


@dataclass(frozen=True)
class Route:
    """A node of the routing tree, with its settings resolved (inherited from parents)."""

    id: str
    matchers: tuple[Matcher, ...]
    receiver: str
    group_by: tuple[str, ...]
    group_wait: float
    group_interval: float
    repeat_interval: float
    continue_: bool
    routes: tuple[Route, ...] = ()

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """The routes an alert with ``labels`` goes to (this node matched already)."""
        found: list[Route] = []
        for child in self.routes:
            if all_match(child.matchers, labels):
                found.extend(child.match(labels))
                if not child.continue_:
                    break
        return found or [self]


@dataclass(frozen=True)
class InhibitRule:
    """While a source alert is active, target alerts with the same ``equal`` labels are muted."""

    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 10
    base_delay_s: float = 2.0
    max_delay_s: float = 300.0


@dataclass(frozen=True)
class AlertingConfig:
    receivers: dict[str, Receiver]
    route: Route
    inhibit_rules: tuple[InhibitRule, ...] = ()
    notify_resolved: bool = True
    retry: RetryPolicy = field(default_factory=RetryPolicy)


def _web_address(url: str) -> bool:
    """An http(s) URL with a host, a port a socket takes, and no space or control character (the
    HTTP client refuses them at every send)."""
    if any(c.isspace() or not c.isprintable() for c in url):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError past 65535 or not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and port != 0


def _loopback(host: str) -> bool:
    """A host on this machine (a local relay or sidecar): what crosses no network."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _credential_in_clear(options: Any, url: str | None) -> str | None:
    """What of a receiver's credentials would cross a network unencrypted: an SMTP login
    without STARTTLS, a Slack incoming webhook's URL (the URL is the credential), a PagerDuty
    routing key or a user and password in a URL, over plain HTTP. A webhook's secret only
    signs, never travels."""
    logs_in = isinstance(options, EmailDoc) and bool(options.username and options.password_env)
    if logs_in and not options.starttls and not _loopback(options.host):
        return "its SMTP password would be sent in clear: set starttls: true"
    parts = urlsplit(url) if url is not None else None
    if parts is None or parts.scheme == "https" or _loopback(parts.hostname or ""):
        return None
    if isinstance(options, SlackDoc | PagerDutyDoc):
        what = "its URL, the credential," if isinstance(options, SlackDoc) else "its routing key"
        return f"{what} would be sent in clear: use an https:// URL"
    if parts.username is not None or parts.password is not None:
        return "the user and password in its URL would be sent in clear: use an https:// URL"
    return None


def _duration(text: str | None, inherited: float, where: str) -> float:
    if text is None:
        return inherited
    if text.strip() in ("0", "0s"):
        return 0.0  # e.g. group_wait 0s: send at once
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _route(doc: RouteDoc, parent: Route | None, path: str, receivers: Mapping[str, Receiver]) -> Route:
    receiver = doc.receiver or (parent.receiver if parent else DEFAULT_RECEIVER)
    if receiver not in receivers:
        raise ConfigError(f"{path}: unknown receiver {receiver!r}; define it under receivers")
    try:
        matchers = parse_matchers(doc.matchers)
    except MatcherError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if parent is None and matchers:
        raise ConfigError(f"{path}: the root route matches every alert; it takes no matchers")
    node = Route(
        id=path,
        matchers=matchers,
        receiver=receiver,
        group_by=tuple(doc.group_by) if doc.group_by is not None else (parent.group_by if parent else ("rule_id",)),
        group_wait=_duration(doc.group_wait, parent.group_wait if parent else 30.0, path),
        group_interval=_duration(doc.group_interval, parent.group_interval if parent else 300.0, path),
        repeat_interval=_duration(doc.repeat_interval, parent.repeat_interval if parent else 4 * 3600.0, path),
        continue_=doc.continue_,
    )
    children = tuple(_route(child, node, f"{path}.routes[{i}]", receivers) for i, child in enumerate(doc.routes))
    return Route(**{**node.__dict__, "routes": children})


def build_config(raw: Any) -> AlertingConfig:
    """Validate a parsed YAML document. Raises ConfigError naming what is wrong."""
    try:
        doc = msgspec.convert(raw or {}, AlertingDoc)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"alerting config: {exc}") from None
    receivers: dict[str, Receiver] = {DEFAULT_RECEIVER: Receiver(DEFAULT_RECEIVER, ReceiverKind.DASHBOARD)}
    for i, r in enumerate(doc.receivers):
        kinds = [k for k in SENDING if getattr(r, k) is not None]
        if len(kinds) != 1:
            raise ConfigError(f"receivers[{i}] ({r.name}): give exactly one of webhook, email, slack, pagerduty")
        if r.name in receivers:
            raise ConfigError(f"receivers[{i}] ({r.name}): duplicate receiver name")
        options = getattr(r, kinds[0])
        if isinstance(options, _AddressDoc) and (options.url is None) == (options.url_env is None):
            raise ConfigError(f"receivers[{i}] ({r.name}): give the {kinds[0]} receiver one of url, url_env")
        for env_field in ("secret_env", "password_env", "routing_key_env", "url_env"):
            env = getattr(options, env_field, None)
            if env is not None and not secret(env):
                raise ConfigError(f"receivers[{i}] ({r.name}): environment variable {env} is not set")
        if isinstance(options, EmailDoc):
            for field_name, value in [("sender", options.sender), *(("to", to) for to in options.to)]:
                if "@" not in email.utils.parseaddr(value)[1]:
                    raise ConfigError(f"receivers[{i}] ({r.name}): {field_name} {value!r} holds no email address")
        url_env = options.url_env if isinstance(options, _AddressDoc) else None
        url = options.address() if isinstance(options, _AddressDoc) else getattr(options, "url", None)
        if url is not None and not _web_address(url):  # the URL itself is not shown: it may be a credential
            where = f"the URL in {url_env}" if url_env else "url"
            raise ConfigError(f"receivers[{i}] ({r.name}): {where} must be an http:// or https:// URL with a host")
        in_clear = _credential_in_clear(options, url)
        if in_clear is not None:
            raise ConfigError(f"receivers[{i}] ({r.name}): {in_clear} (only to this host may it go unencrypted)")
        receivers[r.name] = Receiver(r.name, kinds[0], options)
    route = _route(doc.route or RouteDoc(receiver=DEFAULT_RECEIVER), None, "route", receivers)
    inhibit = []
    for i, rule in enumerate(doc.inhibit_rules):
        try:
            inhibit.append(
                InhibitRule(
                    parse_matchers(rule.source_matchers), parse_matchers(rule.target_matchers), tuple(rule.equal)
                )
            )
        except MatcherError as exc:
            raise ConfigError(f"inhibit_rules[{i}]: {exc}") from None
    retry = RetryPolicy(
        doc.retry.max_attempts,
        _duration(doc.retry.base_delay, 2.0, "retry"),
        _duration(doc.retry.max_delay, 300.0, "retry"),
    )
    if retry.base_delay_s > retry.max_delay_s:
        raise ConfigError("retry: base_delay must not be longer than max_delay")
    return AlertingConfig(receivers, route, tuple(inhibit), doc.notify_resolved, retry)


def load_alerting(path: Path | None) -> AlertingConfig:
    """The alerting config in ``path``, or the default (everything to the dashboard)."""
    if path is None:
        return build_config({})
    try:  # no anchors/aliases, bounded nodes and depth
        raw = safe_yaml.load(read_input(path, MAX_CONFIG_BYTES).decode())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read alerting config {path}: {exc}") from None
    return build_config(raw)
