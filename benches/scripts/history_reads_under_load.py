#!/usr/bin/env python3
"""History reads during a create load: N readers loop on a history read, one prober
loops on GET /health every 5 ms; prints the latency of each.

Usage: history_reads_under_load.py BASE_URL ADMIN_ID ADMIN_SECRET DELAY_S DURATION_S [READERS]
Run by history_reads_under_load.sh while `bourse bench http` drives the create load.
"""
import base64
import json
import sys
import threading
import time
import urllib.request

base, admin_id, admin_secret = sys.argv[1], sys.argv[2], sys.argv[3]
delay, duration = float(sys.argv[4]), float(sys.argv[5])
readers = int(sys.argv[6]) if len(sys.argv) > 6 else 8

basic = base64.b64encode(f"{admin_id}:{admin_secret}".encode()).decode()
req = urllib.request.Request(
    base + "/v1/oauth2/token",
    data=b"grant_type=client_credentials&scope=admin",
    headers={"Content-Type": "application/x-www-form-urlencoded", "Authorization": "Basic " + basic},
)
token = json.load(urllib.request.urlopen(req))["access_token"]
time.sleep(delay)
end = time.time() + duration
reads, health = [], []


def reader():
    # A history read: it waits until the store holds every acknowledged command.
    while time.time() < end:
        s = time.perf_counter()
        r = urllib.request.Request(
            base + "/v1/admin/requests?limit=1", headers={"Authorization": "Bearer " + token}
        )
        urllib.request.urlopen(r).read()
        reads.append((time.perf_counter() - s) * 1000)


def prober():
    while time.time() < end:
        s = time.perf_counter()
        urllib.request.urlopen(base + "/health").read()
        health.append((time.perf_counter() - s) * 1000)
        time.sleep(0.005)


threads = [threading.Thread(target=reader) for _ in range(readers)]
threads.append(threading.Thread(target=prober))
for t in threads:
    t.start()
for t in threads:
    t.join()
for name, lat in (("history reads", reads), ("health probe", health)):
    lat.sort()
    n = len(lat)
    print(f"{name}: {n} p50 {lat[n // 2]:.1f} ms p99 {lat[n * 99 // 100]:.1f} ms max {lat[-1]:.1f} ms")
