"""The compiled core's instructions an event, counted by valgrind's callgrind: a figure that,
unlike time on a shared machine, is the same run after run, so two builds compare by a few
per cent. The workload: the first ``--events`` events of the engine-only run (the default
pack, simulator traffic with seed 42, 100,000 customers, cold keys), through a fresh native
engine's ``process_raw`` one at a time, or with ``--batch N`` through ``process_raw_many`` N
at a time (what the processor calls). With ``--after N``, the ``--events`` events after the
first N instead (warm keys: the difference of two counts, the first N + ``--events`` events
less the first N; take N a multiple of ``--batch``, so both runs cut the same batches).

Counted: the core's calls. One at a time, ``process`` from PyO3's entry (argument conversion,
the parse, the engine and the signals handed back); batched, the Rust method ``process_many``
(callgrind sees no entry into PyO3's wrapper of it), so the conversion of the batch's lists
and of the signals to Python is not in it. With ``--with-python``, every instruction of the
loop instead, the Python around the calls included: the whole run less a run of no events.
Instructions are not time (cache misses cost most at a bank's scale of keys), so
``ringfence bench --engine-only`` stays the figure of record.

Each ``--core`` is a folder holding a ``ringfence_native`` package (a copy of the installed
one, or a wheel unpacked); without one, the installed core is counted.

    .venv/bin/python benchmarks/engine_instructions.py --events 30000 --core /tmp/old --core /tmp/new
    .venv/bin/python benchmarks/engine_instructions.py --events 20000 --batch 5000 --with-python
    .venv/bin/python benchmarks/engine_instructions.py --events 40000 --after 200000 --batch 5000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import msgspec

# the core's entries: PyO3's wrapper of ``process``; ``process_many`` itself (callgrind finds
# no entry into PyO3's wrapper of it, and a pattern matching its closures too toggles twice)
ENTRIES = ("*NativeCore*__pymethod_process__*", "ringfence_native::NativeCore::process_many")


def inner(work: Path, events: int, batch: int) -> None:
    """Run under callgrind: the first ``events`` of ``work`` through a fresh native engine."""
    from ringfence.bench.engine_only import LATENESS_S
    from ringfence.engine.native import NativeEngine, make_engine
    from ringfence.engine.pack import load_pack_file

    bodies, now = msgspec.msgpack.decode(work.read_bytes(), type=tuple[list[bytes], float])
    bodies = bodies[:events]
    engine = make_engine(load_pack_file(None), LATENESS_S, engine="native")
    assert isinstance(engine, NativeEngine)
    if batch:
        for lo in range(0, len(bodies), batch):
            run = bodies[lo : lo + batch]
            engine.process_raw_many(run, range(lo + 1, lo + 1 + len(run)), [0] * len(run), [now] * len(run))
        return
    for offset, body in enumerate(bodies, 1):
        engine.process_raw(body, offset, 0, now)


def count(work: Path, events: int, batch: int, core: str | None, whole: bool) -> int:
    """Instructions callgrind collected over ``events`` events of ``work``."""
    env = dict(os.environ)
    if core:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [core, env.get("PYTHONPATH")]))
    collect = [] if whole else ["--collect-atstart=no", *(f"--toggle-collect={e}" for e in ENTRIES)]
    with tempfile.TemporaryDirectory() as tmp:
        argv = [
            shutil.which("valgrind") or "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={Path(tmp) / 'callgrind.out'}",
            *collect,
            sys.executable,
            __file__,
            "--inner",
            str(work),
            "--events",
            str(events),
            "--batch",
            str(batch),
        ]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"callgrind reported no count:\n{done.stderr[-2000:]}")
    if events and int(found.group(1)) == 0:  # the entry's name no longer matches (inlined, renamed)
        raise RuntimeError(f"callgrind counted nothing in {ENTRIES}: is the core's entry still there?")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=0, help="events a process_raw_many call (0: process_raw)")
    parser.add_argument("--after", type=int, default=0, help="count the events after this many (warm keys)")
    parser.add_argument("--with-python", action="store_true", help="count the whole loop, not the core's calls")
    parser.add_argument("--core", action="append", help="a folder holding a ringfence_native package")
    parser.add_argument("--out", type=Path, help="a folder: engine-instructions.json is written there")
    parser.add_argument("--inner", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args.inner, args.events, args.batch)
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    from ringfence.bench.engine_only import Options, workload

    upto = args.after + args.events
    work = workload(Options(events=(upto + 1) // 2))
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "work.msgpack"
        path.write_bytes(msgspec.msgpack.encode((work.bodies[:upto], work.now)))
        for core in args.core or [None]:
            total = count(path, upto, args.batch, core, args.with_python)
            # what came before the events counted: the first --after events, or the run's setup
            if args.after or args.with_python:
                total -= count(path, args.after, args.batch, core, args.with_python)
            name = core or "installed"
            figures[name] = {"instructions": total, "per_event": round(total / args.events)}
            print(f"{name}: {total:,} instructions, {total / args.events:,.0f} an event", flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        options = {"events": args.events, "after": args.after, "batch": args.batch, "with_python": args.with_python}
        (args.out / "engine-instructions.json").write_text(json.dumps({**options, "cores": figures}, indent=2))


if __name__ == "__main__":
    main()
