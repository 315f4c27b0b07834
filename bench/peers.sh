#!/usr/bin/env bash
# purposegate side by side with its peers (issue 7), measured interleaved in
# one run on loopback: direct to the upstream, nginx 1.22 as a plain reverse
# proxy, purposegate's own transport with no checks (examples/
# bench_bare_proxy: what the Rust HTTP stack costs on its own), HAProxy 2.6
# checking RS256 JWTs + claim ACLs + access log, and
# purposegate doing its whole job (RS256 token, default policy, consent file,
# audit log with fsync batch and, separately, never, and batch on the
# multi-thread runtime). Also the "every token
# unique" scenario (verified-token cache always missing), the disk's
# fdatasync latency and purposegate's RSS idle and holding 1,000 client
# connections. Prints markdown tables and whether each issue 7 target is met.
#
#   bench/peers.sh            (env: DUR=5 s per run, ROUNDS=3, UNIQUE=20000
#                              tokens, HELD=1000 connections)
#
# wrk is pinned to CPU 0, the upstream and the proxy under test to CPU 1.
# Bounded in time (the plan is printed first); stops only what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
DUR=${DUR:-5}
ROUNDS=${ROUNDS:-3}
UNIQUE=${UNIQUE:-20000}
HELD=${HELD:-1000}
PATH_="/v1/users/u1/conversations/c1"
BENCH=$PWD/bench

need() { # $1 command, $2 Debian package
  command -v "$1" >/dev/null && return
  echo "installing $2 ..." >&2
  apt-get install -y -qq "$2" >/dev/null 2>&1 || { echo "needs $1 (Debian package $2)" >&2; exit 1; }
}
need wrk wrk
need nginx nginx-light
need haproxy haproxy
need openssl openssl
need taskset util-linux
export PATH="$PATH:/usr/sbin"

RUNS=$((ROUNDS * (7 * 2 + 2)))
PLANNED=$((RUNS * DUR + 6 + 60))
echo "plan: $ROUNDS rounds × (7 targets × {64 conns, 1 conn} + 2 targets × unique tokens) × ${DUR}s = $RUNS runs, about ${PLANNED}s with set-up (plus the build)" >&2
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

cargo build --release --locked --quiet --bin purposegate --example bench_upstream --example mint_many --example bench_bare_proxy
BIN=$PWD/target/release/purposegate
WORK=$(mktemp -d)
cleanup() { stop_started; rm -rf "$WORK"; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true

# Starts a background process; sets LAST_PID (global: never call in $(...)).
spawn() { # $1 log file, rest: command
  local log=$1; shift
  "$@" >"$log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}
wait_port() { # $1 port
  for _ in $(seq 100); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null && return
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; exit 1
}
status() { # $1 port, $2 token ('' for none) → HTTP status
  if [ -n "$2" ]; then
    curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $2" "http://127.0.0.1:$1$PATH_"
  else
    curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1$PATH_"
  fi
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# "voluntary involuntary" context switches, summed over the threads of $1.
# Involuntary ones are mostly preemptions by the upstream sharing CPU 1;
# each costs a few µs here, so their rate explains much of the CPU/request.
ctx_switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt/ {v += $2} /^nonvoluntary_ctxt/ {n += $2} END {print v + 0, n + 0}'; }
# CPU 1's busy ticks (user+nice+system+irq+softirq+steal), to see what else ran there.
cpu1_busy() { awk '$1 == "cpu1" {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

# --- keys and tokens ---------------------------------------------------------
"$BIN" token keygen --alg RS256 --kid bench-1 --out "$WORK/keys" >/dev/null
"$BIN" token keygen --alg RS256 --kid bench-1 --out "$WORK/otherkeys" >/dev/null
openssl pkey -in "$WORK/keys/bench-1.pem" -pubout -out "$WORK/bench-1.pub.pem" 2>/dev/null
mint() { # $1 key dir, rest: extra flags
  local dir=$1; shift
  "$BIN" token mint --alg RS256 --kid bench-1 --key "$dir/bench-1.pem" --role support \
    --purpose support --ticket-id T-1 --subject u1 --sub employee-42 --jti bench-main "$@"
}
TOKEN=$(mint "$WORK/keys" --ttl 3000)
BAD_SIG=$(mint "$WORK/otherkeys" --ttl 3000)
EXPIRED=$(mint "$WORK/keys" --ttl=-300)
export BENCH_TOKEN=$TOKEN
echo "minting $UNIQUE distinct tokens ..." >&2
target/release/examples/mint_many "$WORK/keys/bench-1.pem" bench-1 "$UNIQUE" "$WORK/tokens.txt"
export BENCH_TOKENS_FILE=$WORK/tokens.txt

# --- upstream and peers ------------------------------------------------------
UP_PORT=$(free_port)
spawn "$WORK/upstream.log" taskset -c 1 target/release/examples/bench_upstream "127.0.0.1:$UP_PORT"
UP_PID=$LAST_PID
wait_port "$UP_PORT"

declare -A PORT PID
PORT[direct]=$UP_PORT; PID[direct]=$UP_PID

PORT[nginx]=$(free_port)
mkdir -p "$WORK/nginx-tmp"
sed -e "s#@WORK@#$WORK#g" -e "s#@UP_PORT@#$UP_PORT#g" -e "s#@PORT@#${PORT[nginx]}#g" \
  "$BENCH/nginx.conf.tmpl" > "$WORK/nginx.conf"
spawn "$WORK/nginx.out" taskset -c 1 nginx -p "$WORK" -e "$WORK/nginx-error.log" -c "$WORK/nginx.conf"
PID[nginx]=$LAST_PID

# purposegate's own transport (hyper server, pooled inline upstream
# connections, mimalloc) with no checks and no audit: what the stack costs.
PORT[bare]=$(free_port)
spawn "$WORK/bare.log" taskset -c 1 target/release/examples/bench_bare_proxy "127.0.0.1:${PORT[bare]}" "127.0.0.1:$UP_PORT"
PID[bare]=$LAST_PID

PORT[haproxy]=$(free_port)
sed -e "s#@PUBKEY@#$WORK/bench-1.pub.pem#g" -e "s#@UP_PORT@#$UP_PORT#g" -e "s#@PORT@#${PORT[haproxy]}#g" \
  "$BENCH/haproxy.cfg.tmpl" > "$WORK/haproxy.cfg"
spawn "$WORK/haproxy-access.log" taskset -c 1 haproxy -db -f "$WORK/haproxy.cfg"
PID[haproxy]=$LAST_PID

bench_policy
start_pg() { # $1 name, $2 fsync policy, $3 extra jwt settings, $4 top-level YAML; sets PORT/PID[$1]
  start_bench_proxy "$1" "$2" "" "$3" "${4:-}"
  PID[$1]=$PROXY_PID; PORT[$1]=$PROXY_PORT
}
start_pg pg-batch batch ""
start_pg pg-never never ""
# The same as pg-batch on tokio's multi-thread runtime with one worker
# (`worker_threads: 1`), against the default on one CPU: one current-thread
# runtime.
start_pg pg-mt batch "" "worker_threads: 1"
# Every token unique: a cache of one entry guarantees that no cycled token is
# ever found there (each request still pays the lookup and the insert).
start_pg pg-unique batch ", cache_max_entries: 1"
for t in nginx bare haproxy; do wait_port "${PORT[$t]}"; done

# --- every peer checks what it claims to check --------------------------------
expect() { # $1 target, $2 label, $3 token, $4 want ("200" or "refused")
  local got; got=$(status "${PORT[$1]}" "$3")
  if { [ "$4" = 200 ] && [ "$got" != 200 ]; } || { [ "$4" = refused ] && [ "$got" = 200 ]; }; then
    echo "sanity check failed: $1 answered $got for $2 (expected $4)" >&2; exit 1
  fi
  echo "  $1: $2 → $got" >&2
}
echo "sanity checks:" >&2
for t in direct nginx bare; do expect "$t" "valid token" "$TOKEN" 200; done
for t in haproxy pg-batch pg-never pg-mt pg-unique; do
  expect "$t" "valid token" "$TOKEN" 200
  expect "$t" "no token" "" refused
  expect "$t" "wrong signature" "$BAD_SIG" refused
  expect "$t" "expired token" "$EXPIRED" refused
  expect "$t" "a unique token" "$(head -n1 "$WORK/tokens.txt")" 200
done
got=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:${PORT[haproxy]}$PATH_")
[ "$got" != 200 ] || { echo "sanity check failed: HAProxy allowed a POST" >&2; exit 1; }

# --- memory: idle, then holding many idle client connections -------------------
EXTRAS=$WORK/extras
sleep 0.5
echo "rss_idle_kib=$(rss_kib "${PID[pg-batch]}")" >> "$EXTRAS"
rm -f "$WORK/held.ready"
spawn "$WORK/hold.log" taskset -c 0 python3 "$BENCH/hold_conns.py" "${PORT[pg-batch]}" "$PATH_" "$HELD" "$WORK/held.ready" 3
HOLD_PID=$LAST_PID
for _ in $(seq 600); do [ -s "$WORK/held.ready" ] && break; sleep 0.1; done
[ -s "$WORK/held.ready" ] || { echo "could not open $HELD connections" >&2; exit 1; }
sleep 0.5
echo "rss_held_kib=$(rss_kib "${PID[pg-batch]}")" >> "$EXTRAS"
read -r _ held held_failed < "$WORK/held.ready"
echo "held_conns=$held" >> "$EXTRAS"
[ "$held_failed" = 0 ] || echo "warning: $held_failed of the held connections did not get a 200" >&2
wait "$HOLD_PID" 2>/dev/null || true

# --- disk: fdatasync latency where the audit log lives ---------------------------
read -r f50 f99 fn <<<"$(python3 "$BENCH/fsync_p50.py" "$WORK/audit-pg-batch" 200)"
printf 'fsync_p50_ms=%s\nfsync_p99_ms=%s\nfsync_n=%s\n' "$f50" "$f99" "$fn" >> "$EXTRAS"

# --- measurements, interleaved ---------------------------------------------------
RESULTS=$WORK/results.tsv
: > "$RESULTS"
HZ=$(getconf CLK_TCK)
measure() { # $1 target, $2 scenario (c64|c1|u64), $3 seconds; appends a row unless $3 is warm-up
  local t=$1 conns=64 script=$BENCH/auth.lua
  [ "$2" = c1 ] && conns=1
  [ "$2" = u64 ] && script=$BENCH/unique.lua
  local pid=${PID[$t]} c0 u0 c1 u1 b0 b1 own v0 n0 v1 n1
  read -r v0 n0 <<<"$(ctx_switches "$pid")"
  c0=$(cpu_ticks "$pid"); u0=$(cpu_ticks "$UP_PID"); b0=$(cpu1_busy)
  taskset -c 0 wrk -t1 -c"$conns" -d"$3s" --latency -s "$script" "http://127.0.0.1:${PORT[$t]}$PATH_" > "$WORK/wrk.out"
  c1=$(cpu_ticks "$pid"); u1=$(cpu_ticks "$UP_PID"); b1=$(cpu1_busy)
  read -r v1 n1 <<<"$(ctx_switches "$pid")"
  [ "${4:-}" = warmup ] && return
  own=$(( (u1 - u0) + (pid == UP_PID ? 0 : c1 - c0) ))
  read -r rps p50 p99 reqs bad errs <<<"$(python3 "$BENCH/wrk_parse.py" "$WORK/wrk.out")"
  python3 - "$t" "$2" "$rps" "$p50" "$p99" "$reqs" "$bad" "$errs" "$((c1 - c0))" "$((u1 - u0))" "$HZ" "$(rss_kib "$pid")" "$((b1 - b0 - own))" "$3" "$((v1 - v0))" "$((n1 - n0))" >> "$RESULTS" <<'PY'
import sys
t, s, rps, p50, p99, reqs, bad, errs, dc, du, hz, rss, other, secs, vol, invol = sys.argv[1:]
us = lambda ticks: int(ticks) / int(hz) * 1e6 / max(1, int(reqs))
per = lambda n: int(n) / max(1, int(reqs))
other_pct = max(0, int(other)) / int(hz) / float(secs) * 100
print(t, s, rps, p50, p99, reqs, bad, errs, f"{us(dc):.2f}", rss, f"{us(du):.2f}", f"{other_pct:.0f}",
      f"{per(vol):.3f}", f"{per(invol):.3f}")
PY
  echo "  round $r: $t $2: $rps req/s, p50 $p50 ms, CPU 1 busy outside proxy+upstream $(tail -n1 "$RESULTS" | cut -d' ' -f12)%" >&2
}
TARGETS=(direct nginx bare haproxy pg-batch pg-never pg-mt)
echo "warm-up ..." >&2
for t in "${TARGETS[@]}" pg-unique; do r=0 measure "$t" c64 1 warmup; done
START=$(date +%s)
for r in $(seq "$ROUNDS"); do
  for s in c64 c1; do
    for t in "${TARGETS[@]}"; do measure "$t" "$s" "$DUR"; done
  done
  for t in haproxy pg-unique; do measure "$t" u64 "$DUR"; done
done
ELAPSED=$(( $(date +%s) - START ))

# --- report --------------------------------------------------------------------
echo
python3 "$BENCH/report.py" "$RESULTS" "$EXTRAS"
echo
TOKEN_LEN=$(printf %s "$TOKEN" | wc -c)
UNIQUE_LEN=$(head -n1 "$WORK/tokens.txt" | tr -d '\n' | wc -c)
echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(uname -sr)); wrk -t1 pinned to CPU 0, upstream and proxy to CPU 1; $ROUNDS rounds × ${DUR}s per run, interleaved; ${ELAPSED}s of measuring. RS256 token $TOKEN_LEN bytes (unique tokens $UNIQUE_LEN bytes, $UNIQUE of them, cycled). Load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg); rustc/cargo processes running at the end: $(ps -eo comm= | grep -cE '^(rustc|cargo|cc|ld)' || true). $(nginx -v 2>&1 | sed 's#nginx version: ##'), $(haproxy -v | head -n1 | cut -d' ' -f1-3), $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)."
