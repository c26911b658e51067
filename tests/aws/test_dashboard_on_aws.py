"""The dashboard's pages on the aws runtime, which has no sign-in sessions (JWT callers)."""

from __future__ import annotations

from tests.helpers.aws import ANALYST, DeploymentFactory, http_event


def test_a_page_with_a_stale_session_cookie_is_sent_to_sign_in_not_a_server_error(deploy: DeploymentFactory) -> None:
    d = deploy()
    event = http_event("GET /", ANALYST)
    event["cookies"] = ["rf_session=left-over-from-another-deployment"]
    reply = d.call(event)
    assert reply["statusCode"] in (302, 303, 307), reply
    assert "/signin" in reply["headers"]["location"]
