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
# All traffic is on 127.0.0.1. The measurements take about 4-6 minutes and are bounded: every
# step has a timeout, and steps are skipped once 9.5 minutes have passed (the release build
# before it is not counted). The load generator is wrk (Debian package; installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=${BENCH_DURATION:-5s}
OUT=${BENCH_OUT:-BENCHMARKS.md}
BUDGET_S=570
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
  echo "\`chart-xlsx\`: the section in memory (as the email and the API hold it), its chart PNG and its workbook. \`xlsx-stream\`: rows from the database cursor straight into the workbook builder (constant-memory sheets). \`xlsx-memory\`: the workbook from the whole table in memory (what the email attachment and \`?format=xlsx\` do today). Each cell is its own process; peak RSS is its \`VmHWM\`."
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
  echo "CSV: the streaming path (\`DataSource::stream_query\` → \`CsvRowWriter\`). JSON and email HTML: \`run_query\` (the whole table) → \`render_json\` / \`render_html\` (HTML shows the first 50 rows, as the email body does). Each cell is its own process; peak RSS is its \`VmHWM\`."
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
