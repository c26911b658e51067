"""``GET /v1/customers/{id}/features``: a customer's current feature values (explainability)."""

from __future__ import annotations

import math
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ringfence.api.auth import authorize, platform_of
from ringfence.api.errors import json_response
from ringfence.clock import iso
from ringfence.errors import RequestError

RETRIES = 5


async def customer_features(request: Request) -> Response:
    authorize(request, "alerts:read")
    platform = platform_of(request)
    customer_id = request.path_params["customer_id"]
    if not 1 <= len(customer_id) <= 128:
        raise RequestError(400, "invalid_path", "customer id must be 1..128 characters")
    engine = platform.engine
    latest = max(engine.max_event_time.values(), default=-math.inf)
    at = latest if math.isfinite(latest) else platform.clock.time()
    features: dict[str, Any] = {}
    for _ in range(RETRIES):  # the processor thread may resize a state while it is read
        try:
            features = engine.features_of({"customer_id": customer_id}, at)
            break
        except RuntimeError:
            continue
    return json_response({"customer_id": customer_id, "at": iso(at), "features": features})
