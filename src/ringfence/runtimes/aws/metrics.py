"""CloudWatch metrics of the processor and the tick, in CloudWatch's embedded metric format: a
JSON line on the function's standard output, which CloudWatch Logs turns into metric points.
No API call and no permission beyond writing the function's log, which every function has.

The metrics are per invocation, in the namespace ``Ringfence``, by ``Stream`` (one
deployment's) and ``Function`` (``process`` or ``tick``). ``AlertsWaiting`` counts the alerts
whose hits an invocation left in their outboxes (they lost every race for the alert, or the
tick ran out of time), once per shard whose hits wait: the next invocation or the tick
applies them, so ticks that still leave some for minutes mean an alert is held up
(``deploy/aws/template.yaml`` alarms on it)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

import msgspec

NAMESPACE = "Ringfence"
DIMENSIONS = ("Stream", "Function")

log = logging.getLogger("ringfence.aws.metrics")
_json = msgspec.json.Encoder()


def metric_line(stream: str, function: str, counts: Mapping[str, int], now: float) -> bytes:
    """One embedded-metric-format record of ``counts`` (name: a count)."""
    return _json.encode(
        {
            "_aws": {
                "Timestamp": int(now * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": NAMESPACE,
                        "Dimensions": [list(DIMENSIONS)],
                        "Metrics": [{"Name": name, "Unit": "Count"} for name in counts],
                    }
                ],
            },
            "Stream": stream,
            "Function": function,
            **counts,
        }
    )


def emit(stream: str, function: str, counts: Mapping[str, int], now: float) -> None:
    """Write ``counts`` as metrics, on Lambda only (``AWS_LAMBDA_FUNCTION_NAME`` set): off it,
    the local runs and benchmarks have no CloudWatch to read them, and their output stays theirs.
    A failure to write them is logged, never the invocation's."""
    if not os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        return
    try:
        sys.stdout.buffer.write(metric_line(stream, function, counts, now) + b"\n")
        sys.stdout.flush()
    except Exception:
        log.exception("%s: the metrics could not be written", function)
