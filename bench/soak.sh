#!/usr/bin/env bash
# Soak: purposegate under mixed traffic (allowed, denied, cancelled, garbage)
# for 30 minutes by default, printing RSS, open fds, p99 and audit bytes each
# minute (bench/soak.py). Flat RSS, fds and p99 and a constant audit growth
# per minute are what a sidecar that runs for weeks needs.
#
#   bench/soak.sh [--minutes N]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
MINUTES=30
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) MINUTES=$2; shift 2 ;;
    *) echo "usage: bench/soak.sh [--minutes N]" >&2; exit 2 ;;
  esac
done

cargo build --release --locked --quiet --bin purposegate --example bench_upstream
BIN=target/release/purposegate
bench_begin
bench_dev_token
# Rotation keeps files small; the limits are the defaults except a short
# header timeout so slowloris heads are cut within the minute.
start_bench_proxy soak batch ", rotate_bytes: 67108864" "" "limits: {header_read_timeout_ms: 2000}"
echo "purposegate $("$BIN" --version) soak, $MINUTES minute(s), $(nproc) CPUs, $(date -u +%FT%TZ)"
python3 bench/soak.py "$PROXY_PORT" "$PROXY_ADMIN" "$PROXY_PID" "$WORK/audit-soak" "$TOKEN" "$MINUTES"
"$BIN" audit verify "$WORK"/audit-soak/audit.jsonl.* "$WORK/audit-soak/audit.jsonl" 2>/dev/null | head -1 \
  || "$BIN" audit verify "$WORK/audit-soak/audit.jsonl" | head -1
