#!/usr/bin/env python3
"""fdatasync after an append that grows the file, against one that overwrites zeros
written ahead (what the journal's segments do since session 13, `storage::PREFILL_BYTES`).

Usage: python3 benches/scripts/fsync_prefill.py [DIR] [SYNCS] [BYTES_PER_SYNC]
(defaults: the current directory, 3000 syncs of 1500 bytes, about a batch of 30 orders).
Prints the mean, p50 and p99 of each way, three rounds alternated.
"""
import os
import sys
import time


def run(directory, prefill, syncs, size):
    path = os.path.join(directory, "fsync_prefill_test.bin")
    if os.path.exists(path):
        os.remove(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        if prefill:
            os.write(fd, b"\0" * (syncs * size + 4096))
            os.fsync(fd)
            os.lseek(fd, 0, os.SEEK_SET)
        buf = b"x" * size
        times = []
        for _ in range(syncs):
            os.write(fd, buf)
            t = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.remove(path)
    times.sort()
    n = len(times)
    return "mean %4.0f us  p50 %4.0f us  p99 %4.0f us" % (
        sum(times) / n * 1e6,
        times[n // 2] * 1e6,
        times[int(n * 0.99)] * 1e6,
    )


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    syncs = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 1500
    for _ in range(3):
        print("append (file grows)   ", run(directory, False, syncs, size))
        print("overwrite (prefilled) ", run(directory, True, syncs, size))


if __name__ == "__main__":
    main()
