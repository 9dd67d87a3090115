#!/usr/bin/env bash
# Inspects dist/report-handler.zip the way a deployment needs it: every file present, the
# binary executable, host.json pointing at it, and the binary loadable on Azure's images:
# no glibc symbol version above the floor (2.28) and no shared library beyond the C runtime
# (so no OpenSSL, no system SQLite). Used by CI after scripts/package.sh.
# Usage: scripts/check-package.sh [ZIP]   (default dist/report-handler.zip)
set -euo pipefail
cd "$(dirname "$0")/.."
GLIBC_FLOOR=2.28
zip=${1:-dist/report-handler.zip}
[[ -f "$zip" ]] || { echo "error: $zip is missing; run scripts/package.sh" >&2; exit 1; }
command -v readelf >/dev/null || { echo "error: readelf (binutils) is needed" >&2; exit 1; }

python3 - "$zip" <<'PY'
import json, stat, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
names = set(z.namelist())
need = {"host.json", "handler", "reports.toml", "HttpTrigger/function.json", "Deliveries/function.json", "ReportDeliveries/function.json", "Health/function.json", "NightlyReport/function.json"}
missing = need - names
assert not missing, f"missing from the package: {sorted(missing)}"
mode = z.getinfo("handler").external_attr >> 16
assert mode & stat.S_IXUSR, f"handler has no execute bit (mode {oct(mode)})"
assert z.read("handler")[:4] == b"\x7fELF", "handler is not an ELF binary"
host = json.loads(z.read("host.json"))
assert host["customHandler"]["description"]["defaultExecutablePath"] == "handler", "host.json must start ./handler"
assert host["customHandler"].get("enableForwardingHttpRequest") is False
for n in names:
    assert not n.startswith(("src/", "target/", "tests/", ".git", ".tools/")), f"unexpected file {n}"
print(f"package OK: {len(names)} files, handler mode {oct(stat.S_IMODE(mode))}")
PY

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("handler"))' "$zip" "$work/handler"

# The shared libraries the loader will look for: only the C runtime.
allowed='^(libc\.so\.6|libm\.so\.6|libgcc_s\.so\.1|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|ld-linux-x86-64\.so\.2)$'
needed=$(readelf -d -W "$work/handler" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
bad=$(grep -v -E "$allowed" <<<"$needed" || true)
if [[ -n "$bad" ]]; then
  echo "FAIL: the handler links shared libraries beyond the C runtime:" >&2
  echo "$bad" | sed 's/^/  /' >&2
  exit 1
fi

# The highest glibc symbol version any imported symbol needs.
highest=$( (readelf -V -W "$work/handler" | grep -o 'GLIBC_[0-9][0-9.]*' || true) | sed 's/GLIBC_//' | sort -V | tail -1)
[[ -n "$highest" ]] || { echo "FAIL: no glibc version information in the handler (not a glibc binary?)" >&2; exit 1; }
if [[ $(printf '%s\n%s\n' "$highest" "$GLIBC_FLOOR" | sort -V | tail -1) != "$GLIBC_FLOOR" ]]; then
  echo "FAIL: the handler needs GLIBC_$highest; Azure's images guarantee only $GLIBC_FLOOR." >&2
  echo "  symbols above the floor:" >&2
  readelf --dyn-syms -W "$work/handler" | grep -o '[A-Za-z0-9_]*@GLIBC_[0-9.]*' | sort -u |
    while IFS=@ read -r sym ver; do
      v=${ver#GLIBC_}
      [[ $(printf '%s\n%s\n' "$v" "$GLIBC_FLOOR" | sort -V | tail -1) != "$GLIBC_FLOOR" ]] && echo "    $sym@$ver" >&2
    done
  echo "  build the package with scripts/package.sh (cargo zigbuild for glibc $GLIBC_FLOOR), not cargo build" >&2
  exit 1
fi
echo "binary OK: highest glibc symbol version $highest (floor $GLIBC_FLOOR); shared libraries: $(tr '\n' ' ' <<<"$needed")"
