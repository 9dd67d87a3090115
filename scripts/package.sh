#!/usr/bin/env bash
# Builds the deployable Functions app: dist/report-handler.zip with host.json, the function
# folders, reports.toml and the Linux x86-64 `handler` binary (execute bit preserved).
#
# The binary is linked against glibc 2.28 (the manylinux_2_28 floor), not against the glibc of
# the build machine: the Functions 4 Linux images are built on Debian 11 (glibc 2.31), and a
# binary built on Debian 12 (glibc 2.36) would die there with "version `GLIBC_2.34' not found".
# `cargo zigbuild` links with zig's glibc 2.28 stubs; zig and cargo-zigbuild come from PyPI
# (pinned below) and are installed into .tools/ on first use. Everything else is linked
# statically into the binary (rustls, not OpenSSL; sqlx's bundled SQLite); only the C runtime
# is dynamic. scripts/check-package.sh verifies both.
#
# Usage: scripts/package.sh [--no-build]
#   --no-build   package the binary already built by an earlier run
set -euo pipefail
cd "$(dirname "$0")/.."

GLIBC_FLOOR=2.28
TARGET=x86_64-unknown-linux-gnu
ZIGLANG_VERSION=0.17.1
CARGO_ZIGBUILD_VERSION=0.24.1
TOOLS=${REPORT_HANDLER_TOOLS:-$PWD/.tools}
bin=${CARGO_TARGET_DIR:-target}/$TARGET/release/handler

if [[ "${1:-}" != "--no-build" ]]; then
  if [[ ! -x "$TOOLS/venv/bin/cargo-zigbuild" || ! -x "$TOOLS/venv/bin/python-zig" ]]; then
    echo "installing ziglang==$ZIGLANG_VERSION and cargo-zigbuild==$CARGO_ZIGBUILD_VERSION into $TOOLS (PyPI)"
    python3 -m venv "$TOOLS/venv"
    "$TOOLS/venv/bin/pip" install -q --disable-pip-version-check \
      "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION"
  fi
  rustup target list --installed 2>/dev/null | grep -qx "$TARGET" || rustup target add "$TARGET"
  # cargo-zigbuild finds zig through the venv's `python -m ziglang` when zig is not on PATH.
  PATH="$TOOLS/venv/bin:$PATH" cargo zigbuild --release --locked --target "$TARGET.$GLIBC_FLOOR"
fi
[[ -f "$bin" ]] || { echo "error: $bin is missing; run scripts/package.sh without --no-build" >&2; exit 1; }
# An ELF executable for x86-64 with its execute bit.
magic=$(head -c 4 "$bin" | od -An -tx1 | tr -d ' \n')
[[ "$magic" == "7f454c46" ]] || { echo "error: $bin is not an ELF executable" >&2; exit 1; }
machine=$(od -An -tx1 -j18 -N2 "$bin" | tr -d ' \n')
[[ "$machine" == "3e00" ]] || { echo "error: $bin is not an x86-64 binary (e_machine=$machine)" >&2; exit 1; }
[[ -x "$bin" ]] || { echo "error: $bin has no execute bit" >&2; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$bin" "$stage/handler"
chmod 755 "$stage/handler"
cp reports.toml "$stage/"
for f in HttpTrigger Deliveries ReportDeliveries Health NightlyReport; do mkdir -p "$stage/$f"; cp "$f/function.json" "$stage/$f/"; done
# In the package the binary sits at the app root.
python3 - "$stage/host.json" <<'PY'
import json, sys
src = json.load(open("host.json"))
src["customHandler"]["description"]["defaultExecutablePath"] = "handler"
json.dump(src, open(sys.argv[1], "w"), indent=2)
PY

mkdir -p dist
python3 - "$stage" dist/report-handler.zip <<'PY'
import os, stat, sys, zipfile
stage, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(out + ".tmp", "w", zipfile.ZIP_DEFLATED) as z:
    for root, dirs, files in os.walk(stage):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            arc = os.path.relpath(path, stage)
            info = zipfile.ZipInfo(arc, date_time=(2020, 1, 1, 0, 0, 0))
            mode = os.stat(path).st_mode
            info.external_attr = (stat.S_IFREG | stat.S_IMODE(mode)) << 16
            info.create_system = 3  # Unix, so the mode bits are honoured
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as f:
                z.writestr(info, f.read())
os.replace(out + ".tmp", out)
PY
size=$(wc -c < dist/report-handler.zip)
echo "dist/report-handler.zip: $size bytes ($(( size / 1024 )) KiB), handler linked for glibc >= $GLIBC_FLOOR"
