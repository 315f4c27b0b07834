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
DUR=${1:-5}
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null 2>&1 || { echo "needs wrk (Debian package wrk)"; exit 1; }; }

cargo build --release --locked --quiet --bin purposegate --example bench_upstream
BIN=target/release/purposegate
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP_PORT=$(free_port)
taskset -c 1 target/release/examples/bench_upstream "127.0.0.1:$UP_PORT" >/dev/null & PIDS+=($!)

"$BIN" token keygen --alg RS256 --kid bench-1 --out "$WORK/keys" >/dev/null
"$BIN" certs dev "$WORK/certs" >/dev/null
mkdir -p "$WORK/policies"
cp policies/*.yaml "$WORK/policies/" && rm -f "$WORK/policies/consent.yaml"
cp policies/consent.yaml "$WORK/consent.yaml"
TOKEN=$("$BIN" token mint --alg RS256 --kid bench-1 --key "$WORK/keys/bench-1.pem" \
  --role support --purpose support --ticket-id T-1 --subject u1 --ttl 3000 --sub employee-42)

start_proxy() { # $1 = name, $2 = extra YAML; sets PORT (no subshell: PIDS must keep the pid)
  local port admin
  port=$(free_port); admin=$(free_port)
  cat > "$WORK/config-$1.yaml" <<YAML
listen: "127.0.0.1:$port"
admin_listen: "127.0.0.1:$admin"
jwt: {issuer: "https://idp.example.test", audiences: ["purposegate"], algorithms: ["RS256"], jwks_file: "keys/jwks.json"}
policy_dir: "policies"
consent_file: "consent.yaml"
upstreams: {content: {url: "http://127.0.0.1:$UP_PORT"}}
audit: {path: "audit-$1/audit.jsonl", fsync: "never"}
$2
YAML
  RUST_LOG=warn taskset -c 1 "$BIN" serve --config "$WORK/config-$1.yaml" 2>"$WORK/proxy-$1.log" & PIDS+=($!)
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  PORT=$port
}
start_proxy plain ""; P_PLAIN=$PORT
start_proxy tls "tls: {cert_file: certs/server.pem, key_file: certs/server.key}"; P_TLS=$PORT

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
  python3 - "$WORK/wrk.out" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def ms(v, u): return float(v) * {"us": 0.001, "ms": 1, "s": 1000}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p = dict((k, ms(v, u)) for k, v, u in re.findall(r"\s(50|99)%\s+([\d.]+)(us|ms|s)", t))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(f"{rps:.0f} {p['50']:.3f} {p['99']:.3f} {non2xx.group(1) if non2xx else 0}")
PY
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
