#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time over the committed seed corpus and
# prints a summary (target, executions, crashes). Not part of `cargo test`: fuzzing needs
# libFuzzer and a nightly-flag build, and its value grows with time spent, not with CI runs.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]        (default 60)
#
# Environment:
#   FUZZ_TARGETS      space-separated subset of targets (default: all of `cargo fuzz list`)
#   FUZZ_SANITIZER    address | none (default none: the crate forbids `unsafe`, so ASan finds
#                     little and halves the executions; panics, overflows (debug assertions are
#                     on) and timeouts are caught either way)
#   FUZZ_TOOLS_DIR    where cargo-fuzz is installed if missing (default fuzz/.tools)
#
# Only stable Rust is needed: cargo-fuzz passes nightly-only flags (-Zsanitizer, sancov), which
# stable rustc accepts with RUSTC_BOOTSTRAP=1.
#
# The seed corpus (fuzz/corpus/<target>/seed-*) is copied to a temporary directory, so the
# inputs libFuzzer discovers never end up in git. A crash is written to fuzz/artifacts/<target>/
# (git-ignored) and named in the summary; turn it into a regression test beside the code it
# breaks. Exit status: 0 if no target crashed, 1 otherwise.
set -euo pipefail

SECS="${1:-60}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ="$ROOT/fuzz"
TOOLS="${FUZZ_TOOLS_DIR:-$FUZZ/.tools}"
SANITIZER="${FUZZ_SANITIZER:-none}"
export RUSTC_BOOTSTRAP=1

case "$SECS" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET]" >&2; exit 2 ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
  export PATH="$TOOLS/bin:$PATH"
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz into $TOOLS ..." >&2
    cargo install cargo-fuzz --locked --root "$TOOLS"
  fi
fi

cd "$FUZZ"
read -r -a TARGETS <<<"${FUZZ_TARGETS:-$(cargo fuzz list | tr '\n' ' ')}"
FLAGS=(--sanitizer "$SANITIZER" --debug-assertions)

echo "building ${#TARGETS[@]} targets (sanitizer: $SANITIZER) ..." >&2
cargo fuzz build "${FLAGS[@]}" >&2

WORK="$(mktemp -d -t fuzz-run.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
SUMMARY="$WORK/summary"
printf '%-16s %12s %8s  %s\n' target executions crashes notes >"$SUMMARY"
FAILED=0

for t in "${TARGETS[@]}"; do
  corpus="$WORK/corpus-$t"
  mkdir -p "$corpus" "$FUZZ/artifacts/$t"
  if compgen -G "$FUZZ/corpus/$t/seed-*" >/dev/null; then
    cp "$FUZZ/corpus/$t"/seed-* "$corpus/"
  fi
  before="$(ls "$FUZZ/artifacts/$t" | sort)"
  log="$WORK/$t.log"
  echo "fuzzing $t for ${SECS}s ..." >&2
  set +e
  # Past crashes (fuzz/regressions/<target>/) are replayed first as a read-only second corpus.
  extra=()
  if [ -d "$FUZZ/regressions/$t" ]; then extra=("$FUZZ/regressions/$t"); fi
  cargo fuzz run "${FLAGS[@]}" "$t" "$corpus" "${extra[@]}" -- \
    -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    >"$log" 2>&1
  rc=$?
  set -e
  # libFuzzer's last status line ("#123456 DONE ..." or the last "#N pulse") has the count.
  runs="$(grep -aoE '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1 || true)"
  if [ -z "$runs" ]; then
    runs="$(grep -aoE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)"
  fi
  new="$(comm -13 <(echo "$before") <(ls "$FUZZ/artifacts/$t" | sort) | sed '/^$/d')"
  crashes="$(printf '%s' "$new" | grep -c . || true)"
  note=""
  if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    FAILED=1
    note="exit $rc; $(printf '%s ' $new)log tail:"
    tail -n 40 "$log" >&2
  fi
  printf '%-16s %12s %8s  %s\n' "$t" "${runs:-?}" "$crashes" "$note" >>"$SUMMARY"
  cp "$log" "$FUZZ/artifacts/$t/last-run.log"
done

echo
cat "$SUMMARY"
exit "$FAILED"
