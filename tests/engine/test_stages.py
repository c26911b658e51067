"""The engine split into keyed stages computes what the one-process engine computes."""

from __future__ import annotations

import os

import msgspec
import pytest

from ringfence.engine import native
from ringfence.engine.engine import Engine
from ringfence.engine.pack import load_pack, load_pack_file
from ringfence.engine.rules import AlertSignal
from ringfence.engine.stages import CUSTOMER, plan_stages, refuse_shared_stage_names
from ringfence.errors import RulePackError
from ringfence.events.decode import validate_event
from ringfence.simulate import Traffic
from tests.helpers.staged import StagedPipeline


def comparable(signals: list[AlertSignal]) -> list[tuple[object, ...]]:
    return [(s.rule_id, s.dedup_key, s.event_id, s.occurred_at, sorted(s.features.items()), s.title) for s in signals]


def test_the_default_pack_splits_by_key_with_the_customer_first() -> None:
    plan = plan_stages(load_pack_file(None))
    assert plan.names[0] == CUSTOMER
    assert {"card_id", "ip", "device_id", "service-endpoint", "source"} <= set(plan.names)
    card = plan.stage("card_id")
    assert {"card_auths_10m", "card_last_lat"} <= card.owns
    assert "card_auths_lifetime" in plan.stage(CUSTOMER).owns  # keyed by customer_id


@pytest.mark.parametrize("engine", ["python", "native"])
def test_staged_processing_equals_the_one_engine_on_bank_traffic(engine: str) -> None:
    if engine == "native":
        need_the_core()
    pack = load_pack_file(None)
    whole, staged = Engine(pack), StagedPipeline(pack, engine=engine)
    traffic = Traffic(seed=5, customers=300, fraud_rate=0.2)
    expected: list[AlertSignal] = []
    got: list[AlertSignal] = []
    for offset, raw in enumerate(traffic.stream(start=1_800_000_000.0, rate_per_s=30.0, count=6000), 1):
        event = validate_event(msgspec.json.encode(raw), now=raw_time(raw))
        expected += whole.process(event, offset, 0, 0.0)
        got += staged.process(event, offset, 0, 0.0)
    expected += whole.advance(1e12)
    got += staged.advance(1e12)
    assert len({s.rule_id for s in expected}) >= 8  # the traffic exercises most detections
    assert sorted(comparable(got)) == sorted(comparable(expected))


def need_the_core() -> None:
    if not native.available():
        if os.environ.get("CI") == "true":
            pytest.fail("CI must build the compiled core (scripts/_venv.sh)")
        pytest.skip("the compiled core is not built here")


def raw_time(raw: dict[str, object]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(str(raw["occurred_at"])).timestamp() + 1


PACK = """
version: cyc
features:
  - name: per_card
    on: [card.authorization]
    by: data.card_id
    agg: count
  - name: per_device
    on: [card.authorization]
    by: data.device_id
    agg: count
anomaly:
  - name: card_z
    kind: robust_zscore
    by: data.card_id
    of: per_device
  - name: device_z
    kind: robust_zscore
    by: data.device_id
    of: per_card
rules: []
"""


def test_a_definition_reading_another_keys_features_is_refused_by_name() -> None:
    with pytest.raises(RulePackError, match="anomaly card_z: reads per_device, kept by another key"):
        plan_stages(load_pack(PACK))


def test_customer_state_reading_another_key_is_refused_by_name() -> None:
    text = PACK.replace("by: data.device_id\n    of: per_card", "by: customer_id\n    of: per_card")
    text = text.replace("by: data.card_id\n    of: per_device", "by: data.card_id\n    of: per_card")
    with pytest.raises(RulePackError, match="anomaly device_z: reads per_card"):
        plan_stages(load_pack(text))


SHARED_NAME = """
version: "t1"
features:
  - {{name: first, on: [login.succeeded], agg: count, window: 1h, by: {first}}}
  - {{name: second, on: [login.succeeded], agg: count, window: 1h, by: {second}}}
rules: []
"""


@pytest.mark.parametrize(
    ("first", "second", "stage"),
    [
        ("source", "data.source", "source"),  # the envelope's source and data's
        ("[data.a, data.b]", "data.a-b", "a-b"),  # a name joined like another
        ("customer_id", "data.customer", "customer"),  # a key in the customer's stage
        ("data.device_id", "data.join", "join"),  # the join's tasks
        ("data.device_id", "data.global", "global"),
    ],
)
def test_two_keys_sharing_a_stage_name_are_refused_in_a_new_pack(first: str, second: str, stage: str) -> None:
    """A hostile review: a stage is named after its key, cleaned, and takes the first key's
    partitions; a second key of that name had its state split across them (a count of two
    events of one data.source from two producers was two counts of one). A pack coming in is
    refused, naming both; a stored one still plans (a restart is never refused)."""
    pack = load_pack(SHARED_NAME.format(first=first, second=second))
    with pytest.raises(RulePackError, match=f"feature second: its key .* is stage '{stage}'"):
        refuse_shared_stage_names(pack)
    assert stage in plan_stages(pack).names or stage == "join"
    refuse_shared_stage_names(load_pack(SHARED_NAME.format(first=first, second="data.device_name")))
