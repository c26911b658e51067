"""Innocent look-alikes: everyday stories that resemble a typology and cause a real bank's
false alerts. They are everyday traffic (no label): an alert on them is a false one.

Each story draws its parameters from ranges, as scenarios do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ringfence.simulate.population import FAR, HOME, Customer, Population, Trip, km

Events = list[dict[str, Any]]
Story = Callable[[Population, Customer, float], Events]
FLIGHT_KMH = 800.0


def household_rent(people: Population, c: Customer, t: float) -> Events:
    """A flat's two to five tenants each add their new landlord and pay their share within the
    day (a fan-in to a new payee, by few)."""
    r = people.rng
    landlord = f"pay_l{r.getrandbits(32):08x}"
    events = []
    flatmates = r.choices((1, 2, 3, 4), weights=(50, 30, 15, 5))[0]
    town = people.neighbours.get(c.country, [])
    others = [p for p in r.sample(town, min(flatmates + 1, len(town))) if p is not c]
    for tenant in [c, *others[:flatmates]]:
        at = t + r.uniform(0, 8 * 3600)
        events.append(people.payee_added(tenant, at, landlord, "web"))
        events.append(people.transfer(tenant, at + r.uniform(60, 3600), r.uniform(300, 1200), payee=landlord))
    return events


def payday(people: Population, c: Customer, t: float) -> Events:
    """Salary in, then the month's bills to the customer's usual payees and a run of card payments."""
    r = people.rng
    salary = r.lognormvariate(8.0, 0.35)
    events = [people.deposit(c, t, salary, "salary")]
    for _ in range(r.randint(2, 4)):
        events.append(people.transfer(c, t + r.uniform(600, 4 * 3600), r.uniform(50, 1200)))
    for _ in range(r.randint(3, 8)):
        events.append(people.card(c, t + r.uniform(0, 6 * 3600), people.usual_amount(c)))
    return events


def salary_to_savings(people: Population, c: Customer, t: float) -> Events:
    """Salary in, most of it moved within hours to the customer's savings account at another
    bank, a payee they have had for years (a pass-through by its shape)."""
    r = people.rng
    salary = r.lognormvariate(8.0, 0.5)
    savings = c.payees[0]
    return [
        people.deposit(c, t, salary, "salary"),
        people.transfer(c, t + r.uniform(600, 6 * 3600), salary * r.uniform(0.5, 0.95), payee=savings),
    ]


def holiday_abroad(people: Population, c: Customer, t: float) -> Events:
    """A trip: a payment at home, a flight, payments and logins in the country of arrival, a
    flight home. Meanwhile the customer's everyday events happen there, or not in the air
    (``Population.away``)."""
    r = people.rng
    destination = r.choice([k for k in (*HOME, *FAR) if k != c.country])
    flight = (km(c.country, destination) / FLIGHT_KMH + r.uniform(1.5, 3.0)) * 3600
    arrival, stay = t + flight, r.uniform(6, 12) * 3600
    people.away[c.id] = Trip(t, arrival, arrival + stay, arrival + stay + flight, destination)
    events = [people.card(c, t, r.uniform(5, 60), channel="contactless")]
    events.append(people.login(c, arrival + r.uniform(0, 1800), country=destination))
    for _ in range(r.randint(3, 8)):
        amount = min(1500.0, r.lognormvariate(0.3, 0.6) * c.typical_amount)
        channel = r.choice(["pos", "contactless"])
        events.append(people.card(c, arrival + r.uniform(0, stay), amount, channel=channel, country=destination))
    return events


def new_phone(people: Population, c: Customer, t: float) -> Events:
    """A new phone: a login on it, the app binding it; now and then a friend added and paid
    back at once (a phished session by its shape)."""
    r = people.rng
    phone = f"dev_n{r.getrandbits(40):010x}"
    events = [
        people.login(c, t, device=phone),
        people.event("device.registered", t + 30, c, "mobile-app", {"device_id": phone, "platform": "ios"}),
    ]
    c.device = phone  # their everyday logins come from it from now on
    if r.random() < 0.2:
        friend = f"pay_f{r.getrandbits(32):08x}"
        added_at = t + r.uniform(120, 1200)
        events.append(people.payee_added(c, added_at, friend, "mobile-app"))
        events.append(people.transfer(c, added_at + r.uniform(30, 600), r.uniform(10, 400), payee=friend))
    return events


STORIES: dict[str, Story] = {
    f.__name__: f for f in (household_rent, payday, salary_to_savings, holiday_abroad, new_phone)
}
