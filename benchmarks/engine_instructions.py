"""The compiled core's instructions an event, counted by valgrind's callgrind: a figure that,
unlike time on a shared machine, is the same run after run, so two builds of the core compare
by a few per cent. Counted: the core's ``process`` calls (the stored event's parse and the
engine), over the first ``--events`` events of the engine-only workload (the default pack,
simulator traffic with seed 42, 100,000 customers, cold keys). Not counted: the Python loop
around them. Instructions are not time (cache misses cost most at a bank's scale of keys),
so ``ringfence bench --engine-only`` stays the figure of record.

Each ``--core`` is a folder holding a ``ringfence_native`` package (for example a copy of the
installed one, or a wheel unpacked); without one, the installed core is counted.

    .venv/bin/python benchmarks/engine_instructions.py --events 30000 --core /tmp/old --core /tmp/new
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

TOGGLE = "*NativeCore*__pymethod_process__*"  # the PyO3 entry of NativeCore.process


def inner(work: Path) -> None:
    """Run under callgrind: the events of ``work`` through a fresh native engine."""
    from ringfence.bench.engine_only import LATENESS_S
    from ringfence.engine.native import NativeEngine, make_engine
    from ringfence.engine.pack import load_pack_file

    bodies, now = msgspec.msgpack.decode(work.read_bytes(), type=tuple[list[bytes], float])
    engine = make_engine(load_pack_file(None), LATENESS_S, engine="native")
    assert isinstance(engine, NativeEngine)
    for offset, body in enumerate(bodies, 1):
        engine.process_raw(body, offset, 0, now)


def count(work: Path, core: str | None) -> int:
    """Instructions the core's ``process`` took over ``work``."""
    env = dict(os.environ)
    if core:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [core, env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        done = subprocess.run(
            [
                shutil.which("valgrind") or "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                "--collect-atstart=no",
                f"--toggle-collect={TOGGLE}",
                sys.executable,
                __file__,
                "--inner",
                str(work),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"callgrind reported no count:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--core", action="append", help="a folder holding a ringfence_native package")
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    parser.add_argument("--inner", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args.inner)
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    from ringfence.bench.engine_only import Options, workload

    work = workload(Options(events=(args.events + 1) // 2))
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "work.msgpack"
        path.write_bytes(msgspec.msgpack.encode((work.bodies[: args.events], work.now)))
        for core in args.core or [None]:
            total = count(path, core)
            name = core or "installed"
            figures[name] = {"instructions": total, "per_event": round(total / args.events)}
            print(f"{name}: {total:,} instructions, {total / args.events:,.0f} an event", flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        result = {"events": args.events, "cores": figures}
        (args.out / "engine-instructions.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
