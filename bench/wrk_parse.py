#!/usr/bin/env python3
"""Reads wrk --latency output and prints "req_per_s p50_ms p99_ms requests
non_2xx_3xx socket_errors"."""
import re
import sys

t = open(sys.argv[1]).read()


def ms(v, u):
    return float(v) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[u]


rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p = dict((k, ms(v, u)) for k, v, u in re.findall(r"\s(50|99)%\s+([\d.]+)(us|ms|s|m)\b", t))
reqs = int(re.search(r"(\d+) requests in", t).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
nerr = sum(int(x) for x in errs.groups()) if errs else 0
print(f"{rps:.0f} {p['50']:.3f} {p['99']:.3f} {reqs} {non2xx.group(1) if non2xx else 0} {nerr}")
