"""Redis time per permit operation by the size of a semaphore's group.

    python3 scripts/bench_group_cost.py HOST:PORT REDIS_PORT ADMIN_TOKEN

Against a running instance (give the enterprise tier a high write limit, e.g.
COOPLOCKER_RATE_LIMITS=enterprise=1000000) on its own Redis: fills one
semaphore of 10,000 to N holders, then takes and gives back one more permit
100 times over one connection and prints the Redis time per script call
(INFO commandstats). docs/benchmarks.md has the figures."""
import json, sys, time, urllib.request, subprocess
B = "http://" + sys.argv[1]
RPORT = sys.argv[2]
TOKEN = sys.argv[3]
def req(path, body, key=None, admin=False, method="POST"):
    h={"Content-Type":"application/json"}
    if admin: h["Authorization"]="Bearer "+TOKEN
    if key: h["X-Api-Key"]=key
    r=urllib.request.Request(B+path, data=json.dumps(body).encode(), headers=h, method=method)
    return json.load(urllib.request.urlopen(r))
t=req("/api/v1/admin/tenants", {"name":"grp","tier":"enterprise"}, admin=True); key=t["apiKey"]["key"]
def usec():
    out=subprocess.run(["redis-cli","-p",RPORT,"INFO","commandstats"],capture_output=True,text=True).stdout
    for l in out.splitlines():
        if l.startswith("cmdstat_evalsha:"):
            d=dict(kv.split("=") for kv in l.split(":",1)[1].split(","))
            return int(d["calls"]), int(d["usec"])
    return 0,0
filled=0
for size in [10, 100, 1000, 5000, 9999]:
    while filled < size:
        n=min(100, size-filled)
        req("/api/v1/Reservation/reserve", [{"resource":"big","requester":f"f{filled+i}","limit":10000,"ttlSeconds":3600} for i in range(n)], key)
        filled+=n
    c0,u0=usec(); t0=time.time()
    for i in range(100):
        r=req("/api/v1/Reservation/reserve", [{"resource":"big","requester":"x","limit":10000,"ttlSeconds":3600}], key)["results"][0]
        req("/api/v1/Reservation/unreserve", [{"resource":"big","requester":"x","releaseToken":r["releaseToken"]}], key)
    c1,u1=usec()
    print(f"holders={size}: Redis usec per script call (acquire or release of one permit) = {(u1-u0)/(c1-c0):.0f}, HTTP pair {1000*(time.time()-t0)/100:.2f} ms")
