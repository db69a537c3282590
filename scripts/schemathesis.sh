#!/usr/bin/env bash
# Schemathesis against the service's own OpenAPI document (/api/v1/openapi.json):
# schema-driven positive and negative requests to every operation, with the
# tenant key (tenant endpoints) and the admin token (admin endpoints), checking
# that nothing is a 5xx, that bad data is refused, that statuses, content types,
# headers and bodies match the document, and that auth is enforced.
#   bash scripts/schemathesis.sh [max-examples per operation, default 25]
# Runs the debug binary in embedded mode on a free loopback port.
set -euo pipefail
cd "$(dirname "$0")/.."
EXAMPLES="${1:-25}"
TOOLS=target/deploy-tools
if [ ! -x "$TOOLS/bin/schemathesis" ]; then
  [ -x "$TOOLS/bin/pip" ] || python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install --quiet --disable-pip-version-check "schemathesis==4.32.5"
fi
cargo build --quiet --bin cooplocker
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
KEY=ck_schemathesis_$(python3 -c 'import secrets; print(secrets.token_hex(16))')
ADMIN=admin-$(python3 -c 'import secrets; print(secrets.token_hex(16))')
mkdir -p target/harness
env -u REDIS_URL COOPLOCKER_LISTEN="127.0.0.1:$PORT" COOPLOCKER_ADMIN_TOKEN="$ADMIN" \
  COOPLOCKER_DEFAULT_API_KEY="$KEY" COOPLOCKER_RATE_LIMITS="free=1000000,starter=1000000,pro=1000000,enterprise=1000000" \
  COOPLOCKER_TOKEN_EXCHANGE_PER_IP=100000 RUST_LOG=warn \
  target/debug/cooplocker > target/harness/schemathesis-instance.log 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
ready=
for _ in $(seq 100); do
  if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "http://127.0.0.1:$PORT/readyz" 2>/dev/null; then ready=1; break; fi
  sleep 0.1
done
if [ -z "$ready" ]; then
  echo "error: the instance did not start:" >&2
  cat target/harness/schemathesis-instance.log >&2
  exit 1
fi
SPEC="http://127.0.0.1:$PORT/api/v1/openapi.json"
# positive_data_acceptance is left out: the document states types but not yet
# every limit the service enforces (name lengths, limit ranges, UUID paths), so
# schema-valid-looking data that breaks a documented rule is rightly refused.
COMMON=(--checks all --exclude-checks positive_data_acceptance --mode all
  -n "$EXAMPLES" --request-timeout 10 --generation-deterministic --no-color)
ST="$PWD/$TOOLS/bin/schemathesis"
# Schemathesis keeps a cache where it runs: keep it under target/.
cd target/harness
echo "==> schemathesis: tenant endpoints (X-Api-Key)"
"$ST" run "$SPEC" "${COMMON[@]}" \
  --exclude-path-regex '^/api/v1/(admin/|events)' -H "X-Api-Key: $KEY"
echo "==> schemathesis: admin endpoints (admin token)"
"$ST" run "$SPEC" "${COMMON[@]}" \
  --include-path-regex '^/api/v1/admin/' -H "Authorization: Bearer $ADMIN"
if grep -q panicked schemathesis-instance.log; then
  echo "error: the instance panicked (target/harness/schemathesis-instance.log)" >&2
  exit 1
fi
