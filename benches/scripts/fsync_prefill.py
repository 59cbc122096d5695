#!/usr/bin/env python3
"""fdatasync after an append that grows the file, against one into space allocated ahead
with fallocate (what the journal's segments do since session 13, `storage::PREFILL_BYTES`)
and one over zeros written ahead (as fast, but every byte is written twice).

Usage: python3 benches/scripts/fsync_prefill.py [DIR] [SYNCS] [BYTES_PER_SYNC]
(defaults: the current directory, 3000 syncs of 1500 bytes, about a batch of 30 orders).
Prints the mean, p50 and p99 of each way (append: the file grows at every sync), three
rounds alternated.
"""
import os
import sys
import time


def run(directory, mode, syncs, size):
    path = os.path.join(directory, "fsync_prefill_test.bin")
    if os.path.exists(path):
        os.remove(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        if mode == "zeros":
            os.write(fd, b"\0" * (syncs * size + 4096))
            os.fsync(fd)
            os.lseek(fd, 0, os.SEEK_SET)
        elif mode == "fallocate":
            os.posix_fallocate(fd, 0, syncs * size + 4096)
            os.fsync(fd)
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
        for mode in ("append", "fallocate", "zeros"):
            print("%-10s" % mode, run(directory, mode, syncs, size))


if __name__ == "__main__":
    main()
