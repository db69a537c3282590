#!/usr/bin/env bash
# A Python client generated from the service's own OpenAPI document
# (/api/v1/openapi.json of a running instance) by a pinned openapi-python-client,
# driven through the seeds' quick start (scripts/client_quickstart.py): reserve,
# list, a conflict, unreserve, with typed values (times as datetimes, the release
# token as a UUID, statuses as enums). Fails if the generator warns (a part of
# the document it could not turn into code) or any step fails. Called by
# scripts/test.sh; about 10 s once the binary is built.
# Runs the debug binary in embedded mode on a free loopback port.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=target/deploy-tools
GENERATOR=openapi-python-client==0.29.1
if [ ! -x "$TOOLS/bin/openapi-python-client" ] ||
  [ "$("$TOOLS/bin/openapi-python-client" --version 2>/dev/null)" != "openapi-python-client version: ${GENERATOR#*==}" ]; then
  [ -x "$TOOLS/bin/pip" ] || python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install --quiet --disable-pip-version-check "$GENERATOR"
fi
# The generator formats its output with the ruff it installs beside itself.
PATH="$PWD/$TOOLS/bin:$PATH"
cargo build --quiet --bin cooplocker
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
KEY=ck_client_$(python3 -c 'import secrets; print(secrets.token_hex(16))')
mkdir -p target/harness
env -u REDIS_URL COOPLOCKER_LISTEN="127.0.0.1:$PORT" COOPLOCKER_DEFAULT_API_KEY="$KEY" \
  COOPLOCKER_ADMIN_TOKEN="admin-$(python3 -c 'import secrets; print(secrets.token_hex(16))')" \
  RUST_LOG=warn target/debug/cooplocker >target/harness/generated-client-instance.log 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
BASE="http://127.0.0.1:$PORT"
ready=
for _ in $(seq 100); do
  if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$BASE/readyz" 2>/dev/null; then ready=1; break; fi
  sleep 0.1
done
if [ -z "$ready" ]; then
  echo "error: the instance did not start:" >&2
  cat target/harness/generated-client-instance.log >&2
  exit 1
fi
OUT=target/generated-client
rm -rf "$OUT"
mkdir -p "$OUT"
echo "==> openapi-python-client generate --url $BASE/api/v1/openapi.json"
"$TOOLS/bin/openapi-python-client" generate --url "$BASE/api/v1/openapi.json" \
  --meta none --output-path "$OUT/cooplocker_client" 2>&1 | tee "$OUT/generate.log"
if grep -qi 'warning\|error' "$OUT/generate.log"; then
  echo "error: openapi-python-client could not generate the whole client (above)" >&2
  exit 1
fi
echo "==> the seeds' quick start through the generated client"
PYTHONPATH="$PWD/$OUT" "$TOOLS/bin/python" scripts/client_quickstart.py "$BASE" "$KEY"
