"""A real local AWS endpoint: moto in server mode on 127.0.0.1, one per test session, and a
fresh deployment (stream, tables, topic, queues from the SAM template) per test, with
Lambda's event sources played by :mod:`ringfence.runtimes.aws.local`.
Skips on a laptop without moto; fails under CI=true."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ringfence.config import load_settings
from tests.helpers.aws import AUDIT_KEY, REGION, Deployment, DeploymentFactory


@pytest.fixture
def deploy(aws_endpoint: str) -> Iterator[DeploymentFactory]:
    from ringfence.aws_lambda import http_handler
    from ringfence.runtimes.aws.handlers import AwsRuntime, dispatch_event, process_event
    from ringfence.runtimes.aws.local import KinesisSource, QueueSource, provision
    from ringfence.runtimes.aws.resources import AwsClients

    made: list[Deployment] = []

    def make(
        shards: int = 2,
        batch_size: int = 100,
        alerting: Path | None = None,
        rule_pack: Path | None = None,
        fx_rates: Path | None = None,
        template_parameters: dict[str, str] | None = None,
    ) -> Deployment:
        clients = AwsClients(REGION)
        prefix = f"rf{uuid.uuid4().hex[:10]}"
        names = provision(clients, prefix, shards, parameters=template_parameters)
        settings = load_settings(environ={}, alerting=alerting, rule_pack=rule_pack, fx_rates=fx_rates)
        runtime = AwsRuntime.create(names, settings, clients, AUDIT_KEY)
        failures: list[dict[str, Any]] = []
        stream = KinesisSource(
            clients.kinesis, names.stream, lambda e: process_event(runtime, e), batch_size, on_failure=failures.append
        )
        alerts_url = clients.sqs.get_queue_url(QueueName=f"{prefix}-alerts")["QueueUrl"]
        queue = QueueSource(clients.sqs, alerts_url, lambda e: dispatch_event(runtime, e))
        dlq = clients.sqs.get_queue_url(QueueName=f"{prefix}-alerts-dlq")["QueueUrl"]
        deployment = Deployment(runtime, http_handler(runtime), stream, queue, alerts_url, dlq, failures)
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        deployment.runtime.dispatcher.close()
