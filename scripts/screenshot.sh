#!/usr/bin/env bash
# Renders the sample email (the embedded sample database, the sample reports.toml) and takes a
# PNG of it with headless Chromium from Debian's packages: docs/sample-email.png, shown in the
# README. A documentation script, not part of CI. Usage: scripts/screenshot.sh [YYYY-MM-DD]
# (default: yesterday in Europe/Berlin, the sample report's zone; the sample database has
# orders on every recent day).
set -euo pipefail
cd "$(dirname "$0")/.."

date=${1:-$(TZ=Europe/Berlin date -d yesterday +%F)}
out=docs/sample-email.png

if ! command -v chromium >/dev/null 2>&1; then
  echo "Chromium not found; installing Debian's chromium package..."
  if [[ $(id -u) -eq 0 ]]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi
fi

cargo build --release --quiet
handler=$(realpath "${CARGO_TARGET_DIR:-target}/release/handler")

work=$(mktemp -d -t screenshot.XXXXXX)
trap 'rm -rf "$work"' EXIT
# A throwaway app root: the sample reports.toml and host.json; the sample database is created
# under its data/ on first use.
cp host.json reports.toml "$work/"
(cd "$work" && env -u DATABASE_URL -u REPORTS_FILE "$handler" report run daily-sales \
  --date "$date" --out "$work/email.html" >/dev/null)

# Without the background-networking flags Chromium tries to reach Google's hosts at start;
# this machine (and CI) allow loopback only. A fresh profile each run.
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --hide-scrollbars --user-data-dir="$work/profile" \
  --window-size=900,2400 --screenshot="$PWD/$out" "file://$work/email.html" 2>/dev/null
echo "wrote $out (the email for $date)"
