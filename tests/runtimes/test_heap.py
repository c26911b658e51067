"""A service's start-up objects are set aside from the garbage collector."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import pytest


def test_a_started_service_s_full_collections_walk_only_what_it_allocated_since() -> None:
    """In a fresh interpreter (freezing is for the process's life): after the platform's
    modules are imported and frozen, a full collection walks a small fraction of what it did,
    and what is allocated later is still collected."""
    probe = textwrap.dedent("""
        import gc, json
        import ringfence.api.app, ringfence.runtimes.kafka.worker, ringfence.engine
        from ringfence.runtimes.heap import freeze_start_up
        gc.collect()
        before = len(gc.get_objects())
        freeze_start_up()
        after = len(gc.get_objects())

        class Node:
            pass

        a, b = Node(), Node()
        a.other, b.other = b, a
        del a, b
        print(json.dumps([before, after, gc.collect() >= 2]))
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    before, after, later_collected = json.loads(out.stdout)
    assert before > 20_000
    assert after < before / 20
    assert later_collected is True


def test_every_http_service_freezes_as_it_begins_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ringfence up`` and ``serve ingest|api`` all serve through ``serve``: it freezes before
    it runs the server (here stopped right there)."""
    from ringfence.config import load_settings
    from ringfence.runtimes import http_server

    class Frozen(Exception):
        pass

    def freeze() -> None:
        raise Frozen

    def run_server(*_: object) -> None:
        raise AssertionError("the server ran before the freeze")

    monkeypatch.setattr(http_server, "freeze_start_up", freeze)
    monkeypatch.setattr(http_server, "event_loop_class", run_server)
    with socket.socket() as sock, pytest.raises(Frozen):
        http_server.serve(object(), load_settings(environ={}), sock)
