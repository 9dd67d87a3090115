#!/usr/bin/env bash
# Benchmarks (issue #8): readiness, invocation overhead against a bare-hyper baseline, report
# throughput on SQLite and PostgreSQL, memory, binary size, and Key Vault calls per 10,000
# requests. Prints the tables and appends a dated section to BENCHMARKS.md.
#
# Usage: scripts/bench.sh            (after the README's setup; builds the release binaries)
# Env:   BENCH_DURATION=5s           wrk duration per cell
#        BENCH_OUT=BENCHMARKS.md     where the section is appended ("-" = print only)
#        BENCH_DATABASE_URL=postgres://...  use this server instead of a throwaway cluster
#                                           (tables bench_rows_* are created and dropped)
#        PGPORT=55442                first port tried for the throwaway cluster
#
# Issue 19 adds: exports of 10k/100k/1M rows through the API in forwarding mode (a fresh
# handler per cell, its peak RSS) beside the databases' own exports of the same query
# (`sqlite3 -csv/-json`, `psql \copy ... CSV` / `row_to_json`), and the Node.js peer in bench/
# (better-sqlite3, npm) at 1 and 16 connections, uncached and cached.
#
# All traffic is on 127.0.0.1. The measurements take about 6-9 minutes and are bounded: every
# step has a timeout, and steps are skipped once 14 minutes have passed (the release build
# before it is not counted). The load generator is wrk (Debian package; installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=${BENCH_DURATION:-5s}
OUT=${BENCH_OUT:-BENCHMARKS.md}
BUDGET_S=840
KEY="bench-key-7c1e93d0-padded-to-32-chars"

say() { printf '%s\n' "$*" >&2; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

if ! command -v wrk >/dev/null 2>&1; then
  say "wrk not found; installing it (Debian)..."
  as_root apt-get update -qq && as_root apt-get install -y -qq wrk >/dev/null
fi
command -v curl >/dev/null 2>&1 || { as_root apt-get update -qq && as_root apt-get install -y -qq curl >/dev/null; }

say "building the release binary and the bench programs..."
# Two invocations: the handler measured is the one `cargo build --release` makes (dev-dependency
# features, which the bench programs need, would otherwise be unified into it).
cargo build --release --quiet --example bench --example bench_baseline
cargo build --release --quiet --bin handler
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
EXE=$TARGET_DIR/release/handler
BENCH=$TARGET_DIR/release/examples/bench
BASELINE=$TARGET_DIR/release/examples/bench_baseline

# The Node.js peer (bench/): Node 20 and better-sqlite3 from npm, built against the installed
# Node's headers (the registry is the only network; no prebuilt binary can be downloaded).
PEER=0
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  if ! (cd bench && node -e "require('better-sqlite3')" >/dev/null 2>&1); then
    say "installing the Node.js peer's packages (bench/, npm ci)..."
    (cd bench && npm_config_nodedir=/usr npm ci --no-audit --no-fund --foreground-scripts >/dev/null 2>&1 \
      && npm_config_nodedir=/usr npm rebuild better-sqlite3 --foreground-scripts >/dev/null 2>&1) || true
  fi
  (cd bench && node -e "require('better-sqlite3')" >/dev/null 2>&1) && PEER=1
fi
[[ $PEER == 1 ]] || say "the Node.js peer is unavailable (node, npm or better-sqlite3 missing): its rows are skipped"

WORK=$(mktemp -d -t rhbench.XXXXXX)
PIDS=()
PGBIN="" PGDIR="" as_pg=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ -n "$PGDIR" ]]; then
    "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$PGDIR"
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SECONDS=0
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
over_budget() { (( SECONDS > BUDGET_S )); }

# `key=value` from the RESULT line of a bench program's output.
field() { sed -n 's/^RESULT //p' <<<"$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }
free_port() { local p=$1; while (echo >/dev/tcp/127.0.0.1/"$p") 2>/dev/null; do p=$((p + 1)); done; echo "$p"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
wait_http() { # url, pid
  for _ in $(seq 1 1000); do
    curl -fs -o /dev/null --max-time 1 "$1" && return 0
    kill -0 "$2" 2>/dev/null || { say "process $2 exited"; return 1; }
    sleep 0.01
  done
  say "no answer from $1"; return 1
}
met() { if [[ "$1" == 1 ]]; then echo "met"; else echo "**missed**"; fi; }

MD=$WORK/section.md
{
  echo
  echo "## $(date -u +%Y-%m-%dT%H:%MZ) — $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo
  echo "- Commit: \`$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\`$(git diff --quiet HEAD 2>/dev/null || echo ' (with local changes)'), $(rustc --version), $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
  echo "- Memory: $(awk '/MemTotal/ {printf "%.1f GB", $2/1048576}' /proc/meminfo); load average at start: $LOAD_BEFORE"
  echo "- Load generator and server share the machine's cores; wrk cells are ${DURATION} each."
} >"$MD"

# ---------------------------------------------------------------------------------------------
say "== 1. readiness (30 starts)"
R=$(timeout 120 "$BENCH" readiness --runs 30 --exe "$EXE")
say "$(grep -v '^RESULT' <<<"$R")"
READY_MED=$(field "$R" median_ms); READY_P95=$(field "$R" p95_ms)

# ---------------------------------------------------------------------------------------------
say "== 2. invocation overhead"
APP=$WORK/app
mkdir -p "$APP/HttpTrigger" "$APP/Deliveries" "$APP/ReportDeliveries" "$APP/Health" "$APP/NightlyReport"
cp host.json reports.toml "$APP/"
cp HttpTrigger/function.json "$APP/HttpTrigger/"; cp Health/function.json "$APP/Health/"; cp Deliveries/function.json "$APP/Deliveries/"; cp ReportDeliveries/function.json "$APP/ReportDeliveries/"; cp NightlyReport/function.json "$APP/NightlyReport/"
HPORT=$(free_port 17171)
(cd "$APP" && exec env -i PATH="$PATH" FUNCTIONS_CUSTOMHANDLER_PORT="$HPORT" FUNCTIONS_APP_ROOT_PATH="$APP" \
  API_KEYS="$KEY" "$EXE" >"$WORK/handler.log" 2>&1) &
HPID=$!; PIDS+=("$HPID")
wait_http "http://127.0.0.1:$HPORT/" "$HPID"
sleep 0.5
RSS_START=$(rss_kib "$HPID")
BPORT=$(free_port $((HPORT + 1)))
"$BASELINE" "$BPORT" >/dev/null 2>&1 &
BPID=$!; PIDS+=("$BPID")
wait_http "http://127.0.0.1:$BPORT/" "$BPID"

DAY=$(date -u -d '2 days ago' +%F)
H=http://127.0.0.1:$HPORT
LIST_URL="$H/api/reports"
REPORT_URL="$H/api/reports/daily-sales?date=$DAY"
curl -fsS -o /dev/null --max-time 30 -H "X-API-Key: $KEY" "$LIST_URL"
curl -fsS -o /dev/null --max-time 30 -H "X-API-Key: $KEY" "$REPORT_URL"   # creates the sample DB, fills the cache

# RSS after 10k requests: 5,000 list + 5,000 cached report requests (forwarding form).
timeout 120 "$BENCH" load --url "$LIST_URL" --key "$KEY" --requests 5000 --concurrency 16 >/dev/null
timeout 120 "$BENCH" load --url "$REPORT_URL" --key "$KEY" --requests 5000 --concurrency 16 >/dev/null
RSS_10K=$(rss_kib "$HPID")

timeout 30 "$BENCH" envelope --path /api/reports --key "$KEY" --out "$WORK/list.lua" --check "$H/HttpTrigger" >/dev/null
timeout 30 "$BENCH" envelope --path /api/reports/daily-sales --name daily-sales --query "date=$DAY" \
  --key "$KEY" --out "$WORK/report.lua" --check "$H/HttpTrigger" >/dev/null

# wrk_cell NAME CONNS ARGS... → sets RPS[NAME/CONNS], P50, P99 (ms)
declare -A RPS P50 P99 BAD
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'; }
wrk_cell() {
  local name=$1 c=$2; shift 2
  local t=2; (( c < 2 )) && t=1
  local out
  out=$(timeout 60 wrk --latency -t"$t" -c"$c" -d"$DURATION" --timeout 5s "$@")
  RPS[$name/$c]=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
  P50[$name/$c]=$(to_ms "$(awk '$1 == "50%" {print $2; exit}' <<<"$out")")
  P99[$name/$c]=$(to_ms "$(awk '$1 == "99%" {print $2; exit}' <<<"$out")")
  local non2xx errs
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out"); errs=$(awk '/Socket errors/ {print $0}' <<<"$out")
  BAD[$name/$c]="${non2xx:-0}${errs:+ ($errs)}"
  say "$(printf '%-16s c=%-3s %8s req/s  p50 %7s ms  p99 %7s ms  non-2xx %s' "$name" "$c" "${RPS[$name/$c]}" "${P50[$name/$c]}" "${P99[$name/$c]}" "${BAD[$name/$c]}")"
}
CONNS=(1 16 64)
for c in "${CONNS[@]}"; do
  over_budget && break
  wrk_cell baseline "$c" "http://127.0.0.1:$BPORT/"
  wrk_cell list-fwd "$c" -H "X-API-Key: $KEY" "$LIST_URL"
  wrk_cell list-payload "$c" -s "$WORK/list.lua" "$H/HttpTrigger"
  wrk_cell report-fwd "$c" -H "X-API-Key: $KEY" "$REPORT_URL"
  wrk_cell report-payload "$c" -s "$WORK/report.lua" "$H/HttpTrigger"
done
RSS_AFTER_WRK=$(rss_kib "$HPID")

# The Node.js peer on the same SQLite file (the sample database the handler created), same
# request, same key check; uncached = today's window (still open: run on every request),
# cached = the ended window above.
TODAY=$(date -u +%F)
PEER_CONNS=(1 16)
if [[ $PEER == 1 ]] && ! over_budget; then
  NPORT=$(free_port $((HPORT + 2)))
  (cd "$ROOT/bench" && exec env -i PATH="$PATH" API_KEYS="$KEY" FUNCTIONS_CUSTOMHANDLER_PORT="$NPORT" \
    node peer.js "$APP" >"$WORK/peer.log" 2>&1) &
  NPID=$!; PIDS+=("$NPID")
  if wait_http "http://127.0.0.1:$NPORT/" "$NPID"; then
    N=http://127.0.0.1:$NPORT
    curl -fsS -o /dev/null --max-time 30 -H "X-API-Key: $KEY" "$N/api/reports/daily-sales?date=$DAY"
    for c in "${PEER_CONNS[@]}"; do
      over_budget && break
      wrk_cell ours-uncached "$c" -H "X-API-Key: $KEY" "$H/api/reports/daily-sales?date=$TODAY"
      wrk_cell node-uncached "$c" -H "X-API-Key: $KEY" "$N/api/reports/daily-sales?date=$TODAY"
      wrk_cell ours-cached "$c" -H "X-API-Key: $KEY" "$REPORT_URL"
      wrk_cell node-cached "$c" -H "X-API-Key: $KEY" "$N/api/reports/daily-sales?date=$DAY"
    done
    NODE_RSS=$(rss_kib "$NPID")
  fi
  kill "$NPID" 2>/dev/null || true
  wait "$NPID" 2>/dev/null || true
fi
kill "$BPID" "$HPID" 2>/dev/null || true
wait "$BPID" "$HPID" 2>/dev/null || true

ratio() { awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b; else print "n/a" }'; }
{
  echo
  echo "### 1. Readiness (process start to the first 200 on GET /, 30 starts)"
  echo
  echo "| median | p95 | target | |"
  echo "|---|---|---|---|"
  echo "| ${READY_MED} ms | ${READY_P95} ms | median < 10 ms | $(met "$(awk -v m="$READY_MED" 'BEGIN { print (m < 10) }')") |"
  echo
  echo "### 2. Invocation overhead (wrk, ${DURATION} per cell; ratio = handler req/s ÷ bare-hyper req/s at the same connections)"
  echo
  echo "Cached report: \`GET /api/reports/daily-sales?date=$DAY\` on the sample SQLite database (4 sections). Payload mode = \`POST /HttpTrigger\` with the host's envelope; forwarding = the client's GET."
  echo
  echo "| request | mode | conns | req/s | p50 ms | p99 ms | vs baseline | non-2xx |"
  echo "|---|---|---|---|---|---|---|---|"
  for c in "${CONNS[@]}"; do
    [[ -n "${RPS[baseline/$c]:-}" ]] || continue
    echo "| bare hyper, fixed 200 | — | $c | ${RPS[baseline/$c]} | ${P50[baseline/$c]} | ${P99[baseline/$c]} | 100% | ${BAD[baseline/$c]} |"
    for n in list-fwd list-payload report-fwd report-payload; do
      case $n in
        list-*) what="GET /api/reports" ;; *) what="GET /api/reports/{name}?date= (cached)" ;;
      esac
      case $n in *-fwd) mode=forwarding ;; *) mode=payload ;; esac
      echo "| $what | $mode | $c | ${RPS[$n/$c]} | ${P50[$n/$c]} | ${P99[$n/$c]} | $(ratio "${RPS[$n/$c]}" "${RPS[baseline/$c]}") | ${BAD[$n/$c]} |"
    done
  done
  echo
  echo "| target | measured | |"
  echo "|---|---|---|"
  for m in fwd payload; do
    r=$(awk -v a="${RPS[list-$m/16]:-0}" -v b="${RPS[baseline/16]:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print 0 }')
    echo "| GET /api/reports ($m) at 16 conns ≥ 70% of baseline | $(ratio "${RPS[list-$m/16]:-0}" "${RPS[baseline/16]:-0}") | $(met "$(awk -v r="$r" 'BEGIN { print (r >= 0.7) }')") |"
  done
  for m in fwd payload; do
    p=${P99[report-$m/16]:-999}
    echo "| cached report ($m) p99 at 16 conns < 2 ms | ${p} ms | $(met "$(awk -v p="$p" 'BEGIN { print (p < 2) }')") |"
  done
  r=$(awk -v a="${RPS[report-payload/16]:-0}" -v b="${RPS[report-fwd/16]:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print 0 }')
  echo "| cached report at 16 conns: payload ≥ 70% of forwarding req/s (issue 19) | $(ratio "${RPS[report-payload/16]:-0}" "${RPS[report-fwd/16]:-0}") | $(met "$(awk -v r="$r" 'BEGIN { print (r >= 0.7) }')") |"
  if [[ -n "${RPS[node-cached/1]:-}" ]]; then
    echo
    echo "### 2b. The Node.js peer (bench/peer.js: Node $(node --version), better-sqlite3 12; same SQLite file, same request, same key check)"
    echo
    echo "Forwarding form for both: \`GET /api/reports/daily-sales?date=\` (JSON). Uncached = today's window, still open, so both run the four section queries on every request (ours shares one run among concurrent identical requests: single flight, a product feature); cached = the ended window of 2 days ago, whose rendered body both keep with its ETag."
    echo
    echo "| request | conns | ours req/s | ours p99 ms | Node req/s | Node p99 ms | ours ÷ Node |"
    echo "|---|---|---|---|---|---|---|"
    for c in "${PEER_CONNS[@]}"; do
      for k in uncached cached; do
        [[ -n "${RPS[node-$k/$c]:-}" ]] || continue
        echo "| $k | $c | ${RPS[ours-$k/$c]} | ${P99[ours-$k/$c]} | ${RPS[node-$k/$c]} | ${P99[node-$k/$c]} | $(awk -v a="${RPS[ours-$k/$c]:-0}" -v b="${RPS[node-$k/$c]:-0}" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "n/a" }') |"
      done
    done
    echo
    echo "Node peer RSS after its cells: $(mb "${NODE_RSS:-0}") MB (ours after the whole matrix: $(mb "$RSS_AFTER_WRK") MB)."
  fi
} >>"$MD"

# ---------------------------------------------------------------------------------------------
say "== 3. report throughput"
SIZES=(10000 100000 1000000)
ENGINES=(sqlite)
SQLITE_URL="sqlite:$WORK/bench.sqlite"
PG_URL=${BENCH_DATABASE_URL:-}
if [[ -z "$PG_URL" ]]; then
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [[ -z "$PGBIN" ]]; then
    say "PostgreSQL server not found; installing it (Debian)..."
    as_root apt-get update -qq && as_root apt-get install -y -qq postgresql >/dev/null
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  PGP=$(free_port "${PGPORT:-55442}")
  PGDIR=$(mktemp -d -t rhbenchpg.XXXXXX)
  if [[ $(id -u) -eq 0 ]]; then chown postgres:postgres "$PGDIR"; chmod 755 "$PGDIR"; as_pg=(runuser -u postgres --); fi
  "${as_pg[@]}" "$PGBIN/initdb" -D "$PGDIR/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
  "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w -t 30 \
    -o "-p $PGP -k $PGDIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" start >/dev/null
  PG_URL="postgres://postgres@127.0.0.1:$PGP/postgres"
fi
ENGINES+=(postgres)
declare -A TSEC TRPS TRSS TOUT
for e in "${ENGINES[@]}"; do
  url=$SQLITE_URL; [[ $e == postgres ]] && url=$PG_URL
  for n in "${SIZES[@]}"; do
    over_budget && break
    timeout 180 "$BENCH" report-setup --url "$url" --rows "$n" >/dev/null
    for f in csv json html; do
      over_budget && break
      if R=$(timeout 180 "$BENCH" report --url "$url" --rows "$n" --format "$f"); then
        say "$(grep -v '^RESULT' <<<"$R")"
        TSEC[$e/$n/$f]=$(field "$R" seconds); TRPS[$e/$n/$f]=$(field "$R" rows_per_s)
        TRSS[$e/$n/$f]=$(field "$R" peak_rss_kib); TOUT[$e/$n/$f]=$(field "$R" out_bytes)
      else
        say "report $e $n $f failed or timed out"
      fi
    done
  done
done
# ---------------------------------------------------------------------------------------------
say "== 3b. presentation: chart + XLSX (SQLite)"
declare -A PSEC PRSS PXLSX
for case in "10000 chart-xlsx" "1000000 xlsx-stream" "1000000 xlsx-memory"; do
  read -r n m <<<"$case"
  over_budget && break
  timeout 300 "$BENCH" report-setup --url "$SQLITE_URL" --rows "$n" >/dev/null
  if R=$(timeout 300 "$BENCH" present --url "$SQLITE_URL" --rows "$n" --mode "$m"); then
    say "$(grep -v '^RESULT' <<<"$R")"
    PSEC[$n/$m]=$(field "$R" seconds); PRSS[$n/$m]=$(field "$R" peak_rss_kib); PXLSX[$n/$m]=$(field "$R" xlsx_bytes)
  else
    say "present $n $m failed or timed out"
  fi
done
{
  echo
  echo "### 3b. Presentation: chart and workbook (SQLite; labels, a currency column, totals, a line chart)"
  echo
  echo "\`chart-xlsx\`: the section in memory (as the email and the API hold it), its chart PNG and its workbook. \`xlsx-stream\`: rows from the database cursor straight into the workbook builder (constant-memory sheets). \`xlsx-memory\`: the workbook from the whole table in memory (what the email attachment does; \`?format=xlsx\` builds it so only up to 20,000 rows, larger answers stream as in section 6). Each cell is its own process; peak RSS is its \`VmHWM\`."
  echo
  echo "| rows | mode | seconds | workbook MB | peak RSS MB |"
  echo "|---|---|---|---|---|"
  for case in "10000 chart-xlsx" "1000000 xlsx-stream" "1000000 xlsx-memory"; do
    read -r n m <<<"$case"
    [[ -n "${PSEC[$n/$m]:-}" ]] || continue
    echo "| $n | $m | ${PSEC[$n/$m]} | $(awk -v b="${PXLSX[$n/$m]}" 'BEGIN { printf "%.1f", b / 1e6 }') | $(mb "${PRSS[$n/$m]}") |"
  done
  echo
  echo "| target | measured | |"
  echo "|---|---|---|"
  s=${PSEC[10000/chart-xlsx]:-999}
  echo "| chart + XLSX of a 10,000-row section < 1 s | $s s | $(met "$(awk -v s="$s" 'BEGIN { print (s < 1) }')") |"
  for m in xlsx-stream xlsx-memory; do
    k=${PRSS[1000000/$m]:-999999}
    echo "| 1M-row XLSX ($m) peak RSS < 100 MB | $(mb "$k") MB | $(met "$(awk -v k="$k" 'BEGIN { print (k < 102400) }')") |"
  done
} >>"$MD"

if [[ -n "${BENCH_DATABASE_URL:-}" ]]; then
  for n in "${SIZES[@]}"; do
    timeout 30 "$BENCH" report-setup --url "$PG_URL" --rows "$n" --drop >/dev/null 2>&1 || true
  done
fi
{
  echo
  echo "### 3. Report throughput (one section: id, sku, quantity, amount, created_at)"
  echo
  echo "CSV and JSON: the streaming path (\`DataSource::stream_query\` → \`CsvRowWriter\` / \`JsonDocWriter\`, rows lent, not copied). Email HTML: \`run_query\` (the whole table) → \`render_html\` (HTML shows the first 50 rows, as the email body does). Each cell is its own process; peak RSS is its \`VmHWM\`."
  echo
  echo "| engine | rows | format | seconds | rows/s | output MB | peak RSS MB |"
  echo "|---|---|---|---|---|---|---|"
  for e in "${ENGINES[@]}"; do for n in "${SIZES[@]}"; do for f in csv json html; do
    [[ -n "${TSEC[$e/$n/$f]:-}" ]] || continue
    echo "| $e | $n | $f | ${TSEC[$e/$n/$f]} | ${TRPS[$e/$n/$f]} | $(awk -v b="${TOUT[$e/$n/$f]}" 'BEGIN { printf "%.1f", b / 1e6 }') | $(mb "${TRSS[$e/$n/$f]}") |"
  done; done; done
  echo
  echo "| target | measured | |"
  echo "|---|---|---|"
  for e in "${ENGINES[@]}"; do
    r=${TRPS[$e/1000000/csv]:-0}; k=${TRSS[$e/1000000/csv]:-999999}
    echo "| $e 1M-row CSV ≥ 1M rows/s | $r rows/s | $(met "$(awk -v r="$r" 'BEGIN { print (r >= 1000000) }')") |"
    echo "| $e 1M-row CSV peak RSS < 64 MB | $(mb "$k") MB | $(met "$(awk -v k="$k" 'BEGIN { print (k < 65536) }')") |"
    a=${TRSS[$e/10000/csv]:-0}
    echo "| $e CSV peak RSS flat in the row count (10k → 1M) | $(mb "$a") → $(mb "$k") MB | $(met "$(awk -v a="$a" -v k="$k" 'BEGIN { print (k < a * 1.25 + 4096) }')") |"
    a=${TRSS[$e/10000/json]:-0}; k=${TRSS[$e/1000000/json]:-999999}
    echo "| $e JSON peak RSS flat in the row count (10k → 1M) | $(mb "$a") → $(mb "$k") MB | $(met "$(awk -v a="$a" -v k="$k" 'BEGIN { print (k < a * 1.25 + 4096) }')") |"
  done
} >>"$MD"

# ---------------------------------------------------------------------------------------------
say "== 6. exports through the API vs the databases' own tools"
# One section, the same query for every exporter: the bench table, all rows.
EXQ() { echo "SELECT id, sku, quantity, amount, created_at FROM bench_rows_$1"; }
EXP=$WORK/exports
mkdir -p "$EXP/HttpTrigger" "$EXP/Health" "$EXP/NightlyReport"
cp host.json "$EXP/"
cp HttpTrigger/function.json "$EXP/HttpTrigger/"; cp Health/function.json "$EXP/Health/"; cp NightlyReport/function.json "$EXP/NightlyReport/"
for n in "${SIZES[@]}"; do
  cat >>"$EXP/reports.toml" <<TOML
[[reports]]
name = "bench-$n"
title = "Bench $n"
schedule = "0 0 6 * * *"
time_zone = "UTC"
window = "previous_day"
recipients = ["bench@example.com"]

[[reports.sections]]
title = "Rows"
query = "$(EXQ "$n")"

TOML
done
# secs_since T0 → seconds elapsed (3 decimals)
now_s() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
declare -A XSEC XRSS
# api_export ENGINE URL N FORMAT: a fresh handler (its VmHWM is this export's peak), one
# forwarding-mode request, the body to /dev/null.
api_export() {
  local e=$1 url=$2 n=$3 f=$4 port pid t0 t1 got
  port=$(free_port $((HPORT + 10)))
  (cd "$EXP" && exec env -i PATH="$PATH" FUNCTIONS_CUSTOMHANDLER_PORT="$port" FUNCTIONS_APP_ROOT_PATH="$EXP" \
    API_KEYS="$KEY" DATABASE_URL="$url" QUERY_TIMEOUT=300s "$EXE" >"$WORK/export.log" 2>&1) &
  pid=$!; PIDS+=("$pid")
  wait_http "http://127.0.0.1:$port/" "$pid" || return 1
  # Best of $REPS requests (the machine is shared; the first one also decides "large").
  local best="" r
  for ((r = 0; r < REPS; r++)); do
    t0=$(now_s)
    got=$(curl -fsS -o /dev/null -w '%{size_download}' --max-time 300 -H "X-API-Key: $KEY" \
      "http://127.0.0.1:$port/api/reports/bench-$n?date=$DAY&format=$f") || got=0
    t1=$(now_s)
    s=$(elapsed "$t0" "$t1")
    if [[ -z "$best" ]] || awk -v a="$s" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$s; fi
  done
  XSEC[$e/$n/api-$f]=$best
  XRSS[$e/$n/api-$f]=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
  kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  say "$(printf 'api %-8s %8s rows %-4s %7s s  %8s bytes  peak RSS %s KiB' "$e" "$n" "$f" "${XSEC[$e/$n/api-$f]}" "$got" "${XRSS[$e/$n/api-$f]}")"
}
# tool_export ENGINE N NAME CMD...: the database's own export, stdout to /dev/null.
tool_export() {
  local e=$1 n=$2 name=$3 out r best="" rss=0; shift 3
  for ((r = 0; r < REPS; r++)); do
    out=$( { timeout 300 /usr/bin/time -f "TIME %e %M" "$@" >/dev/null; } 2>&1 | grep '^TIME' | tail -1) || true
    s=$(awk '{print $2}' <<<"$out"); k=$(awk '{print $3}' <<<"$out")
    if [[ -z "$best" ]] || awk -v a="$s" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$s; fi
    (( ${k:-0} > rss )) && rss=$k
  done
  XSEC[$e/$n/$name]=$best
  XRSS[$e/$n/$name]=$rss
  say "$(printf 'tool %-8s %8s rows %-12s %7s s  peak RSS %s KiB' "$e" "$n" "$name" "${XSEC[$e/$n/$name]}" "${XRSS[$e/$n/$name]}")"
}
SQLITE_FILE=${SQLITE_URL#sqlite:}
REPS=${BENCH_EXPORT_REPS:-3}
for e in "${ENGINES[@]}"; do
  url=$SQLITE_URL; [[ $e == postgres ]] && url=$PG_URL
  for n in "${SIZES[@]}"; do
    over_budget && break
    timeout 180 "$BENCH" report-setup --url "$url" --rows "$n" >/dev/null || continue
    api_export "$e" "$url" "$n" csv || true
    api_export "$e" "$url" "$n" json || true
    # The workbook through the API: built from the cursor once over 20,000 rows (SQLite only;
    # the builder's cost does not depend on the engine).
    [[ $e == sqlite ]] && { api_export "$e" "$url" "$n" xlsx || true; }
    [[ $n == 1000000 ]] || continue
    if [[ $e == sqlite ]]; then
      tool_export "$e" "$n" tool-csv sqlite3 -csv -header "$SQLITE_FILE" "$(EXQ "$n")"
      tool_export "$e" "$n" tool-json sqlite3 -json "$SQLITE_FILE" "$(EXQ "$n")"
    else
      tool_export "$e" "$n" tool-csv psql -X -q "$url" -c "\\copy ($(EXQ "$n")) TO STDOUT WITH CSV HEADER"
      tool_export "$e" "$n" tool-json psql -X -q "$url" -c "\\copy (SELECT row_to_json(t) FROM ($(EXQ "$n")) t) TO STDOUT"
    fi
  done
done
{
  echo
  echo "### 6. Exports through the API (forwarding mode) beside the databases' own exports (issue 19)"
  echo
  echo "Same query for all: \`$(EXQ N)\` (5 columns). API: a fresh handler per cell, \`DATABASE_URL\` on the bench database, \`GET /api/reports/bench-N?date=…&format=csv|json|xlsx\` (XLSX on SQLite only) read by curl to /dev/null, best of $REPS requests per handler (the machine is shared); results over 20,000 rows stream from the cursor (the first 20,000 are read once before, to decide). Tools (best of $REPS runs): \`sqlite3 -csv -header\` / \`sqlite3 -json\`, \`psql -c \"\\copy (…) TO STDOUT WITH CSV HEADER\"\` / \`\\copy (SELECT row_to_json(t) FROM (…) t) TO STDOUT\`, output to /dev/null. Peak RSS: the handler's \`VmHWM\`, the tools' maximum RSS (\`/usr/bin/time\`)."
  echo
  echo "| engine | rows | exporter | seconds | rows/s | peak RSS MB |"
  echo "|---|---|---|---|---|---|"
  for e in "${ENGINES[@]}"; do for n in "${SIZES[@]}"; do for x in api-csv api-json api-xlsx tool-csv tool-json; do
    [[ -n "${XSEC[$e/$n/$x]:-}" ]] || continue
    case "$e/$x" in
      */api-*) what="API, ${x#api-}" ;; sqlite/tool-csv) what="sqlite3 -csv" ;; sqlite/tool-json) what="sqlite3 -json" ;;
      postgres/tool-csv) what="psql \\copy CSV" ;; *) what="psql \\copy row_to_json" ;;
    esac
    echo "| $e | $n | $what | ${XSEC[$e/$n/$x]} | $(awk -v n="$n" -v s="${XSEC[$e/$n/$x]}" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "n/a" }') | $(mb "${XRSS[$e/$n/$x]:-0}") |"
  done; done; done
  echo
  echo "| target | measured | |"
  echo "|---|---|---|"
  for e in "${ENGINES[@]}"; do
    for f in csv json; do
      a=${XSEC[$e/1000000/api-$f]:-0}; b=${XSEC[$e/1000000/tool-$f]:-0}
      goal=0.5; [[ $f == json ]] && goal=0.4
      r=$(awk -v a="$a" -v b="$b" 'BEGIN { if (a > 0) printf "%.2f", b / a; else print 0 }')
      echo "| $e 1M-row $f via the API ≥ $(awk -v g="$goal" 'BEGIN { printf "%d%%", g * 100 }') of the tool's rows/s | $(awk -v r="$r" 'BEGIN { printf "%d%%", r * 100 }') | $(met "$(awk -v r="$r" -v g="$goal" 'BEGIN { print (r >= g) }')") |"
    done
    for f in csv json; do
      lo=${XRSS[$e/10000/api-$f]:-0}; hi=${XRSS[$e/1000000/api-$f]:-999999}; mid=${XRSS[$e/100000/api-$f]:-0}
      mx=$(printf '%s\n' "$lo" "$mid" "$hi" | sort -n | tail -1)
      echo "| $e $f via the API: peak RSS < 64 MB from 10k to 1M rows | $(mb "$lo") → $(mb "$mid") → $(mb "$hi") MB | $(met "$(awk -v k="$mx" 'BEGIN { print (k < 65536) }')") |"
    done
    if [[ -n "${XRSS[$e/1000000/api-xlsx]:-}" ]]; then
      lo=${XRSS[$e/10000/api-xlsx]:-0}; mid=${XRSS[$e/100000/api-xlsx]:-0}; hi=${XRSS[$e/1000000/api-xlsx]}
      echo "| $e 1M-row XLSX via the API: peak RSS < 100 MB (section 3b's goal; 10k → 100k → 1M) | $(mb "$lo") → $(mb "$mid") → $(mb "$hi") MB | $(met "$(awk -v k="$hi" 'BEGIN { print (k < 102400) }')") |"
    fi
  done
} >>"$MD"

# ---------------------------------------------------------------------------------------------
say "== 4. memory and size"
SIZE=$(stat -c %s "$EXE")
{
  echo
  echo "### 4. Memory and size"
  echo
  echo "| measure | value | target | |"
  echo "|---|---|---|---|"
  echo "| RSS after start (idle) | $(mb "$RSS_START") MB | < 15 MB | $(met "$(awk -v k="$RSS_START" 'BEGIN { print (k < 15360) }')") |"
  echo "| RSS after 10k requests (5k list + 5k cached report) | $(mb "$RSS_10K") MB | < 15 MB | $(met "$(awk -v k="$RSS_10K" 'BEGIN { print (k < 15360) }')") |"
  echo "| RSS after the whole wrk matrix | $(mb "$RSS_AFTER_WRK") MB | — | |"
  echo "| release binary (\`target/release/handler\`, stripped) | $(awk -v b="$SIZE" 'BEGIN { printf "%.1f MB (%d bytes)", b / 1048576, b }') | — | |"
} >>"$MD"

# ---------------------------------------------------------------------------------------------
say "== 5. Key Vault calls per 10,000 authenticated requests"
if ! over_budget && R=$(timeout 180 "$BENCH" vault --exe "$EXE" --requests 10000 --concurrency 16); then
  say "$(grep -v '^RESULT' <<<"$R")"
  VC=$(field "$R" vault_calls)
  {
    echo
    echo "### 5. Key Vault calls (API_KEYS as a Key Vault reference, fake vault + managed identity)"
    echo
    echo "| requests after warm-up | vault calls | token requests | non-200 | target | |"
    echo "|---|---|---|---|---|---|"
    echo "| $(field "$R" requests) | $VC | $(field "$R" token_requests) | $(field "$R" non_200) | 0 | $(met "$( [[ "$VC" == 0 ]] && echo 1 || echo 0)") |"
  } >>"$MD"
else
  echo -e "\n### 5. Key Vault calls\n\nnot measured (failed or out of time)" >>"$MD"
fi

echo -e "\n- Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); measurements took ${SECONDS} s." >>"$MD"

cat "$MD"
if [[ "$OUT" != "-" ]]; then
  if [[ ! -f "$OUT" ]]; then
    printf '# Benchmarks\n\nWritten by `scripts/bench.sh` (issue #8); newest section last. Numbers depend on the machine and on what else runs on it: compare runs on the same machine.\n' >"$OUT"
  fi
  cat "$MD" >>"$OUT"
  say "appended to $OUT"
fi
