#!/usr/bin/env bash
# What access budgets (rule 18, one Lua round trip to Redis per budgeted
# request) cost: purposegate with budgets off and on, side by side in one run
# on loopback, rounds interleaved. Prints req/s at 64 connections (target:
# on ≥ 0.9 × off) and p50 at 1 connection (target: on within +0.1 ms of off),
# the medians over the rounds, the ratios and whether each target is met.
#
#   bench/budgets.sh     (env: DUR=5 s per run, ROUNDS=3, FSYNC=never,
#                         REDIS_CPU=0 or any (where the bench's own Redis runs),
#                         REDIS=host:port to use a running Redis, REDIS_DB=15,
#                         PROXY_YAML: top-level config for both proxies, e.g.
#                         "worker_threads: 0")
#
# The budgeted proxy limits the bench's support token to 1000 distinct owners
# and 10^12 requests a day: every request runs the charge script and
# increments a counter (the owner is counted once, then re-reads are free),
# and nothing is refused. wrk is pinned to CPU 0, the upstream and both
# proxies to CPU 1. By default the bench starts its own redis-server, pinned
# to CPU 0 beside wrk: in a deployment Redis runs on other machines, and
# what is measured here is what the checks cost the proxy (also printed as
# CPU time per request, with Redis's). With REDIS=host:port it uses that
# Redis instead (keys under a prefix of this run, deleted at the end).
# FSYNC=never by default because with fsync=batch the disk's flush latency
# dominates every figure; FSYNC=batch measures that too. Bounded in time
# (the plan is printed first); stops only what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
DUR=${DUR:-5}
ROUNDS=${ROUNDS:-3}
FSYNC=${FSYNC:-never}
REDIS_DB=${REDIS_DB:-15}
REDIS_CPU=${REDIS_CPU:-0}
PROXY_YAML=${PROXY_YAML:-}
PATH_="/v1/users/u1/conversations/c1"
need_wrk
command -v taskset >/dev/null || { echo "needs taskset (util-linux)"; exit 1; }
command -v redis-cli >/dev/null || { echo "needs redis-cli and redis-server (Debian package redis-server)"; exit 1; }
rcli() { redis-cli -h "${REDIS%:*}" -p "${REDIS##*:}" -n "$REDIS_DB" "$@"; }

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
RUNS=$((ROUNDS * 4))
echo "plan: $ROUNDS rounds × 2 proxies × {64 conns, 1 conn} × ${DUR}s = $RUNS runs, about $((RUNS * DUR + 4 + 15))s with warm-up and set-up (plus the build)" >&2
cargo build --release --locked --quiet --bin purposegate --example bench_upstream
BIN=$PWD/target/release/purposegate
bench_begin
REDIS_WHERE=given
if [ -z "${REDIS:-}" ]; then
  REDIS=127.0.0.1:$(free_port)
  REDIS_WHERE="started here, CPU $REDIS_CPU"
  if [ "$REDIS_CPU" = any ]; then
    PIN=0 start_on_cpu 0 redis-server --bind 127.0.0.1 --port "${REDIS##*:}" --save "" --appendonly no >/dev/null
  else
    start_on_cpu "$REDIS_CPU" redis-server --bind 127.0.0.1 --port "${REDIS##*:}" --save "" --appendonly no >/dev/null
  fi
  for _ in $(seq 50); do [ "$(rcli ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
fi
[ "$(rcli ping 2>/dev/null)" = PONG ] || { echo "no Redis answering at $REDIS" >&2; exit 1; }
REDIS_PID=$(rcli info server | awk -F: '/^process_id/ {print $2}' | tr -d '\r')
PREFIX="purposegate:bench:$$:"
# Runs after bench_begin's cleanup is replaced: stop what we started, remove
# the work directory and this run's Redis keys.
cleanup() {
  if [ "$REDIS_WHERE" = given ]; then
    rcli --scan --pattern "${PREFIX}*" 2>/dev/null | while read -r k; do rcli del "$k" >/dev/null; done || true
  fi
  stop_started
  rm -rf "$WORK"
}
trap cleanup EXIT
bench_dev_token
ABUSE=$("$BIN" token mint --alg RS256 --kid bench-1 --key "$WORK/keys/bench-1.pem" \
  --role trust-safety --purpose abuse --case-id C-1 --subject u1 --ttl 3000 --sub employee-43)
export BENCH_TOKEN=$TOKEN

BUDGETS="budgets:
  redis_url: \"redis://$REDIS/$REDIS_DB\"
  key_prefix: \"$PREFIX\"
  limits:
    - {purpose: support, distinct_owners: 1000, window_seconds: 86400}
    - {purpose: support, requests: 1000000000000, window_seconds: 86400}
    - {purpose: abuse, requests: 1, window_seconds: 86400}"
start_bench_proxy off "$FSYNC" "" "" "$PROXY_YAML"; P_OFF=$PROXY_PORT; PID_OFF=$PROXY_PID
start_bench_proxy on "$FSYNC" "" "" "$BUDGETS
$PROXY_YAML"; P_ON=$PROXY_PORT; ADMIN_ON=$PROXY_ADMIN; PID_ON=$PROXY_PID

code() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $2" "http://127.0.0.1:$1$PATH_"; }
checks() { # $1 purpose, $2 result → the budgeted proxy's counter
  curl -s "http://127.0.0.1:$ADMIN_ON/metrics" |
    awk -v want="purposegate_budget_checks_total{purpose=\"$1\",result=\"$2\"}" '$1 == want {print $2}'
}
# Sanity: both proxies allow the bench token; the budgeted one really
# checks (the abuse budget of 1 refuses the second read, with Retry-After).
for p in "$P_OFF" "$P_ON"; do
  [ "$(code "$p" "$TOKEN")" = 200 ] || { echo "sanity check failed: the bench token is not allowed on port $p" >&2; exit 1; }
done
[ "$(code "$P_ON" "$ABUSE")" = 200 ] || { echo "sanity check failed: the first abuse read was not allowed" >&2; exit 1; }
second=$(curl -s -D - -o /dev/null -H "Authorization: Bearer $ABUSE" "http://127.0.0.1:$P_ON$PATH_" | tr -d '\r')
grep -q '^HTTP/1.1 429' <<<"$second" && grep -qi '^retry-after: [0-9]' <<<"$second" ||
  { echo "sanity check failed: the budget did not refuse the second abuse read:" >&2; echo "$second" >&2; exit 1; }
[ "$(checks support allowed)" = 1 ] || { echo "sanity check failed: no budget check counted" >&2; exit 1; }

ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)
run() { # $1 port, $2 conns, $3 seconds, $4 proxy pid → "rps p50_ms p99_ms non2xx proxy_us redis_us" (CPU µs a request)
  local p0 r0 p1 r1 rps p50 p99 reqs bad errs
  p0=$(ticks "$4"); r0=$(ticks "$REDIS_PID")
  taskset -c 0 wrk -t1 -c"$2" -d"$3s" --latency -s bench/auth.lua "http://127.0.0.1:$1$PATH_" > "$WORK/wrk.out"
  p1=$(ticks "$4"); r1=$(ticks "$REDIS_PID")
  read -r rps p50 p99 reqs bad errs <<<"$(python3 bench/wrk_parse.py "$WORK/wrk.out")"
  python3 -c "import sys; hz, n = int(sys.argv[1]), max(1, int(sys.argv[2])); print(*sys.argv[3:7], *(f'{int(t) / hz * 1e6 / n:.1f}' for t in sys.argv[7:]))" \
    "$HZ" "$reqs" "$rps" "$p50" "$p99" "$((bad + errs))" "$((p1 - p0))" "$((r1 - r0))"
}
for p in "$P_OFF" "$P_ON"; do run "$p" 64 1 "$PID_OFF" >/dev/null; done   # warm-up
RESULTS=$WORK/results.tsv
: > "$RESULTS"
for r in $(seq "$ROUNDS"); do
  for c in 64 1; do
    for t in off on; do
      port=$P_OFF pid=$PID_OFF; [ "$t" = on ] && port=$P_ON pid=$PID_ON
      read -r rps p50 p99 bad pus rus <<<"$(run "$port" "$c" "$DUR" "$pid")"
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$c" "$r" "$rps" "$p50" "$p99" "$bad" "$pus" "$rus" >> "$RESULTS"
      echo "  round $r, $c conns, budgets $t: $rps req/s, p50 $p50 ms" >&2
    done
  done
done
ALLOWED=$(checks support allowed)
EXCEEDED=$(checks support exceeded)
UNAVAILABLE=$(checks support unavailable)

python3 - "$RESULTS" "$DUR" "$ROUNDS" "$FSYNC" "$ALLOWED" "$EXCEEDED" "$UNAVAILABLE" "$PROXY_YAML" <<'PY'
import statistics, sys
path, dur, rounds, fsync, allowed, exceeded, unavailable, proxy_yaml = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(path)]
def med(t, c, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == t and r[1] == c)
def bad(t, c):
    return sum(int(r[6]) for r in rows if r[0] == t and r[1] == c)
print("| budgets | conns | req/s | p50 ms | p99 ms | errors + non-2xx | proxy CPU µs/req | Redis CPU µs/req |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for c in ("64", "1"):
    for t in ("off", "on"):
        print(f"| {t} | {c} | {med(t, c, 3):.0f} | {med(t, c, 4):.3f} | {med(t, c, 5):.3f} | {bad(t, c)} | {med(t, c, 7):.1f} | {med(t, c, 8):.1f} |")
ratio = med("on", "64", 3) / med("off", "64", 3)
delta = med("on", "1", 4) - med("off", "1", 4)
print()
print(f"req/s at 64 connections, on / off: {ratio:.2f} (target >= 0.90: {'met' if ratio >= 0.9 else 'NOT met'})")
print(f"p50 at 1 connection, on - off: {delta * 1000:+.0f} us (target <= +100 us: {'met' if delta <= 0.1 else 'NOT met'})")
print(f"budget checks on the budgeted proxy: allowed {allowed}, exceeded {exceeded}, unavailable {unavailable}")
print(f"medians of {rounds} interleaved rounds of {dur}s per run; audit fsync={fsync}; proxy config: {proxy_yaml or 'default'}")
PY
echo "machine: $(nproc) cores, $(uname -m); wrk on CPU 0, upstream and proxies on CPU 1, Redis $(rcli info server | awk -F: '/^redis_version/ {print $2}' | tr -d '\r') at $REDIS ($REDIS_WHERE); load before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%Y-%m-%d)"
