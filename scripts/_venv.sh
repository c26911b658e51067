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
  # the setuptools that Python 3.11's venv bundles has known advisories, and nothing here needs it
  .venv/bin/python -m pip uninstall -qq -y setuptools
  .venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r "$LOCK"
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  touch "$stamp"
fi
