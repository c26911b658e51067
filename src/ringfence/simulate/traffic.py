"""Synthetic bank traffic: customers with a home country, devices and spending habits,
and injected, labelled fraud scenarios. Labels are kept apart from the events.

Used by ``ringfence up --demo`` and by tests; ``ringfence simulate`` builds on it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

COUNTRIES = ["GB", "FR", "DE", "ES", "IT", "NL", "IE", "BE", "PT", "SE"]
HIGH_RISK = ["KP", "IR", "SY", "MM"]
MCCS = ["5411", "5812", "5999", "4111", "5541", "5732", "5912", "7011"]
CITY = {
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
SCENARIOS = (
    "card_testing",
    "card_velocity",
    "login_failed_burst",
    "transfer_high_risk_country",
    "credential_stuffing_ip",
)


@dataclass
class Customer:
    id: str
    country: str
    card: str
    device: str
    ip: str
    currency: str = "EUR"
    typical_amount: float = 40.0


@dataclass
class Label:
    """Ground truth for one injected scenario: which rule should fire, for whom, from when."""

    scenario: str
    customer_id: str
    event_ids: list[str] = field(default_factory=list)
    started_at: float = 0.0


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Traffic:
    """A deterministic (seeded) stream of realistic events with occasional injected fraud."""

    def __init__(
        self, seed: int = 7, customers: int = 1_000, fraud_rate: float = 0.002, source_prefix: str = "sim"
    ) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - simulation, not security
        self.fraud_rate = fraud_rate
        self.prefix = source_prefix
        self._seq = 0
        self.labels: list[Label] = []
        self.customers = [self._customer(i) for i in range(customers)]

    def _customer(self, i: int) -> Customer:
        r = self.rng
        return Customer(
            id=f"cus_{i:07d}",
            country=r.choice(COUNTRIES),
            card=f"tok_{r.getrandbits(48):012x}",
            device=f"dev_{r.getrandbits(40):010x}",
            ip=f"10.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}",
            typical_amount=round(r.lognormvariate(3.3, 0.6), 2),
        )

    def _id(self) -> str:
        self._seq += 1
        return f"{self.prefix}-{self._seq:012d}"

    def _event(
        self, type_: str, t: float, customer: Customer | None, source: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "event_id": self._id(),
            "type": type_,
            "occurred_at": iso(t),
            "source": source,
            "data": data,
        }
        if customer is not None:
            event["customer_id"] = customer.id
        return event

    def card(
        self, c: Customer, t: float, amount: float, *, approved: bool = True, country: str | None = None
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "card_id": c.card,
            "amount": f"{amount:.2f}",
            "currency": c.currency,
            "merchant": {
                "id": f"mer_{self.rng.randrange(5000):05d}",
                "mcc": self.rng.choice(MCCS),
                "country": country or c.country,
            },
            "channel": self.rng.choice(["pos", "ecom", "contactless"]),
            "approved": approved,
        }
        if not approved:
            data["decline_reason"] = "insufficient_funds"
        return self._event("card.authorization", t, c, "card-processor", data)

    def login(self, c: Customer, t: float, ok: bool = True, ip: str | None = None) -> dict[str, Any]:
        lat, lon = CITY[c.country]
        data = {"device_id": c.device, "ip": ip or c.ip, "geo": {"lat": lat, "lon": lon, "country": c.country}}
        return self._event("login.succeeded" if ok else "login.failed", t, c, "mobile-app", data)

    def normal(self, t: float) -> dict[str, Any]:
        """One everyday event at time ``t``."""
        r = self.rng
        c = r.choice(self.customers)
        roll = r.random()
        if roll < 0.55:
            return self.card(c, t, min(1500.0, max(1.0, r.lognormvariate(0, 0.5) * c.typical_amount)))
        if roll < 0.8:
            return self.login(c, t, ok=r.random() > 0.03)
        if roll < 0.9:
            return self._event(
                "balance.updated",
                t,
                c,
                "core-banking",
                {"balance": f"{r.uniform(80, 5000):.2f}", "currency": c.currency},
            )
        if roll < 0.95:
            return self._event(
                "api.request",
                t,
                None,
                "gateway",
                {
                    "service": "payments",
                    "endpoint": r.choice(["/transfers", "/cards", "/login"]),
                    "status": 200 if r.random() > 0.01 else 503,
                    "latency_ms": round(r.lognormvariate(3, 0.4), 1),
                },
            )
        return self._event(
            "transfer.initiated",
            t,
            c,
            "web",
            {
                "amount": f"{r.uniform(5, 400):.2f}",
                "currency": c.currency,
                "payee_id": f"pay_{r.randrange(10**6):06d}",
                "payee_country": c.country,
            },
        )

    def scenario(self, name: str, t: float) -> list[dict[str, Any]]:
        """The events of one injected scenario starting at ``t``; its label is recorded."""
        c = self.rng.choice(self.customers)
        if name == "card_testing":
            events = [self.card(c, t + i * 5, self.rng.uniform(0.5, 2.0), approved=False) for i in range(4)]
            events.append(self.card(c, t + 25, 1.0))
        elif name == "card_velocity":
            events = [self.card(c, t + i * 20, self.rng.uniform(20, 80)) for i in range(9)]
        elif name == "login_failed_burst":
            events = [self.login(c, t + i * 10, ok=False, ip="203.0.113.7") for i in range(6)]
        elif name == "transfer_high_risk_country":
            events = [
                self._event(
                    "transfer.initiated",
                    t,
                    c,
                    "web",
                    {
                        "amount": "4900.00",
                        "currency": c.currency,
                        "payee_id": f"pay_x{self.rng.randrange(10**6)}",
                        "payee_country": self.rng.choice(HIGH_RISK),
                    },
                )
            ]
        elif name == "credential_stuffing_ip":
            ip = f"198.51.100.{self.rng.randrange(1, 255)}"
            events = [
                self.login(v, t + i * 2, ok=False, ip=ip) for i, v in enumerate(self.rng.sample(self.customers, 12))
            ]
        else:
            raise ValueError(f"unknown scenario {name!r}")
        self.labels.append(Label(name, c.id, [e["event_id"] for e in events], t))
        return events

    def stream(self, start: float, rate_per_s: float, count: int) -> Iterator[dict[str, Any]]:
        """``count`` events from ``start`` at about ``rate_per_s``, with scenarios mixed in."""
        t = start
        emitted = 0
        pending: list[dict[str, Any]] = []
        while emitted < count:
            t += self.rng.expovariate(rate_per_s)
            if self.rng.random() < self.fraud_rate:
                pending.extend(self.scenario(self.rng.choice(SCENARIOS), t))
            # injected events come due in time order with the normal ones
            due = [e for e in pending if e["occurred_at"] <= iso(t)]
            pending = [e for e in pending if e["occurred_at"] > iso(t)]
            for event in [*due, self.normal(t)]:
                if emitted < count:
                    emitted += 1
                    yield event
