"""Routes of the dashboard's pages and assets.

Every page is the same static shell; its script picks the view from the path and fetches
what it shows from the API. A page asked for without a live session redirects to sign-in,
so no view is ever rendered for a stranger. Assets hold no data and are public (the
sign-in page needs them). The API's app mounts these routes and tells them who is signed in:
the dashboard depends on nothing of the API but its URLs.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from importlib import resources
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route, compile_path

from ringfence.errors import NotFound
from ringfence.events.sensitive import looks_like_pan

STATIC = resources.files("ringfence.dashboard").joinpath("static")
CONTENT_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".html": "text/html; charset=utf-8",
}
# strict: scripts, styles and connections to this origin only; nothing inline, no framing
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


@functools.lru_cache(maxsize=128)  # shipped files do not change while Ringfence runs
def _asset(name: str) -> bytes | None:
    """The bytes of a shipped asset; None for anything else (no path ever leaves ``static/``)."""
    parts = name.split("/")
    if not all(part and not part.startswith(".") for part in parts):
        return None
    node = STATIC
    for part in parts:
        node = node.joinpath(part)
    try:
        return node.read_bytes() if node.is_file() else None
    except OSError:  # a name the file system refuses (too long, say): no such asset
        return None


SHELL = _asset("page.html") or b""
# a path segment of RFC 3986 characters only: no control characters (browsers drop tab, CR
# and LF from URLs, so "/\t/evil.example" would become "//evil.example"), no backslash
_SAFE_PATH = re.compile(r"/(?:[A-Za-z0-9._~!$&'()*+,;=:@%-]+(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*)?")


PAGES = ("/", "/alerts/{alert_id}", "/customers", "/customers/{customer_id:path}", "/operations", "/rules")
_ALERT_PAGE = re.compile(r"/alerts/al_[0-9a-f]{24}")  # an alert's id, a digest (alerts.model.alert_id)
_PAGE_PATTERNS = [compile_path(path)[0] for path in PAGES]


def safe_next(value: str | None) -> str:
    """Where sign-in may send the browser: ``value`` if it is the path of a dashboard page,
    else ``/``. Never another origin, whatever the encoding (no open redirect)."""
    if value and _SAFE_PATH.fullmatch(value) and any(pattern.match(value) for pattern in _PAGE_PATTERNS):
        return value
    return "/"


def _shell() -> Response:
    return Response(SHELL, media_type="text/html; charset=utf-8", headers={"content-security-policy": PAGE_CSP})


async def sign_in_page(request: Request) -> Response:
    wanted = request.query_params.get("next")
    if wanted is not None and safe_next(wanted) != wanted:  # a hostile or stale next: drop it
        return RedirectResponse("/signin", status_code=303)
    return _shell()


async def asset(request: Request) -> Response:
    name: str = request.path_params["name"]
    suffix = name[name.rfind(".") :] if "." in name else ""
    body = _asset(name) if suffix in CONTENT_TYPES else None
    if body is None:
        raise NotFound(f"no asset {name!r}")
    return Response(body, media_type=CONTENT_TYPES[suffix], headers={"content-security-policy": PAGE_CSP})


def dashboard_routes(signed_in: Callable[[Request], bool]) -> list[Route]:
    """The pages, the sign-in page and the assets; ``signed_in`` says whether a request comes
    from a live session (blocking: it is called off the event loop)."""

    async def page(request: Request) -> Response:
        if not await run_in_threadpool(signed_in, request):
            path = request.url.path
            if looks_like_pan(path) and not _ALERT_PAGE.fullmatch(path):  # a card number typed as an id
                return RedirectResponse("/signin", status_code=303)
            return RedirectResponse("/signin?next=" + quote(request.url.path, safe="/"), status_code=303)
        return _shell()

    return [
        *(Route(path, page, methods=["GET"]) for path in PAGES),
        Route("/signin", sign_in_page, methods=["GET"]),
        Route("/static/{name:path}", asset, methods=["GET"]),
    ]
