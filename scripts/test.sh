#!/usr/bin/env bash
# Runs the whole test suite against real components: a throwaway PostgreSQL cluster on
# loopback (started here, removed on exit), real SQLite files, in-process SMTP and Key Vault
# fakes. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

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
  cleanup() { "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate -w stop >/dev/null 2>&1 || true; rm -rf "$PGDIR"; }
  trap cleanup EXIT
  "${as_pg[@]}" "$PGBIN/initdb" -D "$PGDIR/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
  "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w -t 30 \
    -o "-p $PGPORT -k $PGDIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" start >/dev/null
  export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PGPORT/postgres"
  echo "PostgreSQL for tests: 127.0.0.1:$PGPORT"
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
