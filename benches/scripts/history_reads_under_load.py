#!/usr/bin/env python3
"""History reads (or deposit requests) during a create load: N clients loop on a history
read (`reads`) or on `POST /v1/wallet/deposits` with a new externalId each (`deposits`),
one prober loops on GET /health every 5 ms; prints the latency of each.

Usage: history_reads_under_load.py BASE_URL ADMIN_ID ADMIN_SECRET DELAY_S DURATION_S [N] [MODE]
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
mode = sys.argv[7] if len(sys.argv) > 7 else "reads"

basic = base64.b64encode(f"{admin_id}:{admin_secret}".encode()).decode()
req = urllib.request.Request(
    base + "/v1/oauth2/token",
    # The admin scope for the back-office read; the client's other scopes for deposits.
    data=b"grant_type=client_credentials&scope=admin" if mode == "reads" else b"grant_type=client_credentials",
    headers={"Content-Type": "application/x-www-form-urlencoded", "Authorization": "Basic " + basic},
)
token = json.load(urllib.request.urlopen(req))["access_token"]
time.sleep(delay)
end = time.time() + duration
reads, health = [], []


def reader():
    n = 0
    while time.time() < end:
        s = time.perf_counter()
        if mode == "reads":
            # A history read: it waits until the store holds every acknowledged command.
            r = urllib.request.Request(
                base + "/v1/admin/requests?limit=1", headers={"Authorization": "Bearer " + token}
            )
        else:
            n += 1
            body = {"currency": "SEK", "amount": "1", "externalId": f"d{threading.get_ident()}-{n}"}
            r = urllib.request.Request(
                base + "/v1/wallet/deposits",
                data=json.dumps(body).encode(),
                headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"},
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
for name, lat in ((f"{mode}", reads), ("health probe", health)):
    lat.sort()
    n = len(lat)
    print(f"{name}: {n} p50 {lat[n // 2]:.1f} ms p99 {lat[n * 99 // 100]:.1f} ms max {lat[-1]:.1f} ms")
