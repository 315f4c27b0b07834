#!/usr/bin/env bash
# What TLS costs on the client listener: the same proxy config served
# plaintext and with TLS (a `certs dev` certificate, ECDSA P-256), measured
# side by side on loopback with wrk, with keep-alive connections and with a
# new connection (full handshake) per request. Prints a markdown table.
# Bounded in time; stops only what it started.
#
#   bench/tls.sh [SECONDS_PER_RUN]     (default 5)
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
"$BIN" certs dev "$WORK/certs" >/dev/null

start_bench_proxy plain never; P_PLAIN=$PROXY_PORT
start_bench_proxy tls never "" "" "tls: {cert_file: certs/server.pem, key_file: certs/server.key}"; P_TLS=$PROXY_PORT

PATH_="/v1/users/u1/conversations/c1"
# Sanity: TLS really answers, and the proxy really checks.
[ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$WORK/certs/ca.pem" "https://localhost:$P_TLS$PATH_")" = 401 ] || { echo "TLS proxy did not answer 401 without a token"; exit 1; }

run() { # $1 url, $2 conns, $3 "close" for a new connection per request → "rps p50_ms p99_ms non2xx"
  local threads=$(( $2 < 2 ? 1 : 2 ))
  {
    echo "wrk.headers[\"Authorization\"] = \"Bearer $TOKEN\""
    [ "$3" = close ] && echo 'wrk.headers["Connection"] = "close"'
    true
  } > "$WORK/req.lua"
  taskset -c 0 wrk -t"$threads" -c"$2" -d"${DUR}s" --latency -s "$WORK/req.lua" "$1" > "$WORK/wrk.out"
  wrk_summary "$WORK/wrk.out"
}

echo "| listener | connections | conns | req/s | p50 ms | p99 ms | non-2xx | req/s vs plaintext |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for mode in keepalive close; do
  for c in 1 32; do
    read -r p_rps p50 p99 pn <<<"$(run "http://127.0.0.1:$P_PLAIN$PATH_" "$c" "$mode")"
    read -r t_rps t50 t99 tn <<<"$(run "https://localhost:$P_TLS$PATH_" "$c" "$mode")"
    echo "| plaintext | $mode | $c | $p_rps | $p50 | $p99 | $pn | 1.00 |"
    echo "| TLS 1.3 | $mode | $c | $t_rps | $t50 | $t99 | $tn | $(python3 -c "print(f'{$t_rps/$p_rps:.2f}')") |"
  done
done
echo
echo "(proxy pinned to core 1, wrk to core 0; fsync=never; ${DUR}s per run; 'close' = a full handshake per request)"
