#!/usr/bin/env bash
# Benchmark: one cooplocker instance on one Redis (and, for comparison, a
# throwaway etcd and redis-benchmark), all on 127.0.0.1, every load bounded in
# time and count. Prints labelled figures; docs/benchmarks.md says how each one
# is measured.
#   bash scripts/bench.sh [seconds-per-run (default 10)]
# Knobs (environment):
#   SECS=10          seconds per timed run (the argument wins)
#   CONC=64          connections of the 1-item HTTP runs (and of the etcd run)
#   MEM_N=100000     TTL'd reservations for the bytes-per-reservation figure
#   LEFT_N=20000     names reserved and unreserved for the leftover figure
#   BIG=1000000      reservations in the big tenant of the p99 figure
#   SMALL=1000       reservations in the small tenant of the p99 figure
#   P99_CONC=16      connections of the big/small p99 runs
#   BATCH_CONC=16    connections of the 100-item reserve-only run
#   BATCH_TTL=3600   its ttlSeconds (0: none)
#   TENANTS=2000     idle tenants of the sweeper figure
#   SWEEP_SECS=10    its measuring window (seconds)
#   FILL_CONC=2      connections of the fills (1000-item batches)
#   ETCD=1 SSE=1 RAW=1 WAITS=1 KINDS=1   0 skips the etcd comparison / the SSE
#                        runs / the raw reserve.lua runs / the waiting and
#                        Idempotency-Key figures (scripts/bench_waits.py, with
#                        a second instance) / the semaphore and shared-lock
#                        figures (scripts/bench_kinds.py); SSE_CLIENTS="1000 5000",
#                        SSE_RATE=20; KINDS_CONC=32 KINDS_PROCS=4 (its clients),
#                        KINDS_LIMIT=100 (the hot semaphore's permits),
#                        KINDS_PERMITS=10000 (permits of its memory figures)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-${SECS:-10}}
CONC=${CONC:-64}
MEM_N=${MEM_N:-100000}
LEFT_N=${LEFT_N:-20000}
BIG=${BIG:-1000000}
SMALL=${SMALL:-1000}
P99_CONC=${P99_CONC:-16}
BATCH_CONC=${BATCH_CONC:-16}
BATCH_TTL=${BATCH_TTL:-3600}
TENANTS=${TENANTS:-2000}
SWEEP_SECS=${SWEEP_SECS:-10}
FILL_CONC=${FILL_CONC:-2}
command -v redis-server >/dev/null || { echo "redis-server missing: run bash scripts/test.sh first (it installs it)"; exit 1; }
command -v redis-benchmark >/dev/null || { echo "redis-benchmark missing: apt-get install redis-tools"; exit 1; }
if [ "${ETCD:-1}" = 1 ] && ! command -v etcd >/dev/null; then
  echo "etcd missing (apt-get install etcd-server), or run with ETCD=0"; exit 1
fi

ulimit -n 65536 2>/dev/null || true # thousands of SSE sockets
cargo build --release --quiet --bin cooplocker --example loadgen --example ssebench --example dump_scripts
LOADGEN=target/release/examples/loadgen
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TOKEN=bench-admin-token-0123456789
RPID="" APID="" EPID="" BPID=""
TMPD=$(mktemp -d /tmp/bench-run.XXXXXX) # etcd's data, Redis dirs, logs
cleanup() {
  for p in $APID $BPID $EPID $RPID; do kill "$p" 2>/dev/null || true; done
  for p in $APID $BPID $EPID $RPID; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMPD"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# The instance runs from a copy: a rebuild (or a broad kill by name of another
# checkout's target/release/cooplocker) during the run does not touch it.
cp target/release/cooplocker "$TMPD/bench-instance"
wait_for() { # $1 = what, then a command; at most 20 s
  local what=$1 i
  shift
  for ((i = 0; i < 400; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "$what did not come up" >&2
  exit 1
}
# Starts a fresh Redis and one instance on it: sets RPORT, HPORT, RPID, APID.
# Arguments: Redis persistence settings (default: none at all).
start_stack() {
  RPORT=$(free_port)
  HPORT=$(free_port)
  local persistence=(--save "" --appendonly no)
  [ $# -eq 0 ] || persistence=("$@")
  mkdir -p "$TMPD/redis-$RPORT"
  redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$TMPD/redis-$RPORT" "${persistence[@]}" >/dev/null &
  RPID=$!
  wait_for redis redis-cli -p "$RPORT" ping
  # Rate limits far above what this machine can offer: every request still runs
  # the limiter (in the same script), none is refused.
  RUST_LOG=warn REDIS_URL="redis://127.0.0.1:$RPORT" COOPLOCKER_ADMIN_TOKEN=$TOKEN \
    COOPLOCKER_LISTEN="127.0.0.1:$HPORT" COOPLOCKER_SSE_MAX_PER_TENANT=20000 \
    COOPLOCKER_RATE_LIMITS=free=1000000,starter=1000000,pro=1000000,enterprise=1000000 \
    "$TMPD/bench-instance" >"$TMPD/cooplocker-$HPORT.log" 2>&1 &
  APID=$!
  wait_for cooplocker curl -sf "http://127.0.0.1:$HPORT/readyz"
}
# Stops the run with a clear message when the instance (or its Redis) is gone
# (an exited child stays a zombie until waited for: kill -0 still succeeds).
alive() {
  local p st
  for p in $APID $RPID; do
    [[ "$(ps -o stat= -p "$p" 2>/dev/null)" == [^Z]* ]] && continue
    st=0
    wait "$p" 2>/dev/null || st=$?
    echo "ABORTED: $([ "$p" = "$APID" ] && echo "the cooplocker instance" || echo "Redis") (pid $p) is gone (exit status $st); the instance's last log lines:" >&2
    tail -5 "$TMPD/cooplocker-$HPORT.log" >&2
    [ "$p" = "$APID" ] && APID="" || RPID=""
    exit 1
  done
}
stop_stack() {
  kill "$APID" "$RPID" 2>/dev/null || true
  wait "$APID" "$RPID" 2>/dev/null || true
  APID="" RPID=""
}
rc() { redis-cli -p "$RPORT" "$@"; }
used_memory() { rc INFO memory | tr -d '\r' | awk -F: '$1 == "used_memory" { print $2 }'; }
dbsize() { rc DBSIZE; }
# Every figure gets a fresh tenant, so no run inserts into indexes an earlier run grew.
new_tenant() { # prints "<tenant id> <api key>"
  local b
  b=$(curl -sf -X POST "http://127.0.0.1:$HPORT/api/v1/admin/tenants" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -d '{"name":"bench","tier":"enterprise"}') ||
    { echo "new_tenant: the admin API did not answer" >&2; return 1; }
  python3 -c 'import json,sys; b=json.load(sys.stdin); print(b["tenant"]["id"], b["apiKey"]["key"])' <<<"$b"
}
key_of() { new_tenant | cut -d' ' -f2; }
field() { # $1 = a loadgen line, $2 = a field name: prints its value
  tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'
}
ERRORS=()
SUMMARY=() # one line per figure of the table in docs/benchmarks.md, printed last
# Runs loadgen against the instance (not in a subshell, so ERRORS keeps every
# run that saw errors): its line is left in LG. $1 = label.
lg() {
  local label=$1
  shift
  alive
  LG=$("$LOADGEN" --addr "127.0.0.1:$HPORT" "$@")
  check "$label" "$LG"
}
check() { # $1 = label, $2 = a loadgen line
  if [[ "$2" == *ERRORS_SEEN=1* || "$2" == *complete=false* ]]; then
    ERRORS+=("$1")
    echo "WARNING: $1 had errors: $2" >&2
  fi
}
ratio() { # $1 / $2 to 3 decimals, n/a when either is missing or $2 is 0
  python3 -c "
import sys
try: print(f'{float(sys.argv[1]) / float(sys.argv[2]):.3f}')
except (ValueError, ZeroDivisionError): print('n/a')" "${1:-}" "${2:-}"
}
# The keys of one tenant by kind (the tenant id replaced by T, the part after
# the kind by *), with MEMORY USAGE averaged over up to 20 keys of each kind.
key_kinds() { # $1 = tenant id: that tenant's keys by kind, with MEMORY USAGE
  python3 - "$RPORT" "$1" <<'PY'
import base64, collections, hashlib, random, subprocess, sys
port, tid = sys.argv[1], sys.argv[2]
prefix = "c:{%s}:" % base64.urlsafe_b64encode(hashlib.sha256(tid.encode()).digest()[:8]).decode().rstrip("=")
def rc(*a):
    return subprocess.run(["redis-cli", "-p", port, *a], capture_output=True, text=True).stdout
kinds = collections.defaultdict(list)
for k in rc("--scan", "--pattern", prefix + "*").splitlines():
    rest = k[len(prefix):]
    kind = rest if rest in ("t", "k", "ev", "xc", "xd", "i:", "q:", "i!", "q!") else rest.split(":")[0] + ":*"
    kinds[prefix + kind].append(k)
for kind, ks in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
    sample = random.sample(ks, min(len(ks), 20))
    use = [int(rc("MEMORY", "USAGE", k, "SAMPLES", "0").strip() or 0) for k in sample]
    avg = sum(use) / len(use)
    print(f"    {kind:<24} keys={len(ks):<8} memory_usage_avg_B={avg:.0f} total_MB={avg * len(ks) / 1e6:.2f}")
PY
}

start_stack
echo "machine: $(nproc) cores, load average $(cut -d" " -f1-3 /proc/loadavg) at the start, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); ${SECS}s per timed run; redis $(redis-server --version | grep -o 'v=[0-9.]*')"

echo "== Redis memory per reservation (fresh Redis, one fresh tenant per figure)"
# Reserve then unreserve LEFT_N distinct names (no TTL), batches of 1000; what stays?
tid=$(new_tenant)
k0=$(dbsize) m0=$(used_memory)
lg leftover --key "${tid#* }" --fill "$LEFT_N" --prefix left --batch 1000 --concurrency "$FILL_CONC" --unreserve
out=$LG
sleep 3 # background cleanup, if any
k1=$(dbsize) m1=$(used_memory)
echo "leftover after $LEFT_N reserve+unreserve (no TTL): keys_delta=$((k1 - k0)) used_memory_delta_B=$((m1 - m0)) [fill: $out]"
SUMMARY+=("left after $LEFT_N names reserved and unreserved (no TTL): keys=$((k1 - k0)) used_memory_B=$((m1 - m0))")
key_kinds "${tid%% *}"
# MEM_N TTL'd reservations orders/NNN/NNNN in batches of 1000.
tid=$(new_tenant)
k0=$(dbsize) m0=$(used_memory)
lg ttl-fill --key "${tid#* }" --fill "$MEM_N" --prefix orders --batch 1000 --concurrency "$FILL_CONC" --ttl 3600
out=$LG
sleep 1
k1=$(dbsize) m1=$(used_memory)
echo "memory per live TTL reservation ($MEM_N, TTL 1 h): bytes_per_reservation=$(((m1 - m0) / MEM_N)) keys_per_reservation=$(python3 -c "print(round(($k1 - $k0) / $MEM_N, 3))") (used_memory_delta_B=$((m1 - m0)) keys_delta=$((k1 - k0))) [fill: $out]"
SUMMARY+=("Redis per live TTL reservation ($MEM_N, TTL 1 h, batches of 1000): used_memory_B=$(((m1 - m0) / MEM_N)) keys=$(python3 -c "print(round(($k1 - $k0) / $MEM_N, 3))")")
key_kinds "${tid%% *}"

echo "== HTTP throughput ($CONC connections unless said)"
lg 1-item-pairs --key "$(key_of)" --concurrency "$CONC" --seconds "$SECS" --batch 1
http_single=$LG
echo "HTTP   1-item reserve+unreserve: $http_single"
# Redis time per script call and per item (INFO commandstats), for the
# before/after comparison of the data model.
evalsha_cost() { # $1 = items per call: prints "calls=… usec_per_call=… usec_per_item=…"
  rc INFO commandstats | tr -d '\r' | python3 -c '
import sys
n = int(sys.argv[1])
for l in sys.stdin:
    if l.startswith("cmdstat_evalsha:"):
        f = dict(p.split("=") for p in l.split(":", 1)[1].split(","))
        per = float(f["usec_per_call"])
        print("calls=%s usec_per_call=%.1f usec_per_item=%.2f" % (f["calls"], per, per / n))' "$1"
}
tid=$(new_tenant)
rc CONFIG RESETSTAT >/dev/null
lg 1-item-reserve --key "${tid#* }" --concurrency "$CONC" --seconds "$SECS" --batch 1 --reserve-only
http_reserve=$LG
echo "HTTP   1-item reserve only (no TTL): $http_reserve"
cost_single=$(evalsha_cost 1)
echo "Redis time, 1-item reserve: $cost_single"
SUMMARY+=("Redis time per 1-item reserve script (INFO commandstats): $cost_single")
# redis-benchmark SET on the same Redis, count-bounded (about SECS seconds here).
set_line=$(redis-benchmark -p "$RPORT" -t set -c 50 -n $((SECS * 40000)) --csv | tail -1 | tr -d '"')
set_rps=$(cut -d, -f2 <<<"$set_line")
echo "redis-benchmark -t set -c 50 -n $((SECS * 40000)): requests_per_s=$set_rps p50_ms=$(cut -d, -f5 <<<"$set_line") p99_ms=$(cut -d, -f7 <<<"$set_line")"
echo "ratio HTTP 1-item reserve items/s ($CONC conns) / redis-benchmark SET/s (50 conns): $(ratio "$(field "$http_reserve" items_ok_per_s)" "$set_rps") ($(field "$http_reserve" items_ok_per_s) / $set_rps)"
SUMMARY+=("1-item reserve (no TTL), $CONC connections: items_per_s=$(field "$http_reserve" items_ok_per_s); redis-benchmark -t set -c 50: $set_rps/s; ratio=$(ratio "$(field "$http_reserve" items_ok_per_s)" "$set_rps")")
lg 100-item-pairs --key "$(key_of)" --concurrency "$CONC" --seconds "$SECS" --batch 100
http_batch=$LG
echo "HTTP 100-item reserve+unreserve: $http_batch"
ttl_args=()
[ "$BATCH_TTL" = 0 ] || ttl_args=(--ttl "$BATCH_TTL")
tid=$(new_tenant)
rc CONFIG RESETSTAT >/dev/null
lg 100-item-reserve --key "${tid#* }" --concurrency "$BATCH_CONC" --seconds "$SECS" --batch 100 --reserve-only "${ttl_args[@]}"
batch_reserve=$LG
cost_batch=$(evalsha_cost 100)
echo "Redis time, 100-item reserve: $cost_batch"
SUMMARY+=("Redis time per 100-item reserve script (INFO commandstats): $cost_batch")
echo "HTTP 100-item reserve only, $BATCH_CONC connections, unique names, TTL ${BATCH_TTL}s (0 = none): items_per_s=$(field "$batch_reserve" items_ok_per_s) [$batch_reserve]"
SUMMARY+=("100-item reserve only, $BATCH_CONC connections, TTL ${BATCH_TTL}s (0 = none): items_per_s=$(field "$batch_reserve" items_ok_per_s)")
# The same without a TTL (how the figure was measured before the lean data
# model: the old loadgen's reserve-only run set none).
if [ "$BATCH_TTL" != 0 ]; then
  tid=$(new_tenant)
  rc CONFIG RESETSTAT >/dev/null
  lg 100-item-reserve-no-ttl --key "${tid#* }" --concurrency "$BATCH_CONC" --seconds "$SECS" --batch 100 --reserve-only
  batch_plain=$LG
  cost_plain=$(evalsha_cost 100)
  echo "HTTP 100-item reserve only, $BATCH_CONC connections, unique names, no TTL: items_per_s=$(field "$batch_plain" items_ok_per_s) [$batch_plain]; Redis time: $cost_plain"
  SUMMARY+=("100-item reserve only, $BATCH_CONC connections, no TTL: items_per_s=$(field "$batch_plain" items_ok_per_s); Redis time per item $(field "$cost_plain" usec_per_item) µs")
fi

# The same with a token exchanged for a JWT (HS256, minted here) instead of an
# API key: the token is checked by signature, with no store read.
jwt_token() {
  local tenant secret=bench-hs256-secret-of-at-least-32-bytes jwt
  tenant=$(new_tenant | cut -d' ' -f1)
  curl -sf -X PATCH "http://127.0.0.1:$HPORT/api/v1/admin/tenants/$tenant" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' \
    -d "{\"jwt\":{\"issuer\":\"bench\",\"audience\":\"bench\",\"hs256Secret\":\"$secret\"}}" >/dev/null
  jwt=$(python3 - "$secret" <<'PY'
import base64, hashlib, hmac, json, sys, time
b = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
msg = b({"alg": "HS256", "typ": "JWT"}) + "." + b({"iss": "bench", "aud": "bench", "sub": "bench-user", "exp": int(time.time()) + 3600})
sig = base64.urlsafe_b64encode(hmac.new(sys.argv[1].encode(), msg.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
print(msg + "." + sig)
PY
)
  curl -sf -X POST "http://127.0.0.1:$HPORT/api/v1/auth/token" -H 'Content-Type: application/json' \
    -d "{\"jwt\":\"$jwt\",\"tenant\":\"$tenant\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}
lg token --key "$(jwt_token)" --requester bench-user --concurrency "$CONC" --seconds "$SECS" --batch 1
http_token=$LG
echo "HTTP   1-item, exchanged token : $http_token"

# The same reserve script, straight into Redis. Random resource names in a huge
# key space so (almost) every call takes the RESERVED path, as in the HTTP run.
# The script is exactly the one the service sends (examples/dump_scripts writes
# the composition of src/store/redis/scripts.rs); its KEYS and ARGV follow the
# header of lua/reserve.lua, then the rate limit's key, interval (µs) and
# burst, then lua/idem.lua's flag. RL_INTERVAL=1 runs the limiter (at 1,000,000/s: never refusing); 0
# skips it, to show its cost.
if [ "${RAW:-1}" = 1 ]; then
  alive
  LUA_DIR=$(mktemp -d)
  target/release/examples/dump_scripts "$LUA_DIR" >/dev/null
  SHA=$(rc SCRIPT LOAD "$(cat "$LUA_DIR/reserve.lua")")
  rm -rf "$LUA_DIR"
  prefix_of() { # $1 = tenant id: prints the tenant's key prefix c:{<tag>}:
    python3 -c 'import base64,hashlib,sys; print("c:{%s}:" % base64.urlsafe_b64encode(hashlib.sha256(sys.argv[1].encode()).digest()[:8]).decode().rstrip("="))' "$1"
  }
  raw_args() { # $1 = items; sets RAW (an array, so empty arguments survive)
    local n=$1 keys=() argv=()
    for ((i = 0; i < n; i++)); do
      keys+=("${P}h:b$i-__rand_int__")
      argv+=("b$i-__rand_int__" "rb" "0" "0123456789abcdef" "")
    done
    # label, n, retention, no caps, a Reservation API hold, not atomic, no
    # wait (no waiter id, no waiters' cap), the items; the limiter; no
    # Idempotency-Key ('0', lua/idem.lua).
    RAW=(EVALSHA "$SHA" $((3 + n)) "${P}t" "${P}ev" "${keys[@]}" "${P}rl:enterprise:write"
      label "$n" 10000 0 0 "" 0 0 "" 0 "${argv[@]}" "$RL_INTERVAL" 1000000 0)
  }
  rb() { # $1 = items, $2 = requests; a fresh tenant each
    P=$(prefix_of "$(new_tenant | cut -d' ' -f1)")
    raw_args "$1"
    # CSV columns: test, rps, avg, min, p50, p95, p99, max (ms)
    redis-benchmark -p "$RPORT" -c "$CONC" -n "$2" -r 100000000000 --csv "${RAW[@]}" | tail -1 | tr -d '"' |
      awk -F, '{printf "%s p50_ms=%s p99_ms=%s", $2, $5, $7}'
  }
  RL_INTERVAL=0
  raw_unmetered=$(rb 1 $((SECS * 40000)))
  RL_INTERVAL=1
  raw_single=$(rb 1 $((SECS * 40000)))
  raw_batch=$(rb 100 $((SECS * 800)))
  echo "redis-benchmark reserve.lua   1 item, limiter skipped: calls/s=${raw_unmetered}"
  echo "redis-benchmark reserve.lua   1 item : calls/s=${raw_single}"
  echo "redis-benchmark reserve.lua 100 items: calls/s=${raw_batch} (resources/s=$(python3 -c "print(round(${raw_batch%% *}*100))"))"
  python3 - "$http_single" "$http_batch" "$raw_single" "$raw_batch" "$http_reserve" <<'PY'
import sys
def kv(s): return dict(p.split("=", 1) for p in s.split())
hs, hb, hr = kv(sys.argv[1]), kv(sys.argv[2]), kv(sys.argv[5])
rs, rb = float(sys.argv[3].split()[0]), float(sys.argv[4].split()[0])
print(f"ratio HTTP/raw, reserve only (same work)  : {float(hr['requests_per_s'])/rs:.0%} (HTTP p50 {hr['p50_ms']} ms, p99 {hr['p99_ms']} ms)")
print(f"ratio HTTP/raw, 1-item reserve+unreserve : {float(hs['requests_per_s'])/rs:.0%} (HTTP p50 {hs['p50_ms']} ms, p99 {hs['p99_ms']} ms)")
print(f"ratio HTTP/raw, 100-item reserve+unreserve: {float(hb['requests_per_s'])/rb:.0%} (HTTP p50 {hb['p50_ms']} ms, p99 {hb['p99_ms']} ms)")
print("(reserve+unreserve runs are half unreserves, a cheaper script than the raw run's reserves)")
PY
fi

# Event streams: N SSE clients on this instance, a steady RESERVED rate.
if [ "${SSE:-1}" = 1 ]; then
  for n in ${SSE_CLIENTS:-1000 5000}; do
    alive
    out=$(target/release/examples/ssebench --addr "127.0.0.1:$HPORT" --key "$(key_of)" --clients "$n" \
      --rate "${SSE_RATE:-20}" --seconds "$SECS" --pid "$APID")
    echo "SSE $n clients, ${SSE_RATE:-20} events/s: $out"
    if [ "$(field "$out" missing)" != 0 ] || [ "$(field "$out" refused)" != 0 ]; then
      ERRORS+=("sse-$n(missing=$(field "$out" missing),refused=$(field "$out" refused))")
    fi
  done
fi

echo "== reserve p99 with $BIG live reservations in the tenant vs with $SMALL ($P99_CONC connections, 1-item reserve+unreserve of new names)"
alive
small=$(new_tenant) big=$(new_tenant)
lg small-fill --key "${small#* }" --fill "$SMALL" --prefix held --batch 1000 --concurrency "$FILL_CONC"
out=$LG
echo "fill $SMALL (no TTL): $out"
lg big-fill --key "${big#* }" --fill "$BIG" --prefix held --batch 1000 --concurrency "$FILL_CONC" --seconds 900
fill_big=$LG
echo "fill $BIG (no TTL): $fill_big"
echo "redis used_memory after the fills: $(used_memory) B, dbsize $(dbsize)"
sleep 2
# Small, big, big, small (half the run length each): drift in the machine's
# load over the four runs weighs on both tenants alike. Each tenant's figure is
# the mean of its two runs' p99s.
half=$(((SECS + 1) / 2))
p99s=()
for t in small big big small; do
  [ "$t" = small ] && key=${small#* } || key=${big#* }
  lg "p99-$t" --key "$key" --concurrency "$P99_CONC" --seconds "$half" --batch 1
  echo "tenant with $([ "$t" = small ] && echo "$SMALL" || echo "$BIG"): $LG"
  p99s+=("$t $(field "$LG" p99_ms) $(field "$LG" pair_p99_ms)")
done
read -r p_small p_big pp_small pp_big < <(printf '%s\n' "${p99s[@]}" | awk '
  { n[$1]++; p[$1] += $2; pp[$1] += $3 }
  END { printf "%.2f %.2f %.2f %.2f\n", p["small"] / n["small"], p["big"] / n["big"], pp["small"] / n["small"], pp["big"] / n["big"] }')
echo "p99_ms (mean of two runs) with $BIG=$p_big with $SMALL=$p_small ratio=$(ratio "$p_big" "$p_small") (reserve+unreserve pair p99_ms: $pp_big vs $pp_small, ratio $(ratio "$pp_big" "$pp_small"))"
SUMMARY+=("1-item reserve+unreserve p99 per request, $P99_CONC connections: with $BIG live=$p_big ms, with $SMALL=$p_small ms, ratio=$(ratio "$p_big" "$p_small") (fill: $(field "$fill_big" items_per_s) items/s)")

if [ "${WAITS:-1}" = 1 ]; then
  echo "== waiting acquire and Idempotency-Key (a second instance on the same Redis)"
  alive
  HPORT2=$(free_port)
  RUST_LOG=warn REDIS_URL="redis://127.0.0.1:$RPORT" COOPLOCKER_ADMIN_TOKEN=$TOKEN \
    COOPLOCKER_LISTEN="127.0.0.1:$HPORT2" \
    COOPLOCKER_RATE_LIMITS=free=1000000,starter=1000000,pro=1000000,enterprise=1000000 \
    "$TMPD/bench-instance" >"$TMPD/cooplocker-$HPORT2.log" 2>&1 &
  BPID=$!
  wait_for cooplocker-b curl -sf "http://127.0.0.1:$HPORT2/readyz"
  waits=$(python3 scripts/bench_waits.py "127.0.0.1:$HPORT" "127.0.0.1:$HPORT2" "$(key_of)" "$SECS") ||
    ERRORS+=("waits")
  kill "$BPID"; wait "$BPID" 2>/dev/null || true; BPID=""
  echo "$waits"
  w() { awk -v k="$1" '$1 == k' <<<"$waits" | tr ' ' '\n' | awk -F= -v f="$2" '$1 == f { print $2 }'; }
  SUMMARY+=("hand-over from release to the waiter's answer: same instance p50 $(w handover_same p50_ms) ms p99 $(w handover_same p99_ms) ms; across instances p50 $(w handover_cross p50_ms) ms p99 $(w handover_cross p99_ms) ms")
  SUMMARY+=("a hot resource along 64 clients: waiting in line $(w line64 grants_per_s) grants/s vs polling with 10 ms back-off $(w poll64 grants_per_s) grants/s")
  SUMMARY+=("1-item reserve+unreserve with an Idempotency-Key vs without: $(w idem keyed_pair_ms) vs $(w idem plain_pair_ms) ms per pair, ratio $(w idem ratio)")
fi

if [ "${KINDS:-1}" = 1 ]; then
  echo "== semaphores and shared locks (Python clients: the ratio to the exclusive run of the same clients is the figure)"
  alive
  kinds=$(python3 scripts/bench_kinds.py "127.0.0.1:$HPORT" "$RPORT" "$TOKEN" "$SECS") || ERRORS+=("kinds")
  echo "$kinds"
  k() { awk -v k="$1" '$1 == k' <<<"$kinds" | tr ' ' '\n' | awk -F= -v f="$2" '$1 == f { print $2 }'; }
  SUMMARY+=("one hot semaphore of ${KINDS_LIMIT:-100}, ${KINDS_CONC:-32} connections, acquire+release: $(k sem pairs_per_s) permits/s vs exclusive 1-item reserve+unreserve $(k excl pairs_per_s) pairs/s, ratio $(k ratio_sem pairs) (Redis time per call $(k sem redis_usec_per_call) vs $(k excl redis_usec_per_call) µs); one hot read lock $(k shared pairs_per_s)/s, ratio $(k ratio_shared pairs)")
  SUMMARY+=("Redis per permit (TTL 1 h, batches of 100): one semaphore of ${KINDS_PERMITS:-10000} $(k mem_sem1 bytes_per_hold) B, semaphores of 100 $(k mem_sem100 bytes_per_hold) B, exclusive reservations the same way $(k mem_excl bytes_per_hold) B (without the event stream: $(k mem_sem1 bytes_per_hold_without_events) / $(k mem_sem100 bytes_per_hold_without_events) / $(k mem_excl bytes_per_hold_without_events) B); ratio to the exclusive $(ratio "$(k mem_sem1 bytes_per_hold)" "$(k mem_excl bytes_per_hold)") / $(ratio "$(k mem_sem100 bytes_per_hold)" "$(k mem_excl bytes_per_hold)")")
fi

alive
stop_stack

# The peer: a throwaway single-member etcd (its default durability: WAL fsync
# per write), lock → unlock through its v3 JSON gateway at the same concurrency
# as the HTTP 1-item reserve+unreserve run above; then that cooplocker run again
# on a Redis with appendfsync always (durable like etcd: README, Reliability).
if [ "${ETCD:-1}" = 1 ]; then
  echo "== etcd $(etcd --version | awk '/etcd Version/ { print $3 }') lock+unlock, $CONC connections (the cooplocker stack stopped meanwhile)"
  EC=$(free_port) EP=$(free_port)
  etcd --name default --data-dir "$TMPD/etcd" \
    --listen-client-urls "http://127.0.0.1:$EC" --advertise-client-urls "http://127.0.0.1:$EC" \
    --listen-peer-urls "http://127.0.0.1:$EP" --initial-advertise-peer-urls "http://127.0.0.1:$EP" \
    --initial-cluster "default=http://127.0.0.1:$EP" >"$TMPD/etcd.log" 2>&1 &
  EPID=$!
  wait_for etcd curl -sf "http://127.0.0.1:$EC/health"
  etcd_out=$("$LOADGEN" --etcd --addr "127.0.0.1:$EC" --concurrency "$CONC" --seconds "$SECS")
  check etcd "$etcd_out"
  kill "$EPID"; wait "$EPID" 2>/dev/null || true; EPID=""
  echo "etcd lock+unlock: $etcd_out"
  start_stack --appendonly yes --appendfsync always --save ""
  lg durable-1-item-pairs --key "$(key_of)" --concurrency "$CONC" --seconds "$SECS" --batch 1
  durable=$LG
  stop_stack
  echo "cooplocker on Redis appendfsync always, 1-item reserve+unreserve: $durable"
  echo "cooplocker 1-item reserve+unreserve (Redis without persistence): pairs_per_s=$(field "$http_single" pairs_per_s) p99_ms=$(field "$http_single" p99_ms) pair_p99_ms=$(field "$http_single" pair_p99_ms)"
  echo "cooplocker 1-item reserve+unreserve (Redis appendfsync always) : pairs_per_s=$(field "$durable" pairs_per_s) p99_ms=$(field "$durable" p99_ms) pair_p99_ms=$(field "$durable" pair_p99_ms)"
  echo "etcd lock+unlock (WAL fsync per write)                         : pairs_per_s=$(field "$etcd_out" pairs_per_s) p99_ms=$(field "$etcd_out" p99_ms) pair_p99_ms=$(field "$etcd_out" pair_p99_ms)"
  echo "ratio cooplocker/etcd pairs/s: $(ratio "$(field "$http_single" pairs_per_s)" "$(field "$etcd_out" pairs_per_s)") (durable Redis: $(ratio "$(field "$durable" pairs_per_s)" "$(field "$etcd_out" pairs_per_s)")); p99 per request cooplocker $(field "$http_single" p99_ms) ms (durable $(field "$durable" p99_ms) ms) vs etcd $(field "$etcd_out" p99_ms) ms"
  SUMMARY+=("1-item reserve+unreserve vs etcd lock+unlock, $CONC connections: cooplocker $(field "$http_single" pairs_per_s) pairs/s p99 $(field "$http_single" p99_ms) ms; etcd $(field "$etcd_out" pairs_per_s) pairs/s p99 $(field "$etcd_out" p99_ms) ms; ratio=$(ratio "$(field "$http_single" pairs_per_s)" "$(field "$etcd_out" pairs_per_s)")")
  SUMMARY+=("  the same on Redis appendfsync always: cooplocker $(field "$durable" pairs_per_s) pairs/s p99 $(field "$durable" p99_ms) ms; ratio=$(ratio "$(field "$durable" pairs_per_s)" "$(field "$etcd_out" pairs_per_s)")")
fi

echo "== idle Redis calls with $TENANTS tenants and no reservations (fresh Redis and instance, no client traffic)"
start_stack
lg create-tenants --create-tenants "$TENANTS" --admin-token "$TOKEN" --concurrency 8
out=$LG
echo "created: $out"
sleep 3
# One INFO call before and one after the window; the second is not in its own
# output, the first is in the second's: subtract cmdstat_info's delta.
s0=$(rc INFO cpu commandstats | tr -d '\r')
t0=$(date +%s.%N)
sleep "$SWEEP_SECS"
s1=$(rc INFO cpu commandstats | tr -d '\r')
t1=$(date +%s.%N)
idle=$(python3 - "$s0" "$s1" "$t0" "$t1" "$TENANTS" <<'PY'
import re, sys
def parse(s):
    calls = {m[1]: int(m[2]) for m in re.finditer(r"^cmdstat_(\S+?):calls=(\d+)", s, re.M)}
    cpu = sum(float(m[1]) for m in re.finditer(r"^used_cpu_(?:sys|user):([\d.]+)", s, re.M))
    return calls, cpu
(c0, cpu0), (c1, cpu1) = parse(sys.argv[1]), parse(sys.argv[2])
secs = float(sys.argv[4]) - float(sys.argv[3])
delta = {k: v - c0.get(k, 0) for k, v in c1.items() if v - c0.get(k, 0)}
own = delta.get("info", 0)
total = sum(delta.values()) - own
top = ", ".join(f"{k}={v / secs:.0f}/s" for k, v in sorted(delta.items(), key=lambda kv: -kv[1]) if k != "info")
print(f"idle Redis calls per second with {sys.argv[5]} tenants: {total / secs:.0f} "
      f"(calls={total} over {secs:.1f}s, own INFO calls subtracted={own}; Redis CPU {100 * (cpu1 - cpu0) / secs:.1f}% of a core)")
print(f"  by command: {top or 'none'}")
PY
)
echo "$idle"
SUMMARY+=("$(head -1 <<<"$idle")")
stop_stack

echo "== summary (load average at the end: $(cut -d" " -f1-3 /proc/loadavg))"
printf '%s\n' "${SUMMARY[@]}"
if [ ${#ERRORS[@]} -gt 0 ]; then
  echo "RUNS WITH ERRORS (their figures are not clean): ${ERRORS[*]}"
else
  echo "no run saw an error (every request answered as expected, every item granted, every SSE event delivered)"
fi
