#!/usr/bin/env python3
"""The disk's fdatasync latency where the audit log lives: appends a
200-byte line and calls fdatasync, ITERATIONS times (bounded to 10 s),
and prints "p50_ms p99_ms count".

usage: fsync_p50.py DIR [ITERATIONS]
"""
import os
import sys
import time


def main():
    d = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    path = os.path.join(d, "fsync-probe.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    line = b"x" * 199 + b"\n"
    samples = []
    stop = time.monotonic() + 10
    try:
        for _ in range(n):
            if time.monotonic() > stop:
                break
            os.write(fd, line)
            t = time.perf_counter()
            os.fdatasync(fd)
            samples.append((time.perf_counter() - t) * 1000)
    finally:
        os.close(fd)
        os.unlink(path)
    samples.sort()
    p = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]
    print(f"{p(0.5):.3f} {p(0.99):.3f} {len(samples)}")


if __name__ == "__main__":
    main()
