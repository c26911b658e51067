#!/usr/bin/env bash
# Builds the compiled engine core (native/, Rust) into a wheel in DIR: manylinux2014, linked by
# zig (the ziglang package) against glibc 2.17, so that it loads on every Lambda Python runtime as
# on this machine (linked against this machine's glibc it would need symbols Lambda's lacks).
# .venv's core (scripts/_venv.sh) and the Lambda package's (deploy/aws/build-code) are this one
# build: they share native/target, and the second finds the first's work done (a fat-LTO build of
# the crate is a minute or more). Needs .venv with maturin and ziglang, and a Rust toolchain.
# Usage: scripts/_build_core.sh DIR
set -euo pipefail
out=$(realpath -m "${1:?usage: scripts/_build_core.sh DIR}")
cd "$(dirname "$0")/.."
# maturin runs zig as `python -m ziglang`, with the first python on PATH; the interpreter's path
# and PYO3_* (scripts/_venv.sh exports them) are in cargo's fingerprints: the same each time
PATH="$PWD/.venv/bin:$PATH" .venv/bin/maturin build --release --locked --zig --compatibility manylinux2014 \
  -i "$PWD/.venv/bin/python" -m native/Cargo.toml -o "$out"
