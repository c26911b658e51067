#!/usr/bin/env bash
# The suite's pytest runs (scripts/test): on two workers (pytest-xdist, a test file to a worker),
# then the tests marked `serial` alone: they assert wall-clock bounds that a second worker on the
# other core stretches. Arguments that pick tests (a path or node id, -k, -m, --lf) run them as
# given, one plain pytest; other options (e.g. --durations=30, as .ci/run passes) go to both
# phases, and a JUnit XML report to two files: the serial phase's is named <name>.serial.xml.
# $PYTEST is the pytest to run (a test's stand-in; .venv/bin/pytest by default).
set -uo pipefail
pytest="${PYTEST:-.venv/bin/pytest}"
# pytest's long options whose value may be the next argument (a path among them is no selection)
takes_value=(--rootdir --basetemp --confcutdir --ignore --ignore-glob --junitxml --junit-xml
  --junit-prefix --durations --durations-min --maxfail --tb --log-file --log-level --log-cli-level
  --log-file-level --override-ini --pythonwarnings --config-file --dist --numprocesses
  --import-mode --capture --color --show-capture --hypothesis-profile --hypothesis-seed
  --rsyncdir --rsyncignore --screenshots)
value_next=0
for arg in "$@"; do
  if [ "$value_next" -eq 1 ]; then value_next=0; continue; fi
  case "$arg" in
    --lf | --last-failed | --sw | --stepwise | --sw-skip | --stepwise-skip | --deselect*) exec "$pytest" "$@" ;;
    --*=*) ;;
    --*) if [[ " ${takes_value[*]} " == *" $arg "* ]]; then value_next=1; fi ;;
    -?*)  # short options, maybe bundled (-xk name): the first that takes a value takes the rest
      letters=${arg#-}
      while [ -n "$letters" ]; do
        letter=${letters:0:1}
        letters=${letters:1}
        case "$letter" in
          k | m) exec "$pytest" "$@" ;;
          c | p | o | W | n | r) if [ -z "$letters" ]; then value_next=1; fi; break ;;
        esac
      done
      ;;
    *) if [ -e "${arg%%::*}" ]; then exec "$pytest" "$@"; fi ;;
  esac
done
# the serial phase's arguments: a JUnit report of its own beside the first phase's, and no
# workers (-n, --dist: the first phase's)
serial_args=()
skip_next=0
rename_next=0
for arg in "$@"; do
  if [ "$skip_next" -eq 1 ]; then skip_next=0; continue; fi
  if [ "$rename_next" -eq 1 ]; then serial_args+=("${arg%.xml}.serial.xml"); rename_next=0; continue; fi
  case "$arg" in
    --numprocesses | --dist) skip_next=1 ;;
    --numprocesses=* | --dist=*) ;;
    --junitxml | --junit-xml) rename_next=1; serial_args+=("$arg") ;;
    --junitxml=* | --junit-xml=*) serial_args+=("${arg%.xml}.serial.xml") ;;
    --*) serial_args+=("$arg") ;;
    -?*)  # short options, maybe bundled: without n and its value (-xn4, -vn 4)
      letters=${arg#-}
      kept=""
      while [ -n "$letters" ]; do
        letter=${letters:0:1}
        letters=${letters:1}
        case "$letter" in
          n) if [ -z "$letters" ]; then skip_next=1; fi; letters="" ;;
          c | p | o | W | r | k | m) kept+="$letter$letters"; letters="" ;;
          *) kept+="$letter" ;;
        esac
      done
      if [ -n "$kept" ]; then serial_args+=("-$kept"); fi
      ;;
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
