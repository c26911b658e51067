# Sourced by scripts/test: the programs the test suite needs beyond Python, as Debian/Ubuntu
# packages. As root with apt-get it installs what is missing; otherwise it names what is
# missing and the command that installs it (those tests then skip; in CI, CI=true, they fail).
#   chromium                      the dashboard's browser tests (Playwright drives it; never a downloaded browser)
#   default-jdk-headless, maven   a real Kafka broker, from Maven Central's jars, for the kafka runtime's tests
#   postgresql                    a throwaway PostgreSQL cluster (initdb) for the kafka runtime's store
missing=()
command -v "${RINGFENCE_CHROMIUM:-chromium}" >/dev/null || missing+=(chromium)
{ command -v java && command -v mvn; } >/dev/null || missing+=(default-jdk-headless maven)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing what the tests need beyond Python: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "The tests that need ${missing[*]} will skip. Install them with:" >&2
    echo "  sudo apt-get install ${missing[*]}" >&2
  fi
fi
