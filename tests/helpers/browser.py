"""A Playwright browser session on a real embedded server, for the dashboard tests."""

from __future__ import annotations

import re
from typing import Any

from ringfence.bench.servers import EmbeddedServer

LIVE_TIMEOUT_MS = 15_000  # how long a live update may take to show


class Session:
    """A browser context on the server, with every console message and outside request kept."""

    def __init__(self, browser: Any, server: EmbeddedServer, width: int = 1280, height: int = 720) -> None:
        self.server = server
        self.context = browser.new_context(viewport={"width": width, "height": height}, base_url=server.url)
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.outside: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.context.on("request", self._request)

    def _request(self, request: Any) -> None:
        if not request.url.startswith(self.server.url):
            self.outside.append(request.url)

    def sign_in(self, key: str, path: str = "/") -> None:
        self.page.goto(path)
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(re.compile(re.escape(self.server.url + path) + "$"))

    def problems(self, *expected_statuses: int) -> list[str]:
        """CSP violations, script errors, failed requests (but the ``expected_statuses`` a test
        provokes) and requests that left the server: none are allowed."""
        expected = tuple(f"status of {status} " for status in expected_statuses)
        bad = [
            m
            for m in self.console
            if ("Content Security Policy" in m or m.startswith(("pageerror", "error")))
            and not (expected and any(e in m for e in expected))
        ]
        return bad + [f"outside request: {u}" for u in self.outside]

    def unlabelled_controls(self) -> list[str]:
        return list(
            self.page.evaluate(
                """() => [...document.querySelectorAll('input, select, textarea, button')]
                .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                              && !(el.tagName === 'BUTTON' && el.textContent.trim()))
                .map(el => el.outerHTML)"""
            )
        )

    def close(self) -> None:
        self.context.close()
