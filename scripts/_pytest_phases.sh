#!/usr/bin/env bash
# The suite's pytest runs (scripts/test): on two workers (pytest-xdist, a test file to a worker),
# then the tests marked `serial` alone: they assert wall-clock bounds that a second worker on the
# other core stretches. Arguments that pick tests (a path or node id, -k, -m, --lf) run them as
# given, one plain pytest; other options (e.g. --durations=30, as .ci/run passes) go to both
# phases, and a JUnit XML report to two files: the serial phase's is named <name>.serial.xml.
# $PYTEST is the pytest to run (a test's stand-in; .venv/bin/pytest by default).
set -uo pipefail
pytest="${PYTEST:-.venv/bin/pytest}"
# pytest's options whose value may be the next argument (a path among them is no selection)
takes_value=(-c -p -o -W -n -r --rootdir --basetemp --confcutdir --ignore --ignore-glob --junitxml
  --junit-xml --junit-prefix --durations --durations-min --maxfail --tb --log-file --log-level
  --log-cli-level --log-file-level --override-ini --pythonwarnings --config-file --dist
  --import-mode --capture --color --show-capture --hypothesis-profile --hypothesis-seed
  --screenshots)
value_next=0
for arg in "$@"; do
  if [ "$value_next" -eq 1 ]; then value_next=0; continue; fi
  case "$arg" in
    -k | -k?* | -m | -m?* | --lf | --last-failed | --sw | --stepwise | --deselect*) exec "$pytest" "$@" ;;
    -*) if [[ " ${takes_value[*]} " == *" $arg "* ]]; then value_next=1; fi ;;
    *) if [ -e "${arg%%::*}" ]; then exec "$pytest" "$@"; fi ;;
  esac
done
# the serial phase's arguments: a JUnit report of its own, beside the first phase's
serial_args=()
value_next=""
for arg in "$@"; do
  if [ -n "$value_next" ]; then serial_args+=("${arg%.xml}.serial.xml"); value_next=""; continue; fi
  case "$arg" in
    --junitxml | --junit-xml) value_next=1; serial_args+=("$arg") ;;
    --junitxml=* | --junit-xml=*) serial_args+=("${arg%.xml}.serial.xml") ;;
    *) serial_args+=("$arg") ;;
  esac
done
status=0
"$pytest" -n 2 --dist loadfile -m "not serial" "$@" || status=$?
if [ "$status" -eq 2 ]; then exit 2; fi  # interrupted (Ctrl-C): no second phase
serial=0
"$pytest" -m serial "${serial_args[@]}" || serial=$?
# 5 is "no tests collected": a selection may leave one phase empty, not both
if [ "$status" -eq 5 ] && [ "$serial" -ne 5 ]; then status=0; fi
if [ "$serial" -eq 5 ] && [ "$status" -ne 5 ]; then serial=0; fi
if [ "$status" -eq 0 ]; then status=$serial; fi
exit "$status"
