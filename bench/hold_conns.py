#!/usr/bin/env python3
"""Opens COUNT keep-alive client connections to 127.0.0.1:PORT, makes one
authorised GET on each (so the server has set the connection up fully), then
holds them all open and idle: writes "ready" to READY_FILE and sleeps
HOLD_SECONDS before closing them. Used by peers.sh to read the proxy's RSS
while it holds many connections.

usage: hold_conns.py PORT PATH COUNT READY_FILE HOLD_SECONDS  (token: BENCH_TOKEN)
"""
import http.client
import os
import sys
import time


def main():
    port, path, count, ready, hold = sys.argv[1:6]
    headers = {"Authorization": "Bearer " + os.environ["BENCH_TOKEN"]}
    conns, failed = [], 0
    deadline = time.monotonic() + 60
    for _ in range(int(count)):
        if time.monotonic() > deadline:
            break
        c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
        try:
            c.request("GET", path, headers=headers)
            r = c.getresponse()
            r.read()
            failed += r.status != 200
        except OSError:
            failed += 1
        conns.append(c)
    with open(ready, "w") as f:
        f.write(f"ready {len(conns)} {failed}\n")
    time.sleep(float(hold))
    for c in conns:
        c.close()


if __name__ == "__main__":
    main()
