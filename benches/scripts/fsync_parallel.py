#!/usr/bin/env python3
"""How fast this disk makes small appends durable from 1, 2 or 3 threads at once.

Each thread pwrite()s 3,000 bytes at the next offset of one file and fdatasync()s it, for
3 s; prints syncs/s and the per-sync latency. With --prezero the file is first filled with
64 MiB of zeros (no metadata change per sync). Behind the README's session-8 note on
overlapped journal syncs. Usage: benches/scripts/fsync_parallel.py [DIR] (default: .)
"""
import os
import sys
import threading
import time


def run(directory, nthreads, prezero, dur=3.0, sz=3000):
    path = os.path.join(directory, "fsync_parallel.test")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    if prezero:
        os.write(fd, b"\0" * (64 << 20))
        os.fsync(fd)
    off = [0]
    lock = threading.Lock()
    lat = []
    stop = time.time() + dur

    def worker():
        buf = b"x" * sz
        while time.time() < stop:
            with lock:
                o = off[0]
                off[0] += sz
            os.pwrite(fd, buf, o)
            t = time.perf_counter()
            os.fdatasync(fd)
            with lock:
                lat.append(time.perf_counter() - t)

    threads = [threading.Thread(target=worker) for _ in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    os.close(fd)
    os.unlink(path)
    lat.sort()
    print(
        f"threads={nthreads} prezero={prezero} syncs/s={len(lat) / dur:.0f} "
        f"p50={lat[len(lat) // 2] * 1e6:.0f}us mean={sum(lat) / len(lat) * 1e6:.0f}us"
    )


if __name__ == "__main__":
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    for n in (3, 2, 1, 1):
        for prezero in (False, True):
            run(directory, n, prezero)
