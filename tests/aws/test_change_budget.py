"""AWS: a key's budget of changes is one for all the API's Lambda containers (tests/api/test_shared_budgets.py
has the buckets themselves)."""

from __future__ import annotations

import json

import msgspec
import pytest

from tests.helpers.aws import ANALYST, DeploymentFactory, http_event
from tests.helpers.http import silence_of_3_kib


def test_a_second_lambda_container_refuses_what_the_first_spent(
    deploy: DeploymentFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS: Lambda runs the API in as many containers as requests come at once; each held a full
    budget of its own, and a new one was made full."""
    from ringfence.aws_lambda import http_handler

    d = deploy(shards=1)
    small = msgspec.structs.replace(d.runtime.settings, people_writes_mib_per_hour=4 / 1024)
    monkeypatch.setattr(d.runtime, "settings", small)
    first, second = http_handler(d.runtime), http_handler(d.runtime)  # two containers' apps
    created = first(http_event("POST /v1/silences", ANALYST, silence_of_3_kib()), None)
    assert created["statusCode"] == 201, created
    refused = second(http_event("POST /v1/silences", ANALYST, silence_of_3_kib()), None)
    assert refused["statusCode"] == 429, refused
    assert json.loads(refused["body"])["error"]["code"] == "change_budget"
    other = {**ANALYST, "sub": "analyst-2"}  # another key's budget is its own
    assert second(http_event("POST /v1/silences", other, silence_of_3_kib()), None)["statusCode"] == 201
