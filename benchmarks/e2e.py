"""The benchmarks' entry point; the same as ``ringfence bench`` (see benchmarks/README.md).

.venv/bin/python benchmarks/e2e.py --events 100000 --customers 100000 --runs 3 --out benchmarks/results
"""

from __future__ import annotations

import typer

from ringfence.cli.bench import bench

if __name__ == "__main__":
    typer.run(bench)
