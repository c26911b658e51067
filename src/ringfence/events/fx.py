"""Money in one reference currency: the FX rate table, and the stamp ingest puts on an event.

Rules and features never compare amounts of different currencies (DESIGN §2): ingest converts
each money field (``amount``, ``balance``) into the reference currency at the table's rate and
records the rate with the event, in the journal. Replays, restores and backtests therefore
see the rate the event was converted at, not today's. The stamp, in ``data``:

- ``amount_ref`` / ``balance_ref``: the value in the reference currency, a decimal text rounded
  half-to-even to the reference currency's minor unit (None when there is no rate);
- ``fx``, on money not in the reference currency: ``{"reference", "rate", "as_of"}`` (the
  rate used and its date), ``"stale": true``
  when that rate is older than the table's maximum age, or ``{"reference", "missing": true}``
  when the table has no rate for the event's currency. Such an event is processed (its
  ``*_ref`` is null, so no threshold compares its raw amount) and counted.

A rate is the price of one unit of the currency in the reference currency (EUR reference:
``USD 0.92`` means 1 USD = 0.92 EUR).
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import hashlib
import io
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Context, Decimal
from pathlib import Path
from typing import Any

from ringfence.config import DEFAULT_FX_MAX_AGE_DAYS, DEFAULT_REFERENCE_CURRENCY
from ringfence.errors import ConfigError, FieldError, RequestError
from ringfence.events.controls import printable
from ringfence.events.money import CURRENCY_EXPONENTS
from ringfence.events.sensitive import redact
from ringfence.events.types import MONEY_FIELDS, REFERENCE_MONEY_FIELDS
from ringfence.private_files import read_input

MAX_RATES = 1000
MAX_CSV_BYTES = 256 * 1024
COLUMNS = ("currency", "rate", "as_of")
REFERENCE_FIELDS = dict(zip(MONEY_FIELDS, REFERENCE_MONEY_FIELDS, strict=True))  # amount -> amount_ref
STAMPED = (*REFERENCE_MONEY_FIELDS, "fx")  # set by ingest only: no producer may send them
# a rate: plain digits with an optional fraction, at most 12 significant digits, no exponent
_RATE = re.compile(r"(?:0|[1-9][0-9]{0,8})(?:\.[0-9]{1,12})?")
_MAX_SIGNIFICANT = 12
# wide enough that amount (18 digits) x rate (12) is exact before the one rounding to the unit
_EXACT = Context(prec=40)
_DAY_S = 86_400.0
_Prepared = tuple[Decimal, dict[str, Any], float]  # the rate, what the event records of it, stale after


@dataclass(frozen=True)
class FxRate:
    """One currency's rate: reference-currency units per one unit of it, and its date."""

    currency: str
    rate: Decimal
    as_of: dt.date

    def to_dict(self) -> dict[str, str]:
        return {"currency": self.currency, "rate": str(self.rate), "as_of": self.as_of.isoformat()}


@dataclass(frozen=True)
class FxTable:
    """The rates ingest converts with. ``version`` 0 is the table nothing was loaded into."""

    reference: str = DEFAULT_REFERENCE_CURRENCY
    rates: Mapping[str, FxRate] = field(default_factory=dict)
    version: int = 0
    max_age_days: int = DEFAULT_FX_MAX_AGE_DAYS
    loaded_at: float | None = None
    loaded_by: str | None = None

    def stale(self, now: float) -> list[FxRate]:
        """The rates older than the table's maximum age at ``now``."""
        return [r for r in self.rates.values() if _age_days(r.as_of, now) > self.max_age_days]

    @functools.cached_property
    def _prepared(self) -> dict[str, _Prepared]:
        """Each rate as :meth:`stamp` uses it, worked out once a table (ingest stamps every
        money event: a date's timestamp or a unit's Decimal per event would double its cost)."""
        out = {}
        for r in self.rates.values():
            midnight = dt.datetime(r.as_of.year, r.as_of.month, r.as_of.day, tzinfo=dt.UTC).timestamp()
            stale_after = midnight + (self.max_age_days + 1) * _DAY_S  # as _age_days > max_age_days
            out[r.currency] = (
                r.rate,
                {"reference": self.reference, "rate": str(r.rate), "as_of": r.as_of.isoformat()},
                stale_after,
            )
        return out

    @functools.cached_property
    def _unit(self) -> Decimal:
        return Decimal(1).scaleb(-CURRENCY_EXPONENTS[self.reference])

    def stamp(self, data: dict[str, Any], now: float) -> None:
        """Put the reference values and the rate used into ``data`` (its money fields are
        canonical already)."""
        currency = data.get("currency")
        present = [name for name in MONEY_FIELDS if data.get(name).__class__ is str]
        if not present or currency.__class__ is not str:
            return
        if currency == self.reference:  # most of a bank's events: no rate to record
            for name in present:
                data[REFERENCE_FIELDS[name]] = data[name]
            return
        found = self._prepared.get(currency)
        if found is None:
            for name in present:
                data[REFERENCE_FIELDS[name]] = None
            data["fx"] = {"reference": self.reference, "missing": True}
            return
        rate, recorded, stale_after = found
        for name in present:
            value = _EXACT.multiply(Decimal(data[name]), rate)
            data[REFERENCE_FIELDS[name]] = str(value.quantize(self._unit, ROUND_HALF_EVEN, _EXACT))
        fx = dict(recorded)
        if now > stale_after and math.isfinite(now):  # never at now = inf (tests' "no clock")
            fx["stale"] = True
        data["fx"] = fx

    def to_dict(self, now: float) -> dict[str, Any]:
        stale = {r.currency for r in self.stale(now)}
        return {
            "reference": self.reference,
            "version": self.version,
            "max_age_days": self.max_age_days,
            "loaded_at": self.loaded_at,
            "loaded_by": self.loaded_by,
            "stale": len(stale),
            "rates": [{**r.to_dict(), "stale": r.currency in stale} for r in sorted(self.rates.values(), key=_code)],
        }


def _code(rate: FxRate) -> str:
    return rate.currency


def _age_days(as_of: dt.date, now: float) -> float:
    if not math.isfinite(now):
        return 0.0
    midnight = dt.datetime(as_of.year, as_of.month, as_of.day, tzinfo=dt.UTC).timestamp()
    return (now - midnight) / _DAY_S - 1  # a rate dated today is 0 days old until tomorrow


def invalid(errors: list[FieldError]) -> RequestError:
    """A rates table that cannot be loaded (HTTP 400 ``invalid_rates``): each fault named."""
    message = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
    return RequestError(400, "invalid_rates", message, {"errors": [e.to_dict() for e in errors[:50]]})


def parse_rates(rows: Iterable[Mapping[str, Any]], reference: str, now: float) -> list[FxRate]:
    """Check rows of ``currency``, ``rate``, ``as_of`` (ISO date) against ``reference``.

    Raises :func:`invalid`'s error naming every row and field at fault (``rates[i].field``). The
    reference currency itself may appear only with the rate 1.
    """
    errors: list[FieldError] = []
    rates: dict[str, FxRate] = {}
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    for index, row in enumerate(rows):
        where = f"rates[{index}]"
        if index >= MAX_RATES:
            errors.append(FieldError("rates", f"at most {MAX_RATES} rates"))
            break
        if not isinstance(row, Mapping):
            errors.append(FieldError(where, "expected an object with currency, rate and as_of"))
            continue
        currency, rate, as_of = row.get("currency"), row.get("rate"), row.get("as_of")
        fault = len(errors)
        for key in sorted(set(row) - set(COLUMNS), key=str)[:5]:
            name = printable(redact(str(key)))[:40]  # echoed: never a card number
            errors.append(FieldError(f"{where}.{name}", "unknown field: a rate has currency, rate, as_of"))
        if not isinstance(currency, str) or currency not in CURRENCY_EXPONENTS:
            errors.append(FieldError(f"{where}.currency", "expected an ISO 4217 currency code"))
        elif currency in rates:
            errors.append(FieldError(f"{where}.currency", f"{currency} is given twice"))
        if not isinstance(rate, str) or _RATE.fullmatch(rate) is None or Decimal(rate) == 0:
            errors.append(FieldError(f"{where}.rate", 'expected a positive decimal text, e.g. "0.92" (no exponent)'))
        elif len(Decimal(rate).normalize().as_tuple().digits) > _MAX_SIGNIFICANT:
            errors.append(FieldError(f"{where}.rate", f"at most {_MAX_SIGNIFICANT} significant digits"))
        day = _date(as_of)
        if day is None:
            errors.append(FieldError(f"{where}.as_of", "expected an ISO date, e.g. 2026-12-01"))
        elif day > today + dt.timedelta(days=1):
            errors.append(FieldError(f"{where}.as_of", "is in the future"))
        if len(errors) > fault or not isinstance(currency, str) or not isinstance(rate, str) or day is None:
            continue
        if currency == reference:
            if Decimal(rate) != 1:
                errors.append(FieldError(f"{where}.rate", f"{reference} is the reference currency: its rate is 1"))
            continue
        rates[currency] = FxRate(currency, Decimal(rate), day)  # as written: no exponent, ever
    if errors:
        raise invalid(errors)
    return list(rates.values())


def _date(value: object) -> dt.date | None:
    if not isinstance(value, str) or len(value) != 10:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def read_csv(text: str) -> list[dict[str, str]]:
    """Rows of a rates file: a header naming ``currency``, ``rate`` and ``as_of``, then a row
    a currency. Raises :func:`invalid`'s error if the file cannot be read as such."""
    if len(text.encode()) > MAX_CSV_BYTES:
        raise invalid([FieldError("file", f"larger than {MAX_CSV_BYTES // 1024} KiB")])
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))  # a spreadsheet's byte-order mark
    try:
        missing = set(COLUMNS) - {name.strip() for name in reader.fieldnames or ()}
        if missing:
            raise invalid([FieldError("file", f"the header must name {', '.join(sorted(missing))}")])
        # other columns (a source, a comment) are the bank's own: not read
        return [{k: (row.get(k) or "").strip() for k in COLUMNS} for row in reader][: MAX_RATES + 1]
    except csv.Error as exc:
        raise invalid([FieldError("file", f"not a CSV file: {printable(redact(str(exc)))[:200]}")]) from None


def read_file(path: Path, reference: str, now: float) -> tuple[list[FxRate], str]:
    """The rates of a CSV file (:func:`read_csv`, :func:`parse_rates`) and the SHA-256 of the
    bytes they were read from (one read: the digest is of what was loaded); ConfigError naming
    the file and what is wrong with it."""
    try:
        raw = read_input(path, MAX_CSV_BYTES)
        return parse_rates(read_csv(raw.decode("utf-8-sig")), reference, now), hashlib.sha256(raw).hexdigest()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read fx_rates file {path}: {exc}") from exc
    except RequestError as exc:
        raise ConfigError(f"fx_rates file {path}: {exc}") from exc


def shipped_table(path: Path | None, reference: str, max_age_days: int, now: float) -> FxTable:
    """The table of a deployment whose rates ship with it (the aws runtime): ``path``'s rates,
    or none."""
    rates = read_file(path, check_reference(reference), now)[0] if path is not None else []
    version = 1 if path is not None else 0  # one table, never replaced while the deployment runs
    return FxTable(reference, {r.currency: r for r in rates}, version, max_age_days)


def check_reference(reference: str) -> str:
    """``reference`` if it is an ISO 4217 currency this release knows, else a ConfigError."""
    if reference not in CURRENCY_EXPONENTS:
        raise ConfigError(f"reference_currency {reference!r} is not an ISO 4217 currency")
    return reference
