#!/usr/bin/env bash
# Inspects dist/report-handler.zip the way a deployment would need it: every file present,
# the binary executable, host.json pointing at it. Used by CI after scripts/package.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - dist/report-handler.zip <<'PY'
import json, stat, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
names = set(z.namelist())
need = {"host.json", "handler", "reports.toml", "HttpTrigger/function.json", "NightlyReport/function.json"}
missing = need - names
assert not missing, f"missing from the package: {sorted(missing)}"
mode = z.getinfo("handler").external_attr >> 16
assert mode & stat.S_IXUSR, f"handler has no execute bit (mode {oct(mode)})"
assert z.read("handler")[:4] == b"\x7fELF", "handler is not an ELF binary"
host = json.loads(z.read("host.json"))
assert host["customHandler"]["description"]["defaultExecutablePath"] == "handler", "host.json must start ./handler"
assert host["customHandler"].get("enableForwardingHttpRequest") is False
for n in names:
    assert not n.startswith(("src/", "target/", "tests/", ".git")), f"unexpected file {n}"
print(f"package OK: {len(names)} files, handler mode {oct(stat.S_IMODE(mode))}")
PY
