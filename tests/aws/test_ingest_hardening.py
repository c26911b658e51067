"""The aws runtime's ingest shares the embedded one's event checks (issue 15, items 10, 19, 26):
a JWT's ``ringfence_sources`` claim binds a producer to its sources, a batch over the limit
is 413 ``too_many_events``, and a rejected card number is never echoed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ringfence.api.auth import SOURCES_CLAIM, caller_of_claims
from ringfence.errors import AuthError
from ringfence.testing import event
from tests.helpers.aws import PRODUCER, Deployment, DeploymentFactory, http_event


@pytest.fixture
def d(deploy: DeploymentFactory) -> Deployment:
    return deploy()


def body(reply: dict[str, Any]) -> Any:
    return json.loads(reply["body"])


def verified(claims: dict[str, Any]) -> dict[str, Any]:
    """The JWT authorizer's part of an event that carries ``claims``."""
    jwt: dict[str, Any] = http_event("POST /v1/events", claims)["requestContext"]["authorizer"]["jwt"]
    return jwt


@pytest.mark.parametrize(
    ("claim", "sources"),
    [
        (["web", "mobile-app"], {"web", "mobile-app"}),
        ("[web mobile-app]", {"web", "mobile-app"}),  # how API Gateway passes a list claim on
        ("web,mobile-app", {"web", "mobile-app"}),
        ("web", {"web"}),
    ],
)
def test_the_sources_claim_is_read_in_every_form(claim: object, sources: set[str]) -> None:
    caller = caller_of_claims(verified({**PRODUCER, SOURCES_CLAIM: claim}))
    assert caller.writable_sources == frozenset(sources)


@pytest.mark.parametrize(
    "claims",
    [
        {"scope": "alerts:read events:write"},
        {"scp": ["alerts:read", "events:write"]},
        {"scp": "[alerts:read events:write]"},  # an Okta-style list claim, as API Gateway passes it on
        {"scp": "[alerts:read, events:write]"},
    ],
)
def test_the_scopes_are_read_in_every_form(claims: dict[str, Any]) -> None:
    caller = caller_of_claims(verified({"sub": "svc", **claims}))
    assert caller.scopes == ("alerts:read", "events:write")


def test_a_token_without_the_claim_is_not_bound() -> None:
    assert caller_of_claims(verified(PRODUCER)).writable_sources is None


@pytest.mark.parametrize("claim", [[], "", "[]"])
def test_a_sources_claim_that_names_none_is_refused_not_read_as_unbound(claim: object) -> None:
    with pytest.raises(AuthError, match=SOURCES_CLAIM):
        caller_of_claims(verified({**PRODUCER, SOURCES_CLAIM: claim}))


def test_a_bound_producer_cannot_write_another_source(d: Deployment) -> None:
    bound = {**PRODUCER, SOURCES_CLAIM: "mobile-app"}
    mine, forged = event("login.failed", source="mobile-app"), event("login.failed", source="web")
    reply = d.call(http_event("POST /v1/events", bound, [mine, forged]))
    assert reply["statusCode"] == 202
    answer = body(reply)
    assert answer["accepted"] == 1
    assert [e["field"] for e in answer["rejected"][0]["errors"]] == ["source"]


def test_a_batch_over_the_limit_is_413_too_many_events(d: Deployment) -> None:
    limit = d.runtime.settings.max_batch_events
    events = [{"event_id": str(i)} for i in range(limit + 1)]
    reply = d.call(http_event("POST /v1/events", PRODUCER, events))
    assert reply["statusCode"] == 413
    assert body(reply)["error"]["code"] == "too_many_events"
    assert body(reply)["error"]["details"] == {"events": limit + 1, "limit": limit}


def test_a_pan_in_event_id_is_not_echoed(d: Deployment) -> None:
    pan = "4111 1111 1111 1111"
    reply = d.call(http_event("POST /v1/events", PRODUCER, [{**event(), "event_id": pan}]))
    assert reply["statusCode"] == 400
    assert body(reply)["error"]["details"]["rejected"][0]["event_id"] is None
    assert "1111 1111" not in reply["body"]
