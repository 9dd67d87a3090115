#!/usr/bin/env bash
# Runs the deployment package where Azure would: dist/report-handler.zip unzipped as the
# Functions host lays it out (/home/site/wwwroot), started inside a Debian 11 "bullseye" root
# file system (glibc 2.31, the base of the Functions 4 Linux images) in a chroot. Checks that
# it answers the host's readiness ping, that one NightlyReport invocation delivers the sample
# report to the outbox, and that one API call answers 200 with the report's JSON.
#
# The root file system is made once with debootstrap (minbase, from Debian's mirror) and
# cached in $OLD_GLIBC_ROOT (default ~/.cache/report-handler/bullseye-minbase).
# Needs root for debootstrap and chroot; without them it is skipped with a loud message.
# Usage: scripts/run-on-old-glibc.sh   (after scripts/package.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
zip=$PWD/dist/report-handler.zip
[[ -f "$zip" ]] || { echo "error: $zip is missing; run scripts/package.sh" >&2; exit 1; }
RELEASE=bullseye
root=${OLD_GLIBC_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/report-handler/$RELEASE-minbase}

skip() {
  echo "##########################################################################" >&2
  echo "# SKIPPED: old-glibc run test: $*" >&2
  echo "##########################################################################" >&2
  exit 0
}
if [[ $(id -u) -ne 0 ]]; then
  # CI runners (GitHub's) have password-less sudo; a developer's shell may not.
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    exec sudo -n env OLD_GLIBC_ROOT="$root" "$0" "$@"
  fi
  skip "needs root (or password-less sudo) for debootstrap and chroot; running as uid $(id -u)"
fi

if [[ ! -x "$root/bin/sh" ]]; then
  if ! command -v debootstrap >/dev/null; then
    apt-get install -y -qq debootstrap >/dev/null 2>&1 ||
      { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
  fi
  echo "making a Debian $RELEASE minbase root file system in $root (once; cached)"
  tmp="$root.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$(dirname "$root")"
  if ! timeout 600 debootstrap --variant=minbase "$RELEASE" "$tmp" http://deb.debian.org/debian >"$tmp.log" 2>&1; then
    tail -5 "$tmp.log" >&2
    rm -rf "$tmp" "$tmp.log"
    echo "error: debootstrap of $RELEASE failed (see above)" >&2
    exit 1
  fi
  rm -f "$tmp.log"
  mv "$tmp" "$root"
fi
chroot "$root" /bin/true 2>/dev/null || skip "this machine cannot chroot into $root"
glibc=$(chroot "$root" /usr/bin/getconf GNU_LIBC_VERSION 2>/dev/null || echo "glibc ?")
glibc=${glibc#glibc }
echo "old-glibc run test: Debian $RELEASE root, glibc $glibc"

app="$root/home/site/wwwroot"
rm -rf "$app"
mkdir -p "$app"
python3 -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for i in z.infolist():
    z.extract(i, sys.argv[2])
    mode = i.external_attr >> 16
    if mode: __import__("os").chmod(sys.argv[2] + "/" + i.filename, mode & 0o777)' "$zip" "$app"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
key=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
log=$(mktemp)
pid=""
cleanup() {
  [[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -f "$log"
  rm -rf "$app"
}
trap cleanup EXIT
fail() {
  echo "FAIL: old-glibc run test: $*" >&2
  echo "--- handler output ---" >&2
  cat "$log" >&2
  exit 1
}

# The host starts the executable in the app root with the port in the environment.
timeout 120 chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/tmp \
  FUNCTIONS_CUSTOMHANDLER_PORT="$port" FUNCTIONS_APP_ROOT_PATH=/home/site/wwwroot \
  API_KEYS="$key" RUST_LOG=info \
  /bin/sh -c 'cd /home/site/wwwroot && exec ./handler' >"$log" 2>&1 &
pid=$!

ready=""
for _ in $(seq 1 100); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; then ready=1; break; fi
  kill -0 "$pid" 2>/dev/null || fail "the handler exited before answering GET /"
  sleep 0.1
done
[[ -n "$ready" ]] || fail "no answer to GET / within 10 s"
echo "  GET / answered"

# Two ticks as the host sends them: one before today's 06:00 Europe/Berlin occurrence of the
# sample report (the report's first appearance), one just after it (due: delivered).
read -r before after <<<"$(python3 - <<'PY'
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo
berlin = ZoneInfo("Europe/Berlin")
now = datetime.now(berlin)
occ = datetime(now.year, now.month, now.day, 6, 0, 0, tzinfo=berlin).astimezone(timezone.utc)
f = lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.0153341Z")
print(f(occ - timedelta(minutes=10)), f(occ + timedelta(seconds=10)))
PY
)"
tick() {
  local now=$1 status
  status=$(curl -sS -o "$log.reply" -w '%{http_code}' --max-time 60 \
    -H 'Content-Type: application/json; charset=utf-8' \
    -H "X-Azure-Functions-InvocationId: $(python3 -c 'import uuid; print(uuid.uuid4())')" \
    --data "{\"Data\":{\"timer\":{\"Schedule\":{\"AdjustForDST\":true},\"ScheduleStatus\":null,\"IsPastDue\":false}},\"Metadata\":{\"sys\":{\"MethodName\":\"NightlyReport\",\"UtcNow\":\"$now\",\"RandGuid\":\"0f6c3d8e-2b1a-4f55-9a8e-5f1e4c2d7b90\"}}}" \
    "http://127.0.0.1:$port/NightlyReport") || fail "NightlyReport at $now: no reply"
  [[ "$status" == 200 ]] || { cat "$log.reply" >&2; rm -f "$log.reply"; fail "NightlyReport at $now answered $status"; }
  rm -f "$log.reply"
}
tick "$before"
tick "$after"
emails=$(find "$app/outbox" -name '*.eml' 2>/dev/null | wc -l)
[[ "$emails" -eq 1 ]] || fail "expected 1 email in the outbox after the ticks, found $emails"
grep -q '^Subject: Daily sales' "$(find "$app/outbox" -name '*.eml' | head -1)" || fail "the email has no 'Daily sales' subject"
echo "  NightlyReport delivered 1 email to the outbox"

# One API call in payload mode, as the host sends it for GET /api/reports/daily-sales.
reply=$(curl -sS --max-time 60 -H 'Content-Type: application/json; charset=utf-8' \
  -H 'X-Azure-Functions-InvocationId: 5d0e7a3c-6b2f-4c1d-8e9a-7f6b5c4d3e2a' \
  --data "{\"Data\":{\"req\":{\"Url\":\"http://localhost:7071/api/reports/daily-sales\",\"Method\":\"GET\",\"Query\":{},\"Headers\":{\"Authorization\":[\"Bearer $key\"],\"Accept\":[\"application/json\"]},\"Params\":{\"name\":\"daily-sales\"},\"Identities\":[]}},\"Metadata\":{\"name\":\"\\\"daily-sales\\\"\",\"Query\":{},\"Headers\":{\"Authorization\":\"Bearer $key\"},\"sys\":{\"MethodName\":\"HttpTrigger\",\"UtcNow\":\"$after\",\"RandGuid\":\"5d0e7a3c-6b2f-4c1d-8e9a-7f6b5c4d3e2b\"}}}" \
  "http://127.0.0.1:$port/HttpTrigger") || fail "HttpTrigger: no reply"
python3 - "$reply" <<'PY' || fail "the API call did not answer 200 with the report's sections"
import json, sys
res = json.loads(sys.argv[1])["Outputs"]["res"]
assert res["statusCode"] == 200, res["statusCode"]
body = json.loads(res["body"])
assert body["report"] == "daily-sales" and len(body["sections"]) >= 1, list(body)
print(f"  API answered 200 with {len(body['sections'])} sections")
PY
echo "old-glibc run test OK (Debian $RELEASE, glibc $glibc)"
