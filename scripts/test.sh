#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what it needs
# (redis-server, redis-tools, nginx-light, prometheus for promtool, chromium and Node.js through apt, playwright-core
# through npm; Rust through rustup if missing),
# then checks the deployment files offline (scripts/validate-deploy.sh), runs
# format and lint checks and the one integration-test binary against real Redis
# servers that the tests spawn themselves (the reliability harness included, a
# 60 s fault-injection run), then schemathesis against the OpenAPI document and
# a Python client generated from it (openapi-python-client) through the seeds'
# quick start.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else
    echo "error: need root (or sudo) to run: $*" >&2
    exit 1
  fi
}

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
# The graceful-stop test runs deploy/nginx.conf in front of real instances.
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
# scripts/validate-deploy.sh checks the monitoring kit's alert rules with
# promtool, which Debian ships in its prometheus package.
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: ${missing[*]} missing and apt-get is not available; install Redis >= 6.2 and nginx, then retry" >&2
    exit 1
  fi
  say "installing ${missing[*]} with apt-get"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Installing the packages may start a system Redis on 6379, nginx on 80 or
# Prometheus on 9090; the
# tests never use them (each test spawns its own on a free port), so they are
# left alone.

# The dashboard's browser test: Debian's Chromium, driven by playwright-core
# (installed from the npm registry into e2e/node_modules).
browser=()
[ -x /usr/bin/chromium ] || browser+=(chromium)
command -v node >/dev/null 2>&1 || browser+=(nodejs)
command -v npm >/dev/null 2>&1 || browser+=(npm)
if [ ${#browser[@]} -gt 0 ]; then
  say "installing ${browser[*]} with apt-get"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${browser[@]}" >/dev/null
fi
if [ ! -d e2e/node_modules/playwright-core ]; then
  say "installing playwright-core (npm ci --prefix e2e)"
  npm ci --prefix e2e --no-audit --no-fund --loglevel=error
fi

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] || {
    say "installing the Rust toolchain with rustup"
    command -v curl >/dev/null 2>&1 || as_root apt-get install -y -qq curl ca-certificates >/dev/null
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
  }
  export PATH="$HOME/.cargo/bin:$PATH"
fi

bash scripts/validate-deploy.sh

say "cargo fmt --check"
cargo fmt --all -- --check
say "module dependencies run one way (scripts/modules.py)"
python3 scripts/modules.py
say "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

say "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

say "schemathesis against the OpenAPI document"
bash scripts/schemathesis.sh

say "a Python client generated from the OpenAPI document: the seeds' quick start"
bash scripts/generated-client.sh
