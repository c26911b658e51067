# Sourced by the scripts: make sure .venv exists with Ringfence and its dev tools installed.
# Needs Python 3.11+ as python3 (or set PYTHON=/path/to/python3.11).
# Installs exactly the hash-pinned versions of requirements/dev.txt (scripts/lock makes it),
# then Ringfence itself without dependencies, so nothing unpinned or unchecked gets in.
PYTHON="${PYTHON:-python3}"
LOCK=requirements/dev.txt
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "Ringfence needs Python 3.11 or newer as '$PYTHON' (set PYTHON=...)." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# Reinstall only when the lock or pyproject.toml changed since the last install.
stamp=.venv/.ringfence-installed
if [ ! -f "$stamp" ] || [ "$LOCK" -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "installing Ringfence's locked packages into .venv/ (a few minutes the first time)..."
  # the setuptools that Python 3.11's venv bundles has known advisories, and nothing here needs it
  .venv/bin/python -m pip uninstall -qq -y setuptools || exit 1
  # uv installs the lock (seconds, where pip took minutes), itself installed by pip from the lock
  # with its hashes. The lock is complete, so nothing is resolved (--no-deps); pip check then
  # finds any package's requirement the lock misses (not those of extras, which scripts/lock
  # resolved). Resolving would hit pip#9644: pip picks the newest release of a dependency
  # another names with an extra (pip-audit's CacheControl[filecache]) over its pin, and refuses it.
  # Each step exits on failure itself: a caller may source this without set -e (the Lambda
  # Makefile), and the stamp must not say a lock is installed that is not.
  uv_pin=$(mktemp)
  sed -n '/^uv==/,/^[^ ]/{/^uv==/p;/^ /p}' "$LOCK" >"$uv_pin"
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --require-hashes -r "$uv_pin" ||
    { rm -f "$uv_pin"; exit 1; }
  rm -f "$uv_pin"
  # uv reads no pip configuration: a mirror named for pip only (PIP_INDEX_URL) is uv's too
  if [ -n "${PIP_INDEX_URL:-}" ] && [ -z "${UV_INDEX_URL:-}${UV_DEFAULT_INDEX:-}" ]; then
    export UV_DEFAULT_INDEX="$PIP_INDEX_URL"
  fi
  UV_LINK_MODE=copy .venv/bin/uv pip install -q --no-config --python .venv/bin/python --no-deps \
    --require-hashes -r "$LOCK" || exit 1
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . || exit 1
  .venv/bin/python -m pip check >/dev/null || { .venv/bin/python -m pip check; exit 1; }
  touch "$stamp"
fi
# The compiled engine core (native/, Rust): built into .venv when anything under native/, or how
# it is built, changed since the last build; its crates come from crates.io at the versions
# native/Cargo.lock pins.
# Without cargo the Python engine runs; CI must build it. It is built as the Lambda package's
# is (scripts/_build_core.sh), with these PYO3_* variables, which scripts/test's cargo runs share.
PYO3_PYTHON="$PWD/.venv/bin/python"
PYO3_ENVIRONMENT_SIGNATURE=$(.venv/bin/python -c \
  'import sys; print("%s-%d.%d-%dbit" % (sys.implementation.name, *sys.version_info[:2], sys.maxsize.bit_length() + 1))')
export PYO3_PYTHON PYO3_ENVIRONMENT_SIGNATURE
native_stamp=.venv/.ringfence-native-built
if ! command -v cargo >/dev/null 2>&1; then
  if [ "${CI:-}" = true ]; then
    echo "the compiled core cannot be built: no Rust toolchain (cargo), and CI must build it" >&2
    exit 1
  fi
  echo "the compiled core is not built: no Rust toolchain (cargo); the Python engine will run"
elif [ ! -f "$native_stamp" ] ||
  [ -n "$(find native scripts/_build_core.sh -path native/target -prune -o -newer "$native_stamp" -type f -print -quit)" ]; then
  echo "building the compiled core (native/)..."
  touch "$native_stamp.next"  # files changed during the build are newer than the stamp it leaves
  core_wheel=$(mktemp -d)
  if ! { scripts/_build_core.sh "$core_wheel" && .venv/bin/python -m pip install -q --disable-pip-version-check \
      --no-deps --force-reinstall "$core_wheel"/*.whl; } >.venv/.ringfence-native-build.log 2>&1; then
    cat .venv/.ringfence-native-build.log >&2
    echo "building the compiled core (native/) failed: see above" >&2
    rm -rf "$core_wheel"
    exit 1
  fi
  rm -rf "$core_wheel"
  mv "$native_stamp.next" "$native_stamp"
fi
