#!/usr/bin/env python3
"""Waiting acquire and Idempotency-Key figures for scripts/bench.sh.

    bench_waits.py <instance A host:port> <instance B host:port> <api key> <seconds>

Both instances share one Redis. Prints one `key=value ...` line per figure:
- handover_same / handover_cross: latency from sending a release to the
  waiter's answer, waiter on the releasing instance / on the other one
  (p50, p99 over the rounds);
- line64 / poll64: grants per second of one hot resource passed along 64
  clients, waiting in line (waitSeconds) versus polling with a 10 ms back-off
  (what clients do without a wait);
- idem: mean latency of a 1-item reserve+unreserve with an Idempotency-Key on
  both, against the same without.
"""

import http.client
import json
import sys
import threading
import time
import uuid

A, B, KEY, SECS = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])


class Client:
    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=120)

    def post(self, path, body, headers=None):
        h = {"X-Api-Key": KEY, "Content-Type": "application/json"}
        h.update(headers or {})
        self.conn.request("POST", path, json.dumps(body), h)
        r = self.conn.getresponse()
        data = r.read()
        return r.status, json.loads(data) if data else None


def item(resource, requester, ttl=30):
    return [{"resource": resource, "requester": requester, "ttlSeconds": ttl}]


def reserve(c, resource, requester, query="", headers=None):
    status, body = c.post("/api/v1/Reservation/reserve" + query, item(resource, requester), headers)
    if status != 200:
        raise SystemExit(f"reserve answered {status}: {body}")
    return body["results"][0]


def unreserve(c, resource, requester, token, headers=None):
    status, body = c.post(
        "/api/v1/Reservation/unreserve",
        [{"resource": resource, "requester": requester, "releaseToken": token}],
        headers,
    )
    if status != 200 or body["results"][0]["status"] != "UNRESERVED":
        raise SystemExit(f"unreserve answered {status}: {body}")


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def handover(waiter_addr, rounds):
    holder = Client(A)
    lat = []
    for i in range(rounds):
        res = f"h-{uuid.uuid4().hex}"
        held = reserve(holder, res, "holder")
        answer = {}

        def wait():
            answer["r"] = reserve(Client(waiter_addr), res, "waiter", "?waitSeconds=10")
            answer["t"] = time.perf_counter()

        t = threading.Thread(target=wait)
        t.start()
        # Until the waiter is in line.
        while True:
            _, body = holder.post("/api/v1/Reservation/check", [{"resource": res}])
            if body["results"][0].get("queueLength") == 1:
                break
            time.sleep(0.002)
        t0 = time.perf_counter()
        unreserve(holder, res, "holder", held["releaseToken"])
        t.join()
        if answer["r"]["status"] != "RESERVED":
            raise SystemExit(f"the waiter got {answer['r']}")
        lat.append((answer["t"] - t0) * 1000)
    return f"rounds={rounds} p50_ms={pct(lat, 0.5):.2f} p99_ms={pct(lat, 0.99):.2f}"


def hot(waiting, clients=64):
    res = f"hot-{uuid.uuid4().hex}"
    grants = [0] * clients
    stop = time.perf_counter() + SECS

    def run(n):
        c = Client(A if n % 2 == 0 else B)
        me = f"c{n}"
        while time.perf_counter() < stop:
            r = reserve(c, res, me, "?waitSeconds=5" if waiting else "")
            if r["status"] == "RESERVED":
                grants[n] += 1
                unreserve(c, res, me, r["releaseToken"])
            elif not waiting:
                time.sleep(0.010)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = sum(grants)
    return f"clients={clients} grants={total} grants_per_s={total / (time.perf_counter() - t0):.0f}"


def idem(n=1000):
    c = Client(A)
    out = {}
    for keyed in (False, True, False, True):
        t0 = time.perf_counter()
        for i in range(n):
            res = f"i-{uuid.uuid4().hex}"
            hdr = {"Idempotency-Key": uuid.uuid4().hex} if keyed else None
            r = reserve(c, res, "r", headers=hdr)
            hdr = {"Idempotency-Key": uuid.uuid4().hex} if keyed else None
            unreserve(c, res, "r", r["releaseToken"], hdr)
        out.setdefault(keyed, []).append((time.perf_counter() - t0) * 1000 / n)
    plain, keyed = sum(out[False]) / 2, sum(out[True]) / 2
    return f"pairs={n * 2} plain_pair_ms={plain:.3f} keyed_pair_ms={keyed:.3f} ratio={keyed / plain:.2f}"


print("handover_same", handover(A, 100))
print("handover_cross", handover(B, 100))
print("line64", hot(True))
print("poll64", hot(False))
print("idem", idem())
