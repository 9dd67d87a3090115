#!/usr/bin/env bash
# Runs the whole test suite against real components: a throwaway PostgreSQL cluster and an
# in-memory Azurite (Table service only) on loopback (started here, removed on exit), real
# SQLite files, in-process SMTP and Key Vault fakes. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

cleanups=()
cleanup() { for c in "${cleanups[@]}"; do eval "$c" || true; done; }
trap cleanup EXIT

if [[ -z "${TEST_DATABASE_URL:-}" ]]; then
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [[ -z "$PGBIN" ]]; then
    echo "PostgreSQL server not found; installing it (Debian)..."
    if [[ $(id -u) -eq 0 ]]; then apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
    else sudo apt-get update -qq && sudo apt-get install -y -qq postgresql >/dev/null; fi
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  PGPORT=${PGPORT:-55432}
  while (echo > /dev/tcp/127.0.0.1/$PGPORT) 2>/dev/null; do PGPORT=$((PGPORT + 1)); done
  PGDIR=$(mktemp -d -t pgtest.XXXXXX)
  as_pg=()
  if [[ $(id -u) -eq 0 ]]; then chown postgres:postgres "$PGDIR"; chmod 755 "$PGDIR"; as_pg=(runuser -u postgres --); fi
  pg_cleanup() { "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate -w stop >/dev/null 2>&1 || true; rm -rf "$PGDIR"; }
  cleanups+=(pg_cleanup)
  "${as_pg[@]}" "$PGBIN/initdb" -D "$PGDIR/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
  "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w -t 30 \
    -o "-p $PGPORT -k $PGDIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" start >/dev/null
  export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PGPORT/postgres"
  echo "PostgreSQL for tests: 127.0.0.1:$PGPORT"
fi

# Azurite from npm, pinned (3.35.0 is the newest that supports Node 20), installed once into
# .tools/azurite; only its Table service, in memory, on 127.0.0.1:10002 when free (what
# UseDevelopmentStorage=true means), else the next free port. Tests that stop and restart an
# emulator start their own from TEST_AZURITE_BIN.
AZURITE_VERSION=3.35.0
AZURITE_DIR=${REPORT_HANDLER_TOOLS:-$PWD/.tools}/azurite
if [[ -z "${TEST_AZURITE_TABLE_PORT:-}" ]]; then
  if ! grep -qs "\"version\": \"$AZURITE_VERSION\"" "$AZURITE_DIR/node_modules/azurite/package.json"; then
    echo "installing azurite@$AZURITE_VERSION (npm) into $AZURITE_DIR..."
    mkdir -p "$AZURITE_DIR"
    (cd "$AZURITE_DIR" && npm install --no-audit --no-fund --silent "azurite@$AZURITE_VERSION" >/dev/null)
  fi
  export TEST_AZURITE_BIN="$AZURITE_DIR/node_modules/.bin/azurite-table"
  AZPORT=10002
  while (echo > /dev/tcp/127.0.0.1/$AZPORT) 2>/dev/null; do AZPORT=$((AZPORT + 1)); done
  AZLOG=$(mktemp -t azurite.XXXXXX)
  setsid "$TEST_AZURITE_BIN" --tableHost 127.0.0.1 --tablePort "$AZPORT" --inMemoryPersistence \
    --disableTelemetry --skipApiVersionCheck --silent >"$AZLOG" 2>&1 &
  AZPID=$!
  az_cleanup() { kill "$AZPID" 2>/dev/null; wait "$AZPID" 2>/dev/null; rm -f "$AZLOG"; }
  cleanups+=(az_cleanup)
  for _ in $(seq 1 300); do
    (echo > /dev/tcp/127.0.0.1/$AZPORT) 2>/dev/null && break
    kill -0 "$AZPID" 2>/dev/null || { cat "$AZLOG" >&2; echo "Azurite did not start" >&2; exit 1; }
    sleep 0.1
  done
  (echo > /dev/tcp/127.0.0.1/$AZPORT) 2>/dev/null || { echo "Azurite did not listen within 30 s" >&2; exit 1; }
  export TEST_AZURITE_TABLE_PORT=$AZPORT
  echo "Azurite (Table service) for tests: 127.0.0.1:$AZPORT"
fi

# The secret sweep: every handler process the tests start leaves its output here, and the
# suite's own output goes here too; none of it may contain a secret value used by the tests.
SWEEP_DIR=$(mktemp -d -t sweep.XXXXXX)
export REPORT_HANDLER_SWEEP_DIR="$SWEEP_DIR"
set +e
if [[ $# -eq 0 ]]; then set -- --all-targets; fi
cargo test "$@" 2>&1 | tee "$SWEEP_DIR/cargo-test.log"
status=${PIPESTATUS[0]}
set -e
logs=$(ls "$SWEEP_DIR" | wc -l)
if hits=$(grep -l -F -f tests/secret-values.txt "$SWEEP_DIR"/* 2>/dev/null); then
  echo "secret sweep: FAILED: a secret value used by the tests appears in:" >&2
  echo "$hits" >&2
  rm -rf "$SWEEP_DIR"
  exit 1
fi
echo "secret sweep: $(wc -l < tests/secret-values.txt) secret values, $logs output files, no hit"
rm -rf "$SWEEP_DIR"
exit "$status"
