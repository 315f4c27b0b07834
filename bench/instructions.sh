#!/usr/bin/env bash
# Instructions executed per request (valgrind --tool=callgrind), purposegate
# beside its bare transport (examples/bench_bare_proxy): a repeatable figure
# where timings on a shared VM vary by ±20 %. Each proxy runs under callgrind
# in front of the bench upstream; wrk warms it up, the counters are zeroed,
# wrk runs again, the counters are dumped and divided by the requests wrk
# completed. Prints a markdown table and purposegate's heaviest own functions.
#
#   bench/instructions.sh [SECONDS]      (default 10; 4 connections)
#
# Under valgrind the CPU's SHA extensions are hidden, so SHA-256 (the token
# cache key and the audit chain) runs in `sha2`'s portable code and counts
# far more than it costs on the real CPU; it is shown on its own line.
# Bounded in time; stops only what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
DUR=${1:-10}
need_wrk
command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null 2>&1 || { echo "needs valgrind (Debian package valgrind)"; exit 1; }
echo "plan: 2 proxies × (3 s warm-up + ${DUR} s measured) under callgrind, about $((2 * (DUR + 20)))s with start-up" >&2

cargo build --release --locked --quiet --bin purposegate --example bench_upstream --example bench_bare_proxy
BIN=$PWD/target/release/purposegate
bench_begin
bench_dev_token
printf 'wrk.headers["Authorization"] = "Bearer %s"\n' "$TOKEN" > "$WORK/auth.lua"
PATH_="/v1/users/u1/conversations/c1"

# $1 name, $2 port, $3 readiness URL, rest: command. Leaves $WORK/$1.out.1
# (the dump) and $WORK/$1.reqs.
measure() {
  local name=$1 port=$2 ready=$3; shift 3
  valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.out" "$@" >"$WORK/$name.log" 2>&1 &
  local vp=$!
  PIDS+=("$vp")
  local up=0
  for _ in $(seq 300); do curl -fs -o /dev/null "$ready" 2>/dev/null && { up=1; break; }; sleep 0.2; done
  [ "$up" = 1 ] || { echo "$name did not answer under valgrind; its log:" >&2; cat "$WORK/$name.log" >&2; exit 1; }
  taskset -c 0 wrk -t1 -c4 -d3s -s "$WORK/auth.lua" "http://127.0.0.1:$port$PATH_" >/dev/null
  callgrind_control -z "$vp" >/dev/null 2>&1
  taskset -c 0 wrk -t1 -c4 -d"${DUR}s" -s "$WORK/auth.lua" "http://127.0.0.1:$port$PATH_" >"$WORK/$name.wrk"
  callgrind_control -d "$vp" >/dev/null 2>&1
  kill "$vp" 2>/dev/null || true
  wait "$vp" 2>/dev/null || true
  grep -o '[0-9]* requests in' "$WORK/$name.wrk" | cut -d' ' -f1 >"$WORK/$name.reqs"
  if grep -q "Non-2xx" "$WORK/$name.wrk"; then echo "$name answered non-2xx; see its log" >&2; exit 1; fi
}

P=$(free_port)
measure bare "$P" "http://127.0.0.1:$P$PATH_" target/release/examples/bench_bare_proxy "127.0.0.1:$P" "127.0.0.1:$UP_PORT"
write_bench_config purposegate never
RUST_LOG=warn measure purposegate "$PROXY_PORT" "http://127.0.0.1:$PROXY_ADMIN/readyz" "$BIN" serve --config "$WORK/config-purposegate.yaml"

python3 - "$WORK" <<'PY'
import re, subprocess, sys
work = sys.argv[1]

def inclusive(name):
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", f"{work}/{name}.out.1"],
                         capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$", line)
        if m:
            rows.append((int(m.group(1).replace(",", "")), m.group(2)))
    return rows

def per_req(name):
    return int(open(f"{work}/{name}.reqs").read().strip() or 0)

bare, pg = inclusive("bare"), inclusive("purposegate")
nb, npg = per_req("bare"), per_req("purposegate")
total = lambda rows: next(c for c, f in rows if f.startswith("PROGRAM TOTALS"))
sha = sum(c for c, f in pg if "sha2::sha256::soft::compress [" in f)
tb, tp = total(bare) / nb, total(pg) / npg
print(f"| proxy | requests | instructions/request |")
print(f"|---|---:|---:|")
print(f"| bare transport | {nb:,} | {tb:,.0f} |")
print(f"| purposegate (fsync never), all | {npg:,} | {tp:,.0f} |")
print(f"| … of which SHA-256 in software (valgrind hides SHA-NI) | | {sha / npg:,.0f} |")
print(f"| … purposegate without SHA-256 | | {tp - sha / npg:,.0f} ({(tp - sha / npg) / tb:.2f}× the transport) |")
print()
print("purposegate's own functions, inclusive instructions per request (top 15; the audit chain and the token verification include their SHA-256):")
print()
seen = set()
own = []
for c, f in pg:
    m = re.search(r":(purposegate::[^\s\[]+)", f)
    if m and m.group(1) not in seen:
        seen.add(m.group(1))
        own.append((c / npg, m.group(1)))
for c, f in sorted(own, reverse=True)[:15]:
    print(f"- {f}: {c:,.0f}")
PY
echo
echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC'), $(valgrind --version), ${DUR}s at 4 connections per proxy."
