#!/usr/bin/env python3
"""Turns the raw rows peers.sh collected into the markdown tables it prints:
per target and scenario the median req/s with min–max over the rounds,
median p50/p99, CPU µs per request, RSS; then the ratios and the issue 7
targets, each marked met or not.

usage: report.py RESULTS_TSV EXTRAS_FILE
"""
import statistics as st
import sys
from collections import defaultdict

rows = defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split()
    if not f:
        continue
    target, scen = f[0], f[1]
    rows[(target, scen)].append(
        dict(rps=float(f[2]), p50=float(f[3]), p99=float(f[4]), reqs=int(f[5]), bad=int(f[6]),
             errs=int(f[7]), cpu=float(f[8]), rss=int(f[9]), up_cpu=float(f[10]),
             other=float(f[11]) if len(f) > 11 else float("nan"),
             vol=float(f[12]) if len(f) > 13 else None, invol=float(f[13]) if len(f) > 13 else None))
ex = dict(l.rstrip("\n").split("=", 1) for l in open(sys.argv[2]) if "=" in l)

NAMES = {
    "direct": "direct to the upstream",
    "nginx": "nginx 1.22 plain proxy (no auth, no log)",
    "bare": "purposegate's transport alone (no checks, no audit)",
    "haproxy": "HAProxy 2.6 jwt_verify RS256 + ACLs + log",
    "pg-batch": "purposegate, fsync batch",
    "pg-never": "purposegate, fsync never",
    "pg-mt": "purposegate, fsync batch, multi-thread runtime (1 worker)",
    "pg-unique": "purposegate, fsync batch, cache 1 entry",
}
SCEN = {"c64": "64 conns", "c1": "1 conn", "u64": "64 conns, every token unique"}


def med(t, s, k):
    r = rows.get((t, s))
    return st.median(x[k] for x in r) if r else None


def fmt(v, d=0):
    return "–" if v is None else f"{v:,.{d}f}"


def switches(t, s):
    """The proxy's context switches per request: involuntary (preempted,
    mostly by the upstream waking on the same CPU) / voluntary (slept)."""
    r = rows.get((t, s))
    if t == "direct" or not r or r[0]["vol"] is None:
        return "–"
    return f"{med(t, s, 'invol'):.2f} / {med(t, s, 'vol'):.2f}"


print("| target | scenario | req/s median (min–max) | p50 ms | p99 ms | proxy CPU µs/req | upstream CPU µs/req | proxy switches/req invol. / vol. | proxy RSS MiB | non-2xx / errors | CPU 1 other % |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for s in SCEN:
    for t in NAMES:
        r = rows.get((t, s))
        if not r:
            continue
        rps = [x["rps"] for x in r]
        cpu = med(t, s, "cpu")
        rss = max(x["rss"] for x in r) / 1024
        print(f"| {NAMES[t]} | {SCEN[s]} | {fmt(st.median(rps))} ({fmt(min(rps))}–{fmt(max(rps))}) "
              f"| {med(t, s, 'p50'):.3f} | {med(t, s, 'p99'):.3f} "
              f"| {'–' if t == 'direct' else fmt(cpu, 1)} | {fmt(med(t, s, 'up_cpu'), 1)} "
              f"| {switches(t, s)} "
              f"| {'–' if t == 'direct' else fmt(rss, 1)} | {sum(x['bad'] for x in r)} / {sum(x['errs'] for x in r)} "
              f"| {fmt(med(t, s, 'other'))} ({fmt(max(x['other'] for x in r))}) |")

fs50 = float(ex.get("fsync_p50_ms", "nan"))
print()
print(f"fdatasync on the audit log's filesystem: p50 {fs50:.3f} ms, p99 {ex.get('fsync_p99_ms')} ms "
      f"({ex.get('fsync_n')} samples).  purposegate RSS (fsync batch instance): idle "
      f"{int(ex.get('rss_idle_kib', 0)) / 1024:.1f} MiB, holding {ex.get('held_conns')} open idle client "
      f"connections {int(ex.get('rss_held_kib', 0)) / 1024:.1f} MiB.")
print()

checks = []


def target(name, value, limit, ok_if_le, unit=""):
    if value is None or limit is None:
        checks.append((name, "–", "–", "not measured"))
        return
    ok = value <= limit if ok_if_le else value >= limit
    checks.append((name, f"{value:.3f}{unit}", f"{'≤' if ok_if_le else '≥'} {limit:.3f}{unit}", "met" if ok else "NOT met"))


def ratio(a, b):
    return None if a is None or not b else a / b


pg, ng, hp, d = "pg-batch", "nginx", "haproxy", "direct"
target("req/s 64 conns: purposegate (batch) ÷ nginx-plain", ratio(med(pg, "c64", "rps"), med(ng, "c64", "rps")), 1.0, False, "×")
target("req/s 64 conns: purposegate (never) ÷ nginx-plain", ratio(med("pg-never", "c64", "rps"), med(ng, "c64", "rps")), 1.0, False, "×")
target("req/s 64 conns: purposegate (batch) ÷ HAProxy-JWT", ratio(med(pg, "c64", "rps"), med(hp, "c64", "rps")), 2.5, False, "×")
ng_cpu = med(ng, "c64", "cpu")
target("proxy CPU µs/req (64 conns): purposegate (batch) vs nginx + 5", med(pg, "c64", "cpu"), None if ng_cpu is None else ng_cpu + 5, True, " µs")
target("p50 1 conn: purposegate fsync never vs nginx-plain", med("pg-never", "c1", "p50"), med(ng, "c1", "p50"), True, " ms")
d50 = med(d, "c1", "p50")
target("p50 1 conn: purposegate fsync batch vs direct + fdatasync p50 + 0.05", med(pg, "c1", "p50"), None if d50 is None else d50 + fs50 + 0.05, True, " ms")
target("req/s every token unique: purposegate ÷ HAProxy-JWT", ratio(med("pg-unique", "u64", "rps"), med(hp, "u64", "rps")), 1.2, False, "×")
ri, rh = ex.get("rss_idle_kib"), ex.get("rss_held_kib")
target("RSS idle", None if ri is None else int(ri) / 1024, 30.0, True, " MiB")
target(f"RSS holding {ex.get('held_conns')} client connections", None if rh is None else int(rh) / 1024, 80.0, True, " MiB")

print("| target (issue 7) | measured | needed | |")
print("|---|---:|---:|---|")
for c in checks:
    print(f"| {c[0]} | {c[1]} | {c[2]} | {c[3]} |")
print("| decision cost flat 10 → 10,000 routes | see `cargo bench --bench decision` | ≤ 1.2× | not measured here |")
print()
print("Other req/s ratios: " + ", ".join(
    f"{a} ÷ {b} ({SCEN[s]}): {fmt(ratio(med(a, s, 'rps'), med(b, s, 'rps')), 2)}×"
    for a, s, b in [("pg-batch", "c64", "direct"), ("nginx", "c64", "direct"), ("haproxy", "c64", "direct"),
                    ("bare", "c64", "nginx"), ("pg-batch", "c64", "bare"), ("pg-never", "c64", "bare"),
                    ("pg-batch", "c1", "direct"), ("pg-never", "c1", "nginx"),
                    ("pg-batch", "c64", "pg-mt"), ("pg-batch", "c1", "pg-mt")]))
bare_cpu, pg_cpu = med("bare", "c64", "cpu"), med(pg, "c64", "cpu")
if bare_cpu is not None and pg_cpu is not None:
    print()
    print(f"CPU per request at 64 conns: the transport alone {bare_cpu:.1f} µs, purposegate (batch) {pg_cpu:.1f} µs: "
          f"the checks and the audit trail add {pg_cpu - bare_cpu:.1f} µs (nginx {fmt(ng_cpu, 1)} µs).")
