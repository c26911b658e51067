"""The engine's keyed stages run in one process, for tests (the kafka runtime runs them apart)."""

from __future__ import annotations

from ringfence.engine.engine import EventContext
from ringfence.engine.native import make_engine
from ringfence.engine.pack import RulePack
from ringfence.engine.rules import AlertSignal
from ringfence.engine.stages import plan_stages, run_stage
from ringfence.events.model import Event


class StagedPipeline:
    """Every stage and the join in one process, one engine each: what the kafka runtime
    computes, without Kafka (its tests compare it with the one-engine runtime)."""

    def __init__(self, pack: RulePack, allowed_lateness_s: float = 5.0, engine: str = "python") -> None:
        self.plan = plan_stages(pack)
        stages = [*self.plan.stages, self.plan.rules]
        self.engines = {s.name: make_engine(s.pack, allowed_lateness_s, engine=engine) for s in stages}

    def process(self, event: Event, offset: int, partition: int, ingested_at: float) -> list[AlertSignal]:
        customer = self.plan.stages[0]
        engine = self.engines[customer.name]
        route, joined = self.plan.route(event, EventContext(event, engine))
        position = (offset, partition, ingested_at)
        signals, values = run_stage(
            self.plan, customer, engine, event, position, {}, final=not joined, report_values=bool(joined)
        )
        for stage, _key in route:
            contributes = stage.name in joined
            engine = self.engines[stage.name]
            hits, carried = run_stage(self.plan, stage, engine, event, position, {}, False, contributes)
            signals.extend(hits)
            values.update(carried)
        if joined:
            rules = self.plan.rules
            hits, _ = run_stage(self.plan, rules, self.engines[rules.name], event, position, values, final=True)
            signals.extend(hits)
        return signals

    def advance(self, watermark: float) -> list[AlertSignal]:
        return [s for engine in self.engines.values() for s in engine.advance(watermark)]
