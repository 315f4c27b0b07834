#!/usr/bin/env bash
# Throughput and latency through purposegate vs. straight to the upstream,
# measured side by side in one run on loopback. Prints a markdown table with
# req/s, p50, p99 and the proxy/direct ratio for 1 and 64 connections and for
# fsync batch and never. Bounded in time; stops only what it started.
#
#   bench/proxy_vs_direct.sh [SECONDS_PER_RUN]     (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
DUR=${1:-5}
need_wrk

cargo build --release --locked --quiet --bin purposegate --example bench_upstream
BIN=target/release/purposegate
bench_begin

bench_dev_token

start_bench_proxy batch batch; P_BATCH=$PROXY_PORT
start_bench_proxy never never; P_NEVER=$PROXY_PORT

cat > "$WORK/auth.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $TOKEN"
LUA
PATH_="/v1/users/u1/conversations/c1"
# Sanity: the proxy really checks (no token → 401, token → 200).
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_BATCH$PATH_")" = 401 ] || { echo "proxy did not refuse a missing token"; exit 1; }
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$P_BATCH$PATH_")" = 200 ] || { echo "proxy did not allow the bench token"; exit 1; }

run() { # $1 port, $2 conns → "rps p50_ms p99_ms"
  local threads=$(( $2 < 2 ? 1 : 2 ))
  taskset -c 0 wrk -t"$threads" -c"$2" -d"${DUR}s" --latency -s "$WORK/auth.lua" "http://127.0.0.1:$1$PATH_" > "$WORK/wrk.out"
  wrk_summary "$WORK/wrk.out"
}

echo "| target | conns | req/s | p50 ms | p99 ms | non-2xx | req/s vs direct |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for c in 1 64; do
  read -r d_rps d50 d99 dn <<<"$(run "$UP_PORT" "$c")"
  read -r b_rps b50 b99 bn <<<"$(run "$P_BATCH" "$c")"
  read -r n_rps n50 n99 nn <<<"$(run "$P_NEVER" "$c")"
  echo "| direct | $c | $d_rps | $d50 | $d99 | $dn | 1.00 |"
  echo "| purposegate fsync=batch | $c | $b_rps | $b50 | $b99 | $bn | $(python3 -c "print(f'{$b_rps/$d_rps:.2f}')") |"
  echo "| purposegate fsync=never | $c | $n_rps | $n50 | $n99 | $nn | $(python3 -c "print(f'{$n_rps/$d_rps:.2f}')") |"
done
echo
echo "machine: $(nproc) cores, $(uname -m); load generator pinned to CPU 0, upstream and proxy to CPU 1; ${DUR}s per run; RS256 token ($(printf %s "$TOKEN" | wc -c) bytes); $(date -u +%Y-%m-%d)"
