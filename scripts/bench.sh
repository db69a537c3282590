#!/usr/bin/env bash
# Benchmark: HTTP reserve/unreserve through one cooplocker instance on Redis,
# next to redis-benchmark running the same reserve script at the same
# concurrency. Loopback only, bounded in time.
#   bash scripts/bench.sh [seconds-per-run (default 10)]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
CONC=${CONC:-64}
command -v redis-server >/dev/null || { echo "redis-server missing: run bash scripts/test.sh first (it installs it)"; exit 1; }
command -v redis-benchmark >/dev/null || { echo "redis-benchmark missing: apt-get install redis-tools"; exit 1; }

ulimit -n 65536 2>/dev/null || true  # thousands of SSE sockets
cargo build --release --quiet --bin cooplocker --example loadgen --example ssebench
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RPORT=$(free_port); HPORT=$(free_port)
TOKEN=bench-admin-token-0123456789
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
RPID=$!
cleanup() { kill "$APID" "$RPID" 2>/dev/null || true; }
trap cleanup EXIT
until redis-cli -p "$RPORT" ping >/dev/null 2>&1; do sleep 0.05; done
# Rate limits far above what this machine can offer: every request still runs
# the limiter (in the same script), none is refused.
RUST_LOG=warn REDIS_URL="redis://127.0.0.1:$RPORT" COOPLOCKER_ADMIN_TOKEN=$TOKEN \
  COOPLOCKER_LISTEN="127.0.0.1:$HPORT" COOPLOCKER_SSE_MAX_PER_TENANT=20000 \
  COOPLOCKER_RATE_LIMITS=free=1000000,starter=1000000,pro=1000000,enterprise=1000000 \
  target/release/cooplocker >/dev/null &
APID=$!
until curl -sf "http://127.0.0.1:$HPORT/readyz" >/dev/null; do sleep 0.05; done
# Every run gets a fresh tenant, so no run inserts into indexes an earlier run grew.
new_tenant() { # prints "<tenant id> <api key>"
  curl -sf -X POST "http://127.0.0.1:$HPORT/api/v1/admin/tenants" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -d '{"name":"bench","tier":"enterprise"}' |
    python3 -c 'import json,sys; b=json.load(sys.stdin); print(b["tenant"]["id"], b["apiKey"]["key"])'
}
key_of() { new_tenant | cut -d' ' -f2; }

echo "machine: $(nproc) cores; $CONC connections; ${SECS}s per run"
http_single=$(target/release/examples/loadgen --addr "127.0.0.1:$HPORT" --key "$(key_of)" --concurrency "$CONC" --seconds "$SECS" --batch 1)
echo "HTTP   1-item reserve+unreserve: $http_single"
http_reserve=$(target/release/examples/loadgen --addr "127.0.0.1:$HPORT" --key "$(key_of)" --concurrency "$CONC" --seconds "$SECS" --batch 1 --reserve-only)
echo "HTTP   1-item reserve only     : $http_reserve"
http_batch=$(target/release/examples/loadgen --addr "127.0.0.1:$HPORT" --key "$(key_of)" --concurrency "$CONC" --seconds "$SECS" --batch 100)
echo "HTTP 100-item reserve+unreserve: $http_batch"

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
http_token=$(target/release/examples/loadgen --addr "127.0.0.1:$HPORT" --key "$(jwt_token)" --requester bench-user \
  --concurrency "$CONC" --seconds "$SECS" --batch 1)
echo "HTTP   1-item, exchanged token : $http_token"

# The same reserve script, straight into Redis. Random resource names in a huge
# key space so (almost) every call takes the RESERVED path, as in the HTTP run.
# The script is built as the service builds it (src/store/redis.rs): the
# events.lua prelude, reserve.lua wrapped in a function, then meter.lua; the
# rate limit's key, interval (µs) and burst come last. RL_INTERVAL=1 runs the
# limiter (at 1,000,000/s: never refusing); 0 skips it, to show its cost.
SHA=$(redis-cli -p "$RPORT" SCRIPT LOAD "$(cat lua/events.lua; printf 'local function body()\n'; cat lua/reserve.lua; printf '\nend\n'; cat lua/meter.lua)")
raw_args() { # $1 = items; sets RAW (an array, so empty arguments survive)
  local n=$1 keys=() argv=()
  for ((i = 0; i < n; i++)); do
    keys+=("$T:r:b$i-__rand_int__" "$T:f:b$i-__rand_int__" "$T:q:rb")
    argv+=("b$i-__rand_int__" "rb" "0" "00000000-0000-4000-8000-00000000000$((i % 10))" "")
  done
  RAW=(EVALSHA "$SHA" $((6 + 3 * n)) "$T:idx" "$T:exp" "$T:meta" "$T:tenant" "$T:ev" "${keys[@]}" "$T:rl:enterprise:write"
    label "$n" 86400000 10000 0 "${argv[@]}" "$RL_INTERVAL" 1000000)
}
rb() { # $1 = items, $2 = requests; a fresh tenant each
  T="cl:{$(new_tenant | cut -d' ' -f1)}"
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
def kv(s): return dict(p.split("=") for p in s.split())
hs, hb, hr = kv(sys.argv[1]), kv(sys.argv[2]), kv(sys.argv[5])
rs, rb = float(sys.argv[3].split()[0]), float(sys.argv[4].split()[0])
print(f"ratio HTTP/raw, reserve only (same work)  : {float(hr['requests_per_s'])/rs:.0%} (HTTP p50 {hr['p50_ms']} ms, p99 {hr['p99_ms']} ms)")
print(f"ratio HTTP/raw, 1-item reserve+unreserve : {float(hs['requests_per_s'])/rs:.0%} (HTTP p50 {hs['p50_ms']} ms, p99 {hs['p99_ms']} ms)")
print(f"ratio HTTP/raw, 100-item reserve+unreserve: {float(hb['requests_per_s'])/rb:.0%} (HTTP p50 {hb['p50_ms']} ms, p99 {hb['p99_ms']} ms)")
print("(reserve+unreserve runs are half unreserves, a cheaper script than the raw run's reserves)")
PY

# Event streams: N SSE clients on this instance, a steady RESERVED rate.
if [ "${SSE:-1}" = 1 ]; then
  for n in ${SSE_CLIENTS:-1000 5000}; do
    out=$(target/release/examples/ssebench --addr "127.0.0.1:$HPORT" --key "$(key_of)" --clients "$n" \
      --rate "${SSE_RATE:-20}" --seconds "$SECS" --pid "$APID")
    echo "SSE $n clients, ${SSE_RATE:-20} events/s: $out"
  done
fi
