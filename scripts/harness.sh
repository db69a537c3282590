#!/usr/bin/env bash
# The whole reliability harness in one command (a short run of all of it is
# part of the test command, scripts/test.sh):
#   - the fault-injection run (three instances, a durable Redis, a TCP proxy per
#     instance; SIGKILL/SIGSTOP of instances and Redis, link cuts and latency)
#     with its history checker, and the unfenced run the checker must flag;
#   - hostile input at scale, the isolation matrix, secrets in logs and store;
#   - property tests of every client-input parser and random requests to every
#     route, and the Redis-vs-embedded random-operation equivalence;
#   - schemathesis against /api/v1/openapi.json.
# Usage: bash scripts/harness.sh [--duration SECONDS] [--seed N]
#   --duration  length of the fault-injection run (default 300; the test command uses 60)
#   --seed      replay a run (each run prints its seed)
# Figures are printed and kept in target/harness/*.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=300
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION="$2"; shift 2 ;;
    --seed) export COOPLOCKER_HARNESS_SEED="$2"; shift 2 ;;
    -h|--help) sed -n 2,16p "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
command -v redis-server >/dev/null || { echo "redis-server is missing: run bash scripts/test.sh once (it installs it)" >&2; exit 1; }
export COOPLOCKER_HARNESS_SECS="$DURATION"
export PROPTEST_CASES="${PROPTEST_CASES:-5000}"
export COOPLOCKER_HOSTILE_PHASES="${COOPLOCKER_HOSTILE_PHASES:-10}"
cargo nextest run --no-fail-fast --no-capture -E 'test(/^harness::|^equivalence::/)'
bash scripts/schemathesis.sh 200
echo "==> reports in target/harness/"
