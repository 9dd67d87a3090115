#!/usr/bin/env bash
# The hardening soak: SOAK_SECONDS (default 300) of mixed API traffic plus ticks against a real
# PostgreSQL on loopback. Prints the figures (SOAK lines) recorded in RELIABILITY.md.
# Usage: SOAK_SECONDS=300 scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export SOAK_SECONDS=${SOAK_SECONDS:-300}
exec scripts/test.sh --test e2e -- --ignored --nocapture soak::
