#!/usr/bin/env bash
# What shipping the audit trail to PostgreSQL (audit.ship) costs the proxy:
# purposegate with shipping off and on, side by side in one run on loopback,
# rounds interleaved. Prints req/s at 64 connections (target: on ≥ 0.95 ×
# off), p50 at 1 connection, the medians over the rounds, the ratio and
# whether the target is met; then how many records the shipping proxy
# stored centrally and its lag at the end.
#
#   bench/ship_proxy.sh    (env: DUR=5 s per run, ROUNDS=3, FSYNC=batch,
#                           PGHOST=127.0.0.1, PGUSER=postgres)
#
# Needs the local PostgreSQL (trust auth). Creates a database
# purposegate_bench_shipproxy_<pid> and drops it at exit. wrk is pinned to
# CPU 0, the upstream and both proxies to CPU 1; the database backends that
# serve the shipper are moved to CPU 0 beside wrk (in a deployment the
# database runs elsewhere; what is measured is what shipping costs the
# proxy). Bounded in time (the plan is printed first); stops only what it
# started.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
DUR=${DUR:-5}
ROUNDS=${ROUNDS:-3}
FSYNC=${FSYNC:-batch}
PGHOST=${PGHOST:-127.0.0.1}
PGUSER=${PGUSER:-postgres}
PGOPTIONS='-c client_min_messages=warning'
export PGHOST PGUSER PGOPTIONS
PATH_="/v1/users/u1/conversations/c1"
need_wrk
command -v psql >/dev/null || { echo "needs psql (Debian package postgresql-client)"; exit 1; }

RUNS=$((ROUNDS * 4))
echo "plan: $ROUNDS rounds × 2 proxies × {64 conns, 1 conn} × ${DUR}s = $RUNS runs, about $((RUNS * DUR + 4 + 15))s with warm-up and set-up (plus the build)" >&2
cargo build --release --locked --quiet --bin purposegate --example bench_upstream
BIN=$PWD/target/release/purposegate
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
bench_begin
DB=purposegate_bench_shipproxy_$$
cleanup() {
  stop_started
  psql -q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
psql -q -d postgres -c "CREATE DATABASE $DB"
bench_dev_token
export BENCH_TOKEN=$TOKEN
SHIP=", ship: {postgres_url: \"postgres://$PGUSER@$PGHOST:5432/$DB\", instance: \"bench-ship-on\"}"
write_bench_config on "$FSYNC" "$SHIP"
"$BIN" audit migrate --config "$WORK/config-on.yaml" >/dev/null
start_bench_proxy off "$FSYNC"; P_OFF=$PROXY_PORT; PID_OFF=$PROXY_PID
start_bench_proxy on "$FSYNC" "$SHIP"; P_ON=$PROXY_PORT; ADMIN_ON=$PROXY_ADMIN; PID_ON=$PROXY_PID

metric() { # $1 metric name (no labels) → its value on the shipping proxy
  curl -s "http://127.0.0.1:$ADMIN_ON/metrics" | awk -v m="$1" '$1 == m {print $2}'
}
code() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$1$PATH_"; }
for p in "$P_OFF" "$P_ON"; do
  [ "$(code "$p")" = 200 ] || { echo "sanity check failed: the bench token is not allowed on port $p" >&2; exit 1; }
done
# The shipper really ships: the sanity request's records reach the table.
for _ in $(seq 100); do
  [ "$(psql -At -d "$DB" -c 'SELECT count(*) FROM audit_records')" -ge 2 ] && break; sleep 0.1
done
[ "$(psql -At -d "$DB" -c 'SELECT count(*) FROM audit_records')" -ge 2 ] ||
  { echo "sanity check failed: nothing shipped; the proxy's log:" >&2; cat "$WORK/proxy-on.log" >&2; exit 1; }
# The shipper's database backends go to CPU 0, beside wrk.
for b in $(psql -At -d "$DB" -c "SELECT pid FROM pg_stat_activity WHERE datname = '$DB' AND pid <> pg_backend_pid()"); do
  taskset -p -c 0 "$b" >/dev/null 2>&1 || true
done

ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)
run() { # $1 port, $2 conns, $3 seconds, $4 proxy pid → "rps p50_ms p99_ms non2xx proxy_us"
  local p0 p1 rps p50 p99 reqs bad errs
  p0=$(ticks "$4")
  taskset -c 0 wrk -t1 -c"$2" -d"$3s" --latency -s bench/auth.lua "http://127.0.0.1:$1$PATH_" > "$WORK/wrk.out"
  p1=$(ticks "$4")
  read -r rps p50 p99 reqs bad errs <<<"$(python3 bench/wrk_parse.py "$WORK/wrk.out")"
  python3 -c "import sys; hz, n = int(sys.argv[1]), max(1, int(sys.argv[2])); print(*sys.argv[3:7], f'{int(sys.argv[7]) / hz * 1e6 / n:.1f}')" \
    "$HZ" "$reqs" "$rps" "$p50" "$p99" "$((bad + errs))" "$((p1 - p0))"
}
run "$P_OFF" 64 1 "$PID_OFF" >/dev/null; run "$P_ON" 64 1 "$PID_ON" >/dev/null   # warm-up
RESULTS=$WORK/results.tsv
: > "$RESULTS"
for r in $(seq "$ROUNDS"); do
  for c in 64 1; do
    for t in off on; do
      port=$P_OFF pid=$PID_OFF; [ "$t" = on ] && port=$P_ON pid=$PID_ON
      read -r rps p50 p99 bad pus <<<"$(run "$port" "$c" "$DUR" "$pid")"
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$c" "$r" "$rps" "$p50" "$p99" "$bad" "$pus" >> "$RESULTS"
      echo "  round $r, $c conns, shipping $t: $rps req/s, p50 $p50 ms" >&2
    done
  done
done
# Let the shipper catch up, then compare what the proxy wrote with what the
# table holds.
for _ in $(seq 300); do [ "$(metric purposegate_audit_ship_lag_records)" = 0 ] && break; sleep 0.1; done
LAG=$(metric purposegate_audit_ship_lag_records)
SHIPPED=$(metric purposegate_audit_shipped_records_total)
ROWS=$(psql -At -d "$DB" -c 'SELECT count(*) FROM audit_records')
ERRORS=$(metric purposegate_audit_ship_errors_total)

python3 - "$RESULTS" "$DUR" "$ROUNDS" "$FSYNC" "$LAG" "$SHIPPED" "$ROWS" "${ERRORS:-0}" <<'PY'
import statistics as st, sys
path, dur, rounds, fsync, lag, shipped, rows, errors = sys.argv[1:]
rows_ = [l.split("\t") for l in open(path).read().splitlines()]
def col(t, c, i):
    return [float(r[i]) for r in rows_ if r[0] == t and r[1] == c]
def med(t, c, i):
    v = col(t, c, i)
    return st.median(v) if v else float("nan")
print(f"| shipping | conns | req/s median (min–max) | p50 ms | p99 ms | proxy CPU µs/req | non-2xx+errors |")
print("|---|---:|---:|---:|---:|---:|---:|")
for c in ("64", "1"):
    for t in ("off", "on"):
        r = col(t, c, 3)
        bad = int(sum(col(t, c, 6)))
        print(f"| {t} | {c} | {st.median(r):,.0f} ({min(r):,.0f}–{max(r):,.0f}) | {med(t, c, 4):.3f} | {med(t, c, 5):.3f} | {med(t, c, 7):.1f} | {bad} |")
ratio = med("on", "64", 3) / med("off", "64", 3)
print()
print(f"req/s at 64 conns, shipping on ÷ off: {ratio:.3f}× (target ≥ 0.95×: {'met' if ratio >= 0.95 else 'NOT met'})")
print(f"p50 at 1 conn, on − off: {(med('on', '1', 4) - med('off', '1', 4)) * 1000:+.0f} µs")
print(f"at the end: {rows} rows in the table, purposegate_audit_shipped_records_total {shipped}, lag {lag} records, ship errors {errors}")
print(f"({rounds} rounds × {dur} s per run, interleaved; fsync: {fsync})")
PY
echo "load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
