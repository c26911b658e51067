"""The simulated bank's customers, with a home country, devices, payees and spending habits,
and the events they and the bank's systems send: what everyday traffic
(:mod:`ringfence.simulate.traffic`) and injected scenarios (:mod:`ringfence.simulate.scenarios`)
are both made of. Deterministic for a seeded random generator.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
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
HIGH_RISK = ["KP", "IR", "SY", "MM", "CU", "BY", "VE", "AF", "YE", "RU"]  # sanctioned, FATF-listed
EVERYDAY_MCCS = ["5411", "5812", "5999", "4111", "5541", "5732", "5912", "7011"]
GAMBLING_MCCS = ("7995", "7800", "7801", "7802")  # betting, lotteries, casinos
ENDPOINTS = ["/transfers", "/cards", "/login", "/accounts", "/payees"]
PARTNER_FEEDS = [f"partner-{i:02d}" for i in range(1, 9)]
PARTNER_INTERVAL_S = 2.0
HISTORY_SOURCE = "history-import"
# sources that are neither customers' nor the bank's everyday activity: imported history, and
# the partner feeds' heartbeats (4 a second whatever the rate); reports do not count them
BACKGROUND_SOURCES = frozenset({HISTORY_SOURCE, *PARTNER_FEEDS})


def km(a: str, b: str) -> float:
    """Great-circle distance between two countries' cities (``HOME``, ``FAR``)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*(HOME | FAR)[a], *(HOME | FAR)[b]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


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


@dataclass(frozen=True)
class Trip:
    """A customer abroad: they fly out at ``departs``, are in ``country`` from ``arrives`` to
    ``leaves``, and home again at ``back``."""

    departs: float
    arrives: float
    leaves: float
    back: float
    country: str


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
    # the customer's everyday events amid the scenario's: an alert its detections raise on one
    # (an approval of the customer's own amid card testing) is no false alert, nor a detection
    around: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "expected": list(self.expected),
            "also": list(self.also),
            "customer_id": self.customer_id,
            "event_ids": self.event_ids,
            "around": self.around,
            "started_at": iso(self.started_at),
        }


class Population:
    """The customers (``dormant`` ones appear only in their history and their own scenario),
    the partner feeds' state, and builders of the events they send, each with a new id."""

    PICKS = 8  # draws to find a customer as wanted before taking any

    def __init__(self, rng: random.Random, customers: int, dormant: int, source_prefix: str) -> None:
        self.rng = rng
        self.prefix = source_prefix
        self._ids = itertools.count(1)
        self.customers = [self._customer(i) for i in range(customers)]
        self.dormant = self.customers[:dormant]
        self.active = self.customers[dormant:] or self.customers
        self.neighbours: dict[str, list[Customer]] = {}  # country -> its active customers
        for customer in self.active:
            self.neighbours.setdefault(customer.country, []).append(customer)
        self.paused: dict[str, float] = {}  # partner feed -> event time it resumes at
        self.last_feed_event: dict[str, str] = {}  # partner feed -> id of its latest event
        self.away: dict[str, Trip] = {}  # customer id -> their trip (holiday look-alikes)

    def where(self, c: Customer, t: float) -> str | None:
        """The country ``c`` is in at ``t``: their own, the one they travelled to, or None in
        the air. A trip over is forgotten."""
        trip = self.away.get(c.id)
        if trip is None or t < trip.departs:
            return c.country
        if t >= trip.back:
            del self.away[c.id]
            return c.country
        return trip.country if trip.arrives <= t < trip.leaves else None

    def pick(self, t: float, *, abroad: bool) -> tuple[Customer, str]:
        """An active customer at ``t`` and the country they are in: at home with no trip under
        way, or (``abroad``) also in the country they travelled to; never in the air. After
        ``PICKS`` draws that fail, any customer, their trip cut short, at home."""
        for _ in range(self.PICKS):
            c = self.rng.choice(self.active)
            country = self.where(c, t)
            if (country == c.country and c.id not in self.away) or (abroad and country is not None):
                return c, country
        self.away.pop(c.id, None)
        return c, c.country

    def at_home(self, t: float) -> Customer:
        """A customer at home at ``t``, no trip under way: for a scenario or a story."""
        return self.pick(t, abroad=False)[0]

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

    def usual_amount(self, c: Customer) -> float:
        """A card payment of the kind ``c`` makes every day: near their typical amount."""
        return min(1500.0, max(1.0, self.rng.lognormvariate(0, 0.5) * c.typical_amount))

    def payee_added(self, c: Customer, t: float, payee: str, source: str) -> dict[str, Any]:
        return self.event("payee.added", t, c, source, {"payee_id": payee, "payee_country": c.country})

    def deposit(self, c: Customer, t: float, amount: float, method: str) -> dict[str, Any]:
        data = {"amount": f"{amount:.2f}", "currency": c.currency, "method": method}
        return self.event("deposit.received", t, c, "core-banking", data)

    def everyday(self, c: Customer, t: float) -> dict[str, Any]:
        """One of the customer's ordinary events at ``t``: a payment near their usual, or a login."""
        if self.rng.random() < 0.6:
            return self.card(c, t, self.usual_amount(c))
        return self.login(c, t)

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
