#!/usr/bin/env python3
"""Soak traffic for purposegate (bench/soak.sh): for MINUTES minutes, a mix of
allowed reads, denials (no token, wrong owner, 60 KB paths), cancelled
requests (the client hangs up before the answer) and garbage (random bytes,
oversized heads, slowloris heads), from a few threads. Every minute it prints
the proxy's RSS, open file descriptors, the p99 of allowed reads in that
minute, the audit directory's bytes and the minute's counts. Bounded: every
loop stops at the deadline, every socket has a timeout."""

import http.client, os, random, socket, sys, threading, time

port, admin, pid, audit_dir, token, minutes = (
    int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], float(sys.argv[6]))
deadline = time.time() + minutes * 60
lock = threading.Lock()
stats = {"allowed": 0, "denied": 0, "cancelled": 0, "garbage": 0, "errors": 0, "lat": []}
PATH = "/v1/users/u1/conversations/c1"


def bump(k, v=1):
    with lock:
        stats[k] += v


def allowed_loop():
    conn = None
    while time.time() < deadline:
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            t = time.perf_counter()
            conn.request("GET", PATH, headers={"Authorization": "Bearer " + token})
            r = conn.getresponse(); r.read()
            with lock:
                stats["lat"].append(time.perf_counter() - t)
                stats["allowed" if r.status == 200 else "errors"] += 1
        except Exception:
            bump("errors"); conn = None


def denied_loop():
    conn = None
    kinds = [("GET", PATH, {}),
             ("GET", "/v1/users/u9/conversations/c1", {"Authorization": "Bearer " + token}),
             ("GET", "/v1/users/u1/files/" + "a" * 60000, {}),
             ("DELETE", PATH, {"Authorization": "Bearer " + token})]
    while time.time() < deadline:
        m, p, h = random.choice(kinds)
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request(m, p, headers=h)
            r = conn.getresponse(); r.read()
            bump("denied" if r.status >= 400 else "errors")
            if r.getheader("connection", "").lower() == "close":
                conn.close(); conn = None
        except Exception:
            bump("errors"); conn = None
        time.sleep(0.002)


def cancelled_loop():
    while time.time() < deadline:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % (PATH, token)).encode())
            # Hang up before or while the answer comes.
            time.sleep(random.choice([0, 0.0005, 0.002]))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
            bump("cancelled")
        except Exception:
            bump("errors")
        time.sleep(0.005)


def garbage_loop():
    while time.time() < deadline:
        kind = random.randrange(3)
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            if kind == 0:
                s.sendall(os.urandom(random.randrange(1, 2048)))
            elif kind == 1:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n")
            else:
                s.sendall(b"GET / HTTP/1.1\r\nHo")  # a head that never ends
                time.sleep(0.2)
            try:
                s.recv(4096)
            except Exception:
                pass
            s.close()
            bump("garbage")
        except Exception:
            bump("errors")
        time.sleep(0.01)


def proc(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def rss_mib():
    for line in proc("/proc/%d/status" % pid).splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def fds():
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


def audit_bytes():
    total = 0
    for root, _, files in os.walk(audit_dir):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


threads = [threading.Thread(target=f, daemon=True) for f in
           [allowed_loop, allowed_loop, denied_loop, cancelled_loop, garbage_loop]]
for t in threads:
    t.start()
print("| minute | RSS MiB | open fds | p99 allowed ms | audit MiB | allowed | denied | cancelled | garbage | errors |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
rows = []
minute = 0
while time.time() < deadline:
    time.sleep(min(60, max(0.0, deadline - time.time())))
    minute += 1
    with lock:
        snap = dict(stats); lat = sorted(stats["lat"])
        for k in ("allowed", "denied", "cancelled", "garbage", "errors"):
            stats[k] = 0
        stats["lat"] = []
    p99 = lat[int(len(lat) * 0.99)] * 1000 if lat else 0.0
    row = (minute, rss_mib(), fds(), p99, audit_bytes() / 2**20)
    rows.append(row)
    print("| %d | %.1f | %d | %.2f | %.1f | %d | %d | %d | %d | %d |" % (
        row + (snap["allowed"], snap["denied"], snap["cancelled"], snap["garbage"], snap["errors"])), flush=True)
for t in threads:
    t.join(timeout=15)
if len(rows) >= 2:
    first, last = rows[0], rows[-1]
    print("\nRSS first→last minute: %.1f → %.1f MiB (%.2fx); fds %d → %d; p99 %.2f → %.2f ms" % (
        first[1], last[1], last[1] / max(first[1], 0.1), first[2], last[2], first[3], last[3]))
