"""Synthetic bank traffic: everyday events of a simulated population with a diurnal rhythm,
partner feeds, and injected, labelled scenarios. Labels never enter the events.

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

from ringfence.simulate.lookalikes import STORIES
from ringfence.simulate.population import (
    ENDPOINTS,
    HISTORY_SOURCE,
    PARTNER_FEEDS,
    PARTNER_INTERVAL_S,
    Customer,
    Label,
    Population,
)
from ringfence.simulate.scenarios import SCENARIOS, build


@dataclass(order=True)
class _Pending:
    t: float
    seq: int
    event: dict[str, Any] = field(compare=False)


ATMS = 20  # busy ATMs a country
ATM_AMOUNTS = (50.0, 100.0, 100.0, 200.0, 200.0, 300.0, 400.0, 500.0)  # now and then someone's limit
SHARED_PAYEES = 150  # a country's landlords, schools, clubs
FINISHING_PACE = 0.05  # of the rate, while the scenarios under way finish (at least 1 event/s)


@dataclass(frozen=True)
class Background:
    """How much of everyday traffic looks like a typology: drawn per seed, from ranges."""

    atm_share: float  # of card events: cash at one of a country's busy ATMs
    shared_payee_share: float  # of transfers: to a payee many customers pay (rent, school fees)
    story_rate: float  # chance an everyday event also starts a look-alike story (lookalikes.py)

    @classmethod
    def draw(cls, rng: random.Random) -> Background:
        return cls(rng.uniform(0.02, 0.06), rng.uniform(0.1, 0.3), rng.uniform(0.001, 0.004))


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
        self.rng = random.Random(seed)  # nosec B311 # noqa: S311 - simulation, not security
        self.fraud_rate = fraud_rate
        self.scenarios = scenarios if scenarios is not None else tuple(SCENARIOS)
        self._seq = itertools.count()
        self.labels: list[Label] = []
        self.people = Population(self.rng, customers, dormant, source_prefix)
        self.background = Background.draw(self.rng)

    # -- everyday traffic ------------------------------------------------------------------

    def normal(self, t: float) -> dict[str, Any]:
        """One everyday event at time ``t``."""
        r, p = self.rng, self.people
        c, abroad = self._someone(t)
        roll = r.random()
        if roll < 0.50:
            if r.random() < self.background.atm_share:  # a cash withdrawal at one of the town's busy ATMs
                town = abroad or c.country
                cash = p.card(c, t, r.choice(ATM_AMOUNTS), approved=r.random() > 0.02, channel="atm", country=town)
                cash["data"]["merchant"] = {"id": f"atm_{town}_{r.randrange(ATMS)}", "mcc": "6011", "country": town}
                return cash
            return p.card(c, t, p.usual_amount(c), approved=r.random() > 0.02, country=abroad)
        if roll < 0.69:
            return p.login(c, t, country=abroad)
        if roll < 0.70:
            return p.login(c, t, ok=False, country=abroad)
        if roll < 0.79:
            return p.event(
                "balance.updated",
                t,
                c,
                "core-banking",
                {"balance": f"{r.uniform(100, 5000):.2f}", "currency": c.currency},
            )
        if roll < 0.89:
            return p.api(
                t, "payments", r.choice(ENDPOINTS), 200 if r.random() > 0.005 else 503, r.lognormvariate(3, 0.4)
            )
        if roll < 0.94:
            if r.random() < self.background.shared_payee_share:  # rent to a landlord, fees to a school: payees many pay
                shared = f"pay_{c.country}_shared_{r.randrange(SHARED_PAYEES)}"
                return p.transfer(c, t, r.uniform(300, 1200), payee=shared)
            return p.transfer(c, t, r.uniform(5, 400))
        if roll < 0.97:
            return p.event(
                "deposit.received",
                t,
                c,
                "core-banking",
                {"amount": f"{r.uniform(10, 500):.2f}", "currency": c.currency, "method": "transfer"},
            )
        if roll < 0.98:
            return p.event(
                "payee.added", t, c, "web", {"payee_id": f"pay_{r.getrandbits(32):08x}", "payee_country": c.country}
            )
        if roll < 0.99:
            return p.event("device.registered", t, c, "mobile-app", {"device_id": c.device, "platform": "ios"})
        kind = r.choice(["password.reset", "contact.changed", "mfa.changed"])
        return p.event(kind, t, c, "mobile-app", {"device_id": c.device, "channel": "app"})

    def _someone(self, t: float) -> tuple[Customer, str | None]:
        """A customer for an everyday event at ``t``, and the country they are in when abroad."""
        c, country = self.people.pick(t, abroad=True)
        return c, None if country == c.country else country

    def preamble(self, start: float) -> list[dict[str, Any]]:
        """History for dormant customers: their last activity, long before ``start``."""
        return [
            self.people.event(
                "balance.updated",
                start - self.rng.uniform(190, 300) * 86400,
                c,
                HISTORY_SOURCE,
                {"balance": "12000.00", "currency": c.currency},
            )
            for c in self.people.dormant
        ]

    def stream(
        self, start: float, rate_per_s: float, count: int, *, finish_scenarios: bool = False
    ) -> Iterator[dict[str, Any]]:
        """``count`` events in time order from ``start`` at about ``rate_per_s``, with
        injected scenarios and partner feeds; a diurnal rhythm varies the rate +-30 %.

        ``finish_scenarios``: after ``count`` events no scenario starts, and everyday traffic
        goes on, thinned to ``FINISHING_PACE`` (enough to keep every source alive), until every
        scenario under way has ended, so that a report scores them all (a stream cut at
        ``count`` cuts the longest scenarios most).
        """
        people = self.people
        pending: list[_Pending] = []
        emitted = 0
        horizon = -math.inf  # when the last scenario under way ends
        for event in self.preamble(start):
            if emitted < count:
                emitted += 1
                yield event
        t = start
        next_feed = {feed: start + i * PARTNER_INTERVAL_S / len(PARTNER_FEEDS) for i, feed in enumerate(PARTNER_FEEDS)}
        while emitted < count or (finish_scenarios and t <= horizon):
            diurnal = 1.0 + 0.3 * math.sin(2 * math.pi * ((t / 86400.0) % 1.0))
            pace = rate_per_s if emitted < count else max(1.0, rate_per_s * FINISHING_PACE)
            t += self.rng.expovariate(pace * diurnal)
            if emitted < count and self.rng.random() < self.fraud_rate and self.scenarios:
                name = self.rng.choice(self.scenarios)
                label, events = build(people, name, t)
                if label is not None:
                    self.labels.append(label)
                    horizon = max(horizon, label.ends_at)
                    for e in events:
                        heapq.heappush(pending, _Pending(_time(e), next(self._seq), e))
            for feed, due in next_feed.items():
                if due <= t:
                    next_feed[feed] = due + PARTNER_INTERVAL_S
                    if people.paused.get(feed, -1.0) < due:
                        feed_event = people.api(due, "partner", "/feed", 200, 30.0, feed)
                        people.last_feed_event[feed] = feed_event["event_id"]
                        heapq.heappush(pending, _Pending(due, next(self._seq), feed_event))
            if self.rng.random() < self.background.story_rate:
                story = self.rng.choice(list(STORIES.values()))
                for e in story(people, people.at_home(t), t):
                    heapq.heappush(pending, _Pending(_time(e), next(self._seq), e))
            heapq.heappush(pending, _Pending(t, next(self._seq), self.normal(t)))
            while pending and pending[0].t <= t and (emitted < count or finish_scenarios):
                emitted += 1
                yield heapq.heappop(pending).event


def _time(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["occurred_at"]).timestamp()
