#!/usr/bin/env python3
"""Semaphore and shared-lock figures for scripts/bench.sh (contract section 15).

    bench_kinds.py <instance host:port> <redis port> <admin token> <seconds>

Environment: KINDS_CONC (connections, default 32), KINDS_PROCS (client
processes, default 4), KINDS_LIMIT (permits of the hot semaphore, default 100),
KINDS_PERMITS (permits filled for the memory figures, default 10000).

Every figure gets a fresh tenant (enterprise tier). Prints one
`key=value ...` line per figure:
- excl / sem / shared: KINDS_CONC connections in a closed loop of 1-item
  reserve then unreserve, for the run's seconds: of unique names (excl, the
  exclusive baseline), of one hot semaphore of KINDS_LIMIT permits (sem), of
  one hot read lock (shared). Counts complete pairs (`pairs_per_s`) and
  refusals (ALREADY_HELD: the hot resource was full), and gives the Redis time
  per script call (`INFO commandstats`, EVALSHA, reset before the run). The
  order is excl, sem, shared, shared, sem, excl, half the seconds each; each
  figure is the mean of its two runs, so drift weighs on all alike. The
  clients are Python (several processes), slower than examples/loadgen.rs: the
  ratio between the kinds is the figure, and the Redis time per call is free
  of the client.
- mem_sem1 / mem_sem100 / mem_excl: `INFO memory` used_memory and DBSIZE
  before and after KINDS_PERMITS TTL'd holds (ttlSeconds 3600), in batches of
  100 items: one semaphore of KINDS_PERMITS permits (a batch repeats the
  resource: each item takes a permit), KINDS_PERMITS/100 semaphores of 100, and
  as many exclusive reservations of distinct names; bytes and keys per hold,
  and the same without the tenant's event stream (`MEMORY USAGE` of its `ev`
  key: one RESERVED event per hold, here not amortised over 100,000 as in the
  bytes-per-reservation figure).
"""

import base64
import hashlib
import http.client
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time

ADDR, RPORT, TOKEN, SECS = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
CONC = int(os.environ.get("KINDS_CONC", "32"))
PROCS = max(1, min(int(os.environ.get("KINDS_PROCS", "4")), CONC))
LIMIT = int(os.environ.get("KINDS_LIMIT", "100"))
PERMITS = int(os.environ.get("KINDS_PERMITS", "10000"))
if not (100 <= PERMITS <= 10000 and PERMITS % 100 == 0):
    raise SystemExit("KINDS_PERMITS must be a multiple of 100 from 100 to 10000 (a semaphore's most permits)")


def conn():
    host, port = ADDR.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=60)


def post(c, path, body, headers):
    h = {"Content-Type": "application/json"}
    h.update(headers)
    c.request("POST", path, json.dumps(body), h)
    r = c.getresponse()
    data = r.read()
    return r.status, json.loads(data) if data else None


def new_tenant():
    """A fresh enterprise tenant: (tenant id, api key)."""
    status, b = post(conn(), "/api/v1/admin/tenants", {"name": "bench", "tier": "enterprise"},
                     {"Authorization": f"Bearer {TOKEN}"})
    if status != 201:
        raise SystemExit(f"creating a tenant answered {status}: {b}")
    return b["tenant"]["id"], b["apiKey"]["key"]


def rc(*args):
    return subprocess.run(["redis-cli", "-p", RPORT, *args], capture_output=True,
                          text=True, check=True).stdout


def info_field(section, name):
    for line in rc("INFO", section).splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def used_memory():
    return int(info_field("memory", "used_memory"))


def evalsha_usec_per_call():
    for line in rc("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_evalsha:"):
            f = dict(p.split("=") for p in line.split(":", 1)[1].strip().split(","))
            return float(f["usec_per_call"])
    return float("nan")


def prefix_of(tid):
    """The tenant's key prefix c:{<tag>}:, as the store builds it."""
    tag = base64.urlsafe_b64encode(hashlib.sha256(tid.encode()).digest()[:8]).decode().rstrip("=")
    return "c:{%s}:" % tag


def kind_fields(kind):
    return {"excl": {}, "sem": {"limit": LIMIT}, "shared": {"mode": "shared"}}[kind]


def worker(args):
    """One client process: `threads` connections in a closed loop until
    `stop` (a time.time()); returns (pairs, refused, errors, first error)."""
    kind, key, first, threads, stop = args
    hdr = {"X-Api-Key": key}
    counts = [[0, 0, 0, ""] for _ in range(threads)]

    def run(t):
        n = first + t
        c = conn()
        me = f"c{n}"
        i = 0
        while time.time() < stop:
            i += 1
            res = f"x-{n}-{i}" if kind == "excl" else "hot"
            item = dict({"resource": res, "requester": me, "ttlSeconds": 60}, **kind_fields(kind))
            try:
                s, b = post(c, "/api/v1/Reservation/reserve", [item], hdr)
                r = b["results"][0] if s == 200 else {}
                if r.get("status") == "ALREADY_HELD":
                    counts[t][1] += 1
                    continue
                if r.get("status") != "RESERVED":
                    raise ValueError(f"reserve answered {s}: {b}")
                s, b = post(c, "/api/v1/Reservation/unreserve",
                            [{"resource": res, "requester": me, "releaseToken": r["releaseToken"]}], hdr)
                if s != 200 or b["results"][0]["status"] != "UNRESERVED":
                    raise ValueError(f"unreserve answered {s}: {b}")
                counts[t][0] += 1
            except (OSError, ValueError, KeyError, http.client.HTTPException) as e:
                counts[t][2] += 1
                counts[t][3] = counts[t][3] or str(e)[:200]
                c = conn()

    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return (sum(x[0] for x in counts), sum(x[1] for x in counts), sum(x[2] for x in counts),
            next((x[3] for x in counts if x[3]), ""))


def timed(kind, secs):
    """One run of `kind` for `secs` on a fresh tenant: (pairs/s, refused,
    errors, first error, Redis µs per script call)."""
    _, key = new_tenant()
    per = [CONC // PROCS + (1 if p < CONC % PROCS else 0) for p in range(PROCS)]
    firsts = [sum(per[:p]) for p in range(PROCS)]
    rc("CONFIG", "RESETSTAT")
    t0 = time.time()
    stop = t0 + secs
    with multiprocessing.Pool(PROCS) as pool:
        out = pool.map(worker, [(kind, key, firsts[p], per[p], stop) for p in range(PROCS)])
    elapsed = time.time() - t0
    usec = evalsha_usec_per_call()
    pairs = sum(o[0] for o in out)
    return (pairs / elapsed, sum(o[1] for o in out), sum(o[2] for o in out),
            next((o[3] for o in out if o[3]), ""), usec)


def fill(kind, total):
    """`total` TTL'd holds in batches of 100 on a fresh tenant: one
    semaphore of `total` permits (sem1), semaphores of 100 (sem100) or
    distinct exclusive names (excl). Prints the memory line."""
    tid, key = new_tenant()
    hdr = {"X-Api-Key": key}
    c = conn()
    k0, m0 = int(rc("DBSIZE")), used_memory()
    retried = 0
    for b in range(total // 100):
        if kind == "sem1":
            items = [{"resource": "pool", "limit": total} for _ in range(100)]
        elif kind == "sem100":
            items = [{"resource": f"pool/{b:03}", "limit": 100} for _ in range(100)]
        else:
            items = [{"resource": f"orders/{b:03}/{i:02}"} for i in range(100)]
        for it in items:
            it.update({"requester": "fill", "ttlSeconds": 3600})
        for _ in range(8):
            s, body = post(c, "/api/v1/Reservation/reserve", items, hdr)
            if s not in (429, 503):
                break
            retried += 1
            time.sleep(0.2)
        bad = [r for r in (body or {}).get("results", []) if r.get("status") != "RESERVED"]
        if s != 200 or bad:
            print(f"mem_{kind} FAILED: batch {b} answered {s}: {json.dumps((bad or [body])[0])[:300]}",
                  flush=True)
            return False
    time.sleep(1)
    k1, m1 = int(rc("DBSIZE")), used_memory()
    ev = int(rc("MEMORY", "USAGE", prefix_of(tid) + "ev", "SAMPLES", "0").strip() or 0)
    n = total // 100 * 100
    what = {"sem1": f"one semaphore of {n} permits", "sem100": f"{n // 100} semaphores of 100",
            "excl": f"{n} exclusive reservations"}[kind]
    print(f"mem_{kind} holds={n} ({what.replace(' ', '_')}) bytes_per_hold={(m1 - m0) / n:.0f} "
          f"bytes_per_hold_without_events={(m1 - m0 - ev) / n:.0f} keys_per_hold={(k1 - k0) / n:.4f} "
          f"used_memory_delta_B={m1 - m0} event_stream_B={ev} retried={retried} tenant={tid}",
          flush=True)
    return True


def main():
    half = max(1.0, SECS / 2)
    runs = {}
    for kind in ("excl", "sem", "shared", "shared", "sem", "excl"):
        runs.setdefault(kind, []).append(timed(kind, half))
    errors = 0
    for kind in ("excl", "sem", "shared"):
        rs = runs[kind]
        rate = sum(r[0] for r in rs) / len(rs)
        usec = sum(r[4] for r in rs) / len(rs)
        err = sum(r[2] for r in rs)
        errors += err
        first = next((r[3] for r in rs if r[3]), "")
        what = {"excl": "unique_names", "sem": f"one_semaphore_of_{LIMIT}",
                "shared": "one_read_lock"}[kind]
        print(f"{kind} conns={CONC} procs={PROCS} on={what} pairs_per_s={rate:.0f} "
              f"refused={sum(r[1] for r in rs)} errors={err} redis_usec_per_call={usec:.1f}"
              + (f" first_error={json.dumps(first)}" if first else ""), flush=True)
        runs[kind] = (rate, usec)
    for kind in ("sem", "shared"):
        print(f"ratio_{kind} pairs={runs[kind][0] / runs['excl'][0]:.3f} "
              f"redis_usec_per_call={runs[kind][1] / runs['excl'][1]:.3f}", flush=True)
    for kind in ("sem1", "sem100", "excl"):
        errors += 0 if fill(kind, PERMITS) else 1
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
