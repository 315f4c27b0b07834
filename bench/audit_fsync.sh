#!/usr/bin/env bash
# Audit durability cost: throughput and latency through purposegate with
# audit fsync=always, batch and never, at 1 and 64 connections, on loopback.
# Prints a markdown table and the batch/never throughput ratio (target at 64
# connections: >= 0.90). Not a test: figures depend on the machine and disk.
# Bounded in time; stops only what it started.
#
#   bench/audit_fsync.sh [SECONDS_PER_RUN] [BATCH_WINDOW_US]   (defaults 3, 0)
#   PIN=0 bench/audit_fsync.sh   # no CPU pinning (when other jobs pin to the same CPUs)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
DUR=${1:-3}
WINDOW_US=${2:-0}
PIN=${PIN:-1}
on_cpu() { if [ "$PIN" = 1 ]; then taskset -c "$@"; else shift; "$@"; fi; }
need_wrk

cargo build --release --locked --quiet --bin purposegate --example bench_upstream
BIN=target/release/purposegate
# The audit logs go beside the crate (a real disk), not to a tmpfs /tmp where fsync is free.
WORK=$(mktemp -d "$PWD/target/audit-bench.XXXXXX")
cleanup() { stop_started; rm -rf "$WORK"; }
trap cleanup EXIT

UP_PORT=$(free_port)
start_on_cpu 1 target/release/examples/bench_upstream "127.0.0.1:$UP_PORT" >/dev/null 2>&1

bench_dev_token

declare -A PORT
for f in always batch never; do
  start_bench_proxy "$f" "$f" ", batch_window_us: $WINDOW_US"
  PORT[$f]=$PROXY_PORT
done

cat > "$WORK/auth.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $TOKEN"
LUA
PATH_="/v1/users/u1/conversations/c1"
for f in always batch never; do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:${PORT[$f]}$PATH_")" = 200 ] \
    || { echo "proxy (fsync=$f) did not allow the bench token"; exit 1; }
done

run() { # $1 port, $2 conns → "rps p50_ms p99_ms non2xx"
  local threads=$(( $2 < 2 ? 1 : 2 ))
  on_cpu 0 wrk -t"$threads" -c"$2" -d"${DUR}s" --latency -s "$WORK/auth.lua" "http://127.0.0.1:$1$PATH_" > "$WORK/wrk.out"
  wrk_summary "$WORK/wrk.out"
}

declare -A RPS
echo "| fsync | conns | req/s | p50 ms | p99 ms | non-2xx |"
echo "|---|---:|---:|---:|---:|---:|"
for c in 1 64; do
  for f in always batch never; do
    read -r rps p50 p99 n <<<"$(run "${PORT[$f]}" "$c")"
    RPS[$f-$c]=$rps
    echo "| $f | $c | $rps | $p50 | $p99 | $n |"
  done
done
echo
for c in 1 64; do
  echo "batch/never at $c conn(s): $(python3 -c "print(f'{${RPS[batch-$c]}/${RPS[never-$c]}:.2f}')")  (always/never: $(python3 -c "print(f'{${RPS[always-$c]}/${RPS[never-$c]}:.2f}')"))"
done
for f in always batch never; do
  "$BIN" audit verify "$WORK/audit-$f/audit.jsonl" | sed -n "1s/^/fsync=$f log: /p"
done
echo
echo "machine: $(nproc) cores, $(uname -m); audit dir on $(df -T "$WORK" | awk 'NR==2{print $2}'); $([ "$PIN" = 1 ] && echo "load generator on CPU 0, upstream and proxy on CPU 1" || echo "no CPU pinning"); load average $(cut -d" " -f1 /proc/loadavg) at the end; ${DUR}s per run; batch_window_us=$WINDOW_US; $(date -u +%Y-%m-%d)"
