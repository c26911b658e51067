"""Synthetic bank traffic: customers with a home country, devices, payees and spending
habits, a diurnal rhythm, and injected, labelled scenarios. Labels never enter the events.

Used by ``ringfence simulate``, ``ringfence up --demo``, tests and benchmarks.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ringfence.clock import iso

HOME = {
    "GB": (51.5, -0.12),
    "FR": (48.85, 2.35),
    "DE": (52.52, 13.4),
    "ES": (40.42, -3.7),
    "IT": (41.9, 12.5),
    "NL": (52.37, 4.9),
    "IE": (53.35, -6.26),
    "BE": (50.85, 4.35),
    "PT": (38.72, -9.14),
    "SE": (59.33, 18.07),
}
FAR = {
    "SG": (1.35, 103.82),
    "US": (40.71, -74.0),
    "BR": (-23.55, -46.63),
    "JP": (35.68, 139.69),
    "AU": (-33.87, 151.21),
}
HIGH_RISK = ["KP", "IR", "SY", "MM"]
EVERYDAY_MCCS = ["5411", "5812", "5999", "4111", "5541", "5732", "5912", "7011"]
GAMBLING_MCC = "7995"
ENDPOINTS = ["/transfers", "/cards", "/login", "/accounts", "/payees"]
PARTNER_FEEDS = [f"partner-{i:02d}" for i in range(1, 9)]
PARTNER_INTERVAL_S = 2.0
HISTORY_SOURCE = "history-import"


@dataclass
class Customer:
    id: str
    country: str
    card: str
    device: str
    ip: str
    payees: list[str]
    typical_amount: float
    currency: str = "EUR"


@dataclass
class Label:
    """Ground truth of one injected scenario: which detections must fire, for which events."""

    scenario: str
    expected: tuple[str, ...]
    also: tuple[str, ...]
    customer_id: str | None
    event_ids: list[str]
    started_at: float
    ends_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "expected": list(self.expected),
            "also": list(self.also),
            "customer_id": self.customer_id,
            "event_ids": self.event_ids,
            "started_at": iso(self.started_at),
        }


@dataclass(order=True)
class _Pending:
    t: float
    seq: int
    event: dict[str, Any] = field(compare=False)


class Traffic:
    """A deterministic (seeded) stream of everyday events with injected scenarios."""

    def __init__(
        self,
        seed: int = 7,
        customers: int = 1_000,
        fraud_rate: float = 0.001,
        source_prefix: str = "sim",
        scenarios: tuple[str, ...] | None = None,
        dormant: int = 0,
    ) -> None:
        from ringfence.simulate.scenarios import SCENARIOS

        self.rng = random.Random(seed)  # nosec B311 # noqa: S311 - simulation, not security
        self.fraud_rate = fraud_rate
        self.prefix = source_prefix
        self.scenarios = scenarios if scenarios is not None else tuple(SCENARIOS)
        self._ids = itertools.count(1)
        self._seq = itertools.count()
        self.labels: list[Label] = []
        self.customers = [self._customer(i) for i in range(customers)]
        # dormant customers only appear in the history preamble and their own scenario
        self.dormant = self.customers[:dormant]
        self.active = self.customers[dormant:] or self.customers
        self.paused: dict[str, float] = {}
        self.last_feed_event: dict[str, str] = {}
        self.normal_count = 0

    def _customer(self, i: int) -> Customer:
        r = self.rng
        return Customer(
            id=f"cus_{i:07d}",
            country=r.choice(list(HOME)),
            card=f"tok_{r.getrandbits(48):012x}",
            device=f"dev_{r.getrandbits(40):010x}",
            ip=f"10.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}",
            payees=[f"pay_{r.getrandbits(32):08x}" for _ in range(3)],
            typical_amount=round(r.lognormvariate(3.3, 0.6), 2),
        )

    # -- event builders ------------------------------------------------------------------

    def event(
        self, type_: str, t: float, customer: Customer | None, source: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "event_id": f"{self.prefix}-{next(self._ids):012d}",
            "type": type_,
            "occurred_at": iso(t),
            "source": source,
            "data": data,
        }
        if customer is not None:
            body["customer_id"] = customer.id
        return body

    def geo(self, country: str, jitter: float = 0.2) -> dict[str, Any]:
        lat, lon = HOME.get(country) or FAR[country]
        r = self.rng
        return {
            "lat": round(lat + r.uniform(-jitter, jitter), 4),
            "lon": round(lon + r.uniform(-jitter, jitter), 4),
            "country": country,
        }

    def card(
        self,
        c: Customer,
        t: float,
        amount: float,
        *,
        approved: bool = True,
        country: str | None = None,
        channel: str | None = None,
        mcc: str | None = None,
        geo_country: str | None = None,
    ) -> dict[str, Any]:
        r = self.rng
        channel = channel or r.choice(["pos", "contactless", "ecom"])
        country = country or c.country
        data: dict[str, Any] = {
            "card_id": c.card,
            "amount": f"{amount:.2f}",
            "currency": c.currency,
            "merchant": {
                "id": f"mer_{r.randrange(20000):05d}",
                "mcc": mcc or r.choice(EVERYDAY_MCCS),
                "country": country,
            },
            "channel": channel,
            "approved": approved,
        }
        if channel != "ecom":
            data["geo"] = self.geo(geo_country or country)
        if not approved:
            data["decline_reason"] = "insufficient_funds"
        return self.event("card.authorization", t, c, "card-processor", data)

    def login(
        self,
        c: Customer,
        t: float,
        *,
        ok: bool = True,
        ip: str | None = None,
        device: str | None = None,
        country: str | None = None,
    ) -> dict[str, Any]:
        data = {"device_id": device or c.device, "ip": ip or c.ip, "geo": self.geo(country or c.country, 0.05)}
        return self.event("login.succeeded" if ok else "login.failed", t, c, "mobile-app", data)

    def transfer(
        self, c: Customer, t: float, amount: float, payee: str | None = None, country: str | None = None
    ) -> dict[str, Any]:
        return self.event(
            "transfer.initiated",
            t,
            c,
            "web",
            {
                "amount": f"{amount:.2f}",
                "currency": c.currency,
                "payee_id": payee or self.rng.choice(c.payees),
                "payee_country": country or c.country,
            },
        )

    def api(
        self, t: float, service: str, endpoint: str, status: int, latency: float, source: str = "gateway"
    ) -> dict[str, Any]:
        return self.event(
            "api.request",
            t,
            None,
            source,
            {"service": service, "endpoint": endpoint, "status": status, "latency_ms": round(latency, 1)},
        )

    # -- everyday traffic ------------------------------------------------------------------

    def normal(self, t: float) -> dict[str, Any]:
        """One everyday event at time ``t``."""
        self.normal_count += 1
        r = self.rng
        c = r.choice(self.active)
        roll = r.random()
        if roll < 0.50:
            amount = min(1500.0, max(1.0, r.lognormvariate(0, 0.5) * c.typical_amount))
            return self.card(c, t, amount, approved=r.random() > 0.02)
        if roll < 0.69:
            return self.login(c, t)
        if roll < 0.70:
            return self.login(c, t, ok=False)
        if roll < 0.79:
            return self.event(
                "balance.updated",
                t,
                c,
                "core-banking",
                {"balance": f"{r.uniform(100, 5000):.2f}", "currency": c.currency},
            )
        if roll < 0.89:
            return self.api(
                t, "payments", r.choice(ENDPOINTS), 200 if r.random() > 0.005 else 503, r.lognormvariate(3, 0.4)
            )
        if roll < 0.94:
            return self.transfer(c, t, r.uniform(5, 400))
        if roll < 0.97:
            return self.event(
                "deposit.received",
                t,
                c,
                "core-banking",
                {"amount": f"{r.uniform(10, 500):.2f}", "currency": c.currency, "method": "transfer"},
            )
        if roll < 0.98:
            return self.event(
                "payee.added", t, c, "web", {"payee_id": f"pay_{r.getrandbits(32):08x}", "payee_country": c.country}
            )
        if roll < 0.99:
            return self.event("device.registered", t, c, "mobile-app", {"device_id": c.device, "platform": "ios"})
        kind = r.choice(["password.reset", "contact.changed", "mfa.changed"])
        return self.event(kind, t, c, "mobile-app", {"device_id": c.device, "channel": "app"})

    def preamble(self, start: float) -> list[dict[str, Any]]:
        """History for dormant customers: their last activity, long before ``start``."""
        return [
            self.event(
                "balance.updated",
                start - self.rng.uniform(190, 300) * 86400,
                c,
                HISTORY_SOURCE,
                {"balance": "12000.00", "currency": c.currency},
            )
            for c in self.dormant
        ]

    def stream(self, start: float, rate_per_s: float, count: int) -> Iterator[dict[str, Any]]:
        """``count`` events in time order from ``start`` at about ``rate_per_s``, with
        injected scenarios and partner feeds; a diurnal rhythm varies the rate +-30 %."""
        from ringfence.simulate.scenarios import build

        pending: list[_Pending] = []
        emitted = 0
        for event in self.preamble(start):
            if emitted < count:
                emitted += 1
                yield event
        t = start
        next_feed = {feed: start + i * PARTNER_INTERVAL_S / len(PARTNER_FEEDS) for i, feed in enumerate(PARTNER_FEEDS)}
        while emitted < count:
            diurnal = 1.0 + 0.3 * math.sin(2 * math.pi * ((t / 86400.0) % 1.0))
            t += self.rng.expovariate(rate_per_s * diurnal)
            if self.rng.random() < self.fraud_rate and self.scenarios:
                name = self.rng.choice(self.scenarios)
                label, events = build(self, name, t)
                if label is not None:
                    self.labels.append(label)
                    for e in events:
                        heapq.heappush(pending, _Pending(_time(e), next(self._seq), e))
            for feed, due in next_feed.items():
                if due <= t:
                    next_feed[feed] = due + PARTNER_INTERVAL_S
                    if self.paused.get(feed, -1.0) < due:
                        feed_event = self.api(due, "partner", "/feed", 200, 30.0, feed)
                        self.last_feed_event[feed] = feed_event["event_id"]
                        heapq.heappush(pending, _Pending(due, next(self._seq), feed_event))
            heapq.heappush(pending, _Pending(t, next(self._seq), self.normal(t)))
            while pending and pending[0].t <= t and emitted < count:
                emitted += 1
                yield heapq.heappop(pending).event


def _time(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["occurred_at"]).timestamp()
