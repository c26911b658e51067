"""Anomaly scores: robust z-score per key, and River's Half-Space Trees."""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys

import pytest

from ringfence.engine import Engine, load_pack
from ringfence.engine.anomaly import MAX_Z, robust_z
from ringfence.errors import RulePackError
from tests.helpers.factories import T0, ev


@pytest.mark.parametrize(
    ("history", "x", "expected"),
    [
        ([10.0, 11.0, 9.0, 10.0, 10.5, 9.5], 10.0, 0.0),
        ([10.0, 11.0, 9.0, 10.0, 10.5, 9.5, 1000.0], 10.0, 0.0),  # one outlier does not move the centre
        ([10.0] * 8, 10.0, 0.0),
        ([10.0] * 8, 11.0, MAX_Z),  # no spread at all: any change is extreme
        ([10.0] * 8, 9.0, -MAX_Z),
    ],
)
def test_robust_z(history: list[float], x: float, expected: float) -> None:
    assert robust_z(history, x) == pytest.approx(expected)


def test_robust_z_grows_with_distance() -> None:
    history = [10.0, 12.0, 8.0, 11.0, 9.0, 10.0]
    assert 0 < robust_z(history, 14.0) < robust_z(history, 30.0)


PACK = load_pack("""
version: a1
anomaly:
  - name: amount_z
    kind: robust_zscore
    on: [card.authorization]
    by: [customer_id, data.currency]
    of: data.amount
    min_samples: 5
rules:
  - id: odd_amount
    on: [card.authorization]
    when: amount_z >= 6
    severity: high
    audience: fraud
    title: "z={amount_z}"
""")


def test_a_zscore_needs_history_and_flags_the_outlier() -> None:
    engine = Engine(PACK)
    amounts = ["20.00", "22.00", "19.00", "21.00", "20.50", "20.00", "400.00"]
    hits = [engine.process(ev(at=T0 + i, amount=a), i, 0, 0.0) for i, a in enumerate(amounts)]
    assert [len(h) for h in hits] == [0, 0, 0, 0, 0, 0, 1]
    assert hits[-1][0].features["amount_z"] > 6


def test_zscore_state_is_per_key() -> None:
    engine = Engine(PACK)
    for i in range(6):
        engine.process(ev(at=T0 + i, amount="20.00", customer_id="a"), i, 0, 0.0)
    assert engine.process(ev(at=T0 + 9, amount="400.00", customer_id="b"), 9, 0, 0.0) == []


def test_half_space_trees_scores_outliers_higher_and_survives_a_restore() -> None:
    pytest.importorskip("river")
    pack = load_pack("""
version: h1
features:
  - {name: auths_10m, on: [card.authorization], by: data.card_id, agg: count, window: 10m}
anomaly:
  - name: hst
    kind: half_space_trees
    on: [card.authorization]
    by: global
    of: [data.amount, auths_10m]
    min_samples: 50
rules:
  - {id: scored, on: [card.authorization], when: hst != null, severity: low, audience: fraud, title: "{hst}"}
""")
    rng = random.Random(3)
    engine = Engine(pack)
    scores = []
    for i in range(1500):
        event = ev(at=T0 + i * 10, amount=f"{rng.lognormvariate(3, 0.3):.2f}", card_id=f"tok_{rng.randrange(300)}")
        scores += [s.features["hst"] for s in engine.process(event, i, 0, 0.0)]
    rows = [(n, k, s) for n, k, s in engine.take_changes() if s is not None]
    restored = Engine(pack)
    restored.restore(rows, dict(engine.max_event_time))
    odd = ev(at=T0 + 20_000, amount="9000.00", card_id="tok_1")
    (a,) = engine.process(odd, 2000, 0, 0.0)
    (b,) = restored.process(odd, 2000, 0, 0.0)
    assert a.features == b.features
    assert a.features["hst"] > sorted(scores[-500:])[475]  # above the 95th percentile of everyday scores


HST_PACK = """
version: h2
anomaly:
  - {name: hst, kind: half_space_trees, on: [card.authorization], by: global, of: [data.amount]}
rules:
  - {id: odd, on: [card.authorization], when: hst > 0.9, severity: low, audience: fraud, title: odd}
"""


def test_checking_a_pack_with_half_space_trees_does_not_import_river() -> None:
    """Its import took two seconds of the first pack check's request (a CI run's timed out)."""
    pytest.importorskip("river")  # without it the check refuses the pack (the next test)
    code = (
        "import sys; from ringfence.engine import load_pack; "
        f"load_pack({HST_PACK!r}); assert 'river' not in sys.modules, 'river imported'"
    )
    checked = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert checked.returncode == 0, checked.stderr


def test_a_pack_with_half_space_trees_names_the_extra_where_river_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "river" else real(name, *a))
    with pytest.raises(RulePackError, match=r"half_space_trees needs River: pip install 'ringfence\[ml\]'"):
        load_pack(HST_PACK)
