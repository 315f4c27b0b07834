#!/usr/bin/env bash
# The live justification check's cost on the hot path (issue 15): req/s at
# 64 connections through purposegate with the check on (every lookup a
# cache hit: the answer is within cache_ttl_seconds) vs off (no
# `justifications:` section), otherwise identical (RS256 support token,
# default policy, consent file, audit fsync batch), measured interleaved in
# one run. Prints a markdown table with the median of the rounds, each
# round's on/off ratio, and whether the target (on >= 0.97x off) is met.
#
#   bench/justification.sh            (env: DUR=5 s per run, ROUNDS=3, CONNS=64)
#   CONTROL=1 bench/justification.sh  (A/A: both proxies without the check,
#                                      to see the harness's own bias and noise)
#
# wrk is pinned to CPU 0; the upstream, the sample case service and both
# proxies to CPU 1. Bounded in time (the plan is printed first); stops only
# what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
DUR=${DUR:-5}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
PATH_="/v1/users/u1/conversations/c1"
need_wrk
command -v taskset >/dev/null || { echo "needs taskset (Debian package util-linux)"; exit 1; }
echo "plan: $ROUNDS rounds × 2 targets × ${DUR}s at $CONNS connections = about $((ROUNDS * 2 * DUR + 10))s (plus the build)" >&2

cargo build --release --locked --quiet --bin purposegate --example bench_upstream --example case_service
BIN=$PWD/target/release/purposegate
bench_begin
bench_dev_token   # keys, policy, consent; its TOKEN is replaced below

# The sample case service (the demo's records) on CPU 1.
CASES_PORT=$(free_port)
start_on_cpu 1 target/release/examples/case_service "127.0.0.1:$CASES_PORT" >"$WORK/cases.log" 2>&1
for _ in $(seq 100); do grep -q justifications "$WORK/cases.log" 2>/dev/null && break; sleep 0.1; done
CASES_URL=$(head -n1 "$WORK/cases.log")
[ -n "$CASES_URL" ] || { echo "the case service did not start"; exit 1; }

mint() { # $1 ticket → a support token of employee-support for u1
  "$BIN" token mint --alg RS256 --kid bench-1 --key "$WORK/keys/bench-1.pem" \
    --role support --purpose support --ticket-id "$1" --subject u1 --ttl 3000 --sub employee-support
}
TOKEN=$(mint TICKET-77)

start_bench_proxy off batch; P_OFF=$PROXY_PORT
# An hour of TTL: after the first request every lookup is a cache hit.
SECTION="justifications: {url: \"$CASES_URL\", cache_ttl_seconds: 3600, max_staleness_seconds: 3600}"
[ "${CONTROL:-0}" = 1 ] && SECTION="" && echo "CONTROL=1: the 'on' proxy runs without the check (A/A)" >&2
start_bench_proxy on batch "" "" "$SECTION"
P_ON=$PROXY_PORT; A_ON=$PROXY_ADMIN

status() { # $1 port, $2 token → HTTP status
  curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $2" "http://127.0.0.1:$1$PATH_"
}
# Sanity: both allow the bench token; only the checking one refuses a closed ticket.
CLOSED=$(mint TICKET-70)
[ "$(status "$P_OFF" "$TOKEN")" = 200 ] || { echo "check off: the bench token is not allowed"; exit 1; }
[ "$(status "$P_ON" "$TOKEN")" = 200 ] || { echo "check on: the bench token is not allowed"; exit 1; }
[ "$(status "$P_OFF" "$CLOSED")" = 200 ] || { echo "check off: a closed ticket was refused"; exit 1; }
WANT=403; [ "${CONTROL:-0}" = 1 ] && WANT=200
[ "$(status "$P_ON" "$CLOSED")" = "$WANT" ] || { echo "check on: a closed ticket got no $WANT"; exit 1; }

cat > "$WORK/auth.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $TOKEN"
LUA
run() { # $1 port → "rps p50_ms p99_ms non2xx"
  taskset -c 0 wrk -t2 -c"$CONNS" -d"${DUR}s" --latency -s "$WORK/auth.lua" "http://127.0.0.1:$1$PATH_" > "$WORK/wrk.out"
  wrk_summary "$WORK/wrk.out"
}
lookups() { # result label → count on the checking proxy
  curl -s "http://127.0.0.1:$A_ON/metrics" | awk -v r="$1" '$1 == "purposegate_justification_lookups_total{result=\""r"\"}" {print $2}'
}

OFF=(); ON=(); RATIOS=()
HITS_BEFORE=$(lookups hit)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$ROUNDS"); do
  # Alternate which goes first, so neither always runs on a warmer machine.
  if [ $((r % 2)) = 1 ]; then
    read -r o_rps o50 o99 on2 <<<"$(run "$P_OFF")"; read -r n_rps n50 n99 nn2 <<<"$(run "$P_ON")"
  else
    read -r n_rps n50 n99 nn2 <<<"$(run "$P_ON")"; read -r o_rps o50 o99 on2 <<<"$(run "$P_OFF")"
  fi
  [ "$on2$nn2" = 00 ] || { echo "round $r: non-2xx responses (off $on2, on $nn2)"; exit 1; }
  OFF+=("$o_rps $o50 $o99"); ON+=("$n_rps $n50 $n99")
  RATIOS+=("$(python3 -c "print(f'{$n_rps/$o_rps:.3f}')")")
  echo "round $r: off $o_rps req/s, on $n_rps req/s (${RATIOS[-1]}x)" >&2
done
HITS=$(( $(lookups hit) - HITS_BEFORE ))
MISSES=$(lookups miss)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

median() { python3 -c "import statistics,sys; rows=[list(map(float,l.split())) for l in sys.argv[1:]]; print(' '.join(f'{statistics.median(c):.3f}'.rstrip('0').rstrip('.') for c in zip(*rows)))" "$@"; }
read -r off_rps off50 off99 <<<"$(median "${OFF[@]}")"
read -r on_rps on50 on99 <<<"$(median "${ON[@]}")"
RATIO=$(python3 -c "print(f'{$on_rps/$off_rps:.3f}')")
MET=$(python3 -c "print('met' if $on_rps/$off_rps >= 0.97 else 'NOT met')")

echo "| justification check | conns | req/s (median of $ROUNDS) | p50 ms | p99 ms | vs off |"
echo "|---|---:|---:|---:|---:|---:|"
echo "| off | $CONNS | $off_rps | $off50 | $off99 | 1.000 |"
echo "| on (cache hits) | $CONNS | $on_rps | $on50 | $on99 | $RATIO |"
echo
echo "per-round on/off: ${RATIOS[*]}; target on >= 0.97x off: $MET"
echo "lookups during the runs: $HITS cache hits; case service asked $MISSES time(s) in all (sanity requests included)"
echo "load average before/after: $LOAD_BEFORE / $LOAD_AFTER (other work on the machine makes single rounds noisy; compare with CONTROL=1)"
echo "machine: $(nproc) cores, $(uname -m); wrk pinned to CPU 0, upstream, case service and proxies to CPU 1; ${DUR}s per run; $(date -u +%Y-%m-%d)"
