#!/usr/bin/env bash
# Set up a fresh machine for otpki: system packages, a virtualenv in .venv, the package and its test extras.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# postgresql: the PostgreSQL store's tests start throwaway clusters of their own (trustlists.testing.PostgresCluster).
# chromium: the console's browser tests (Playwright drives this one; it never downloads a browser of its own).
APT_PACKAGES=(openssl softhsm2 opensc mosquitto mosquitto-clients postgresql chromium chromium-driver)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      PYTHON="$candidate"; break
    fi
  done
fi
[ -n "$PYTHON" ] || { echo "setup: Python 3.11 or newer is required" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.otpki-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[test]"
  touch "$stamp"
fi

# node-opcua peer for the interop tests (tests/interop): pinned by package-lock.json, reinstalled when it changes.
NODE_PEER=tests/interop/node_opcua
if [ -f "$NODE_PEER/package-lock.json" ]; then
  command -v npm >/dev/null 2>&1 || { echo "setup: npm (Node.js 20) is required for $NODE_PEER (apt-get install nodejs npm)" >&2; exit 1; }
  node_stamp="$NODE_PEER/node_modules/.otpki-lock.sha256"
  lock_sum="$(sha256sum "$NODE_PEER/package-lock.json" | cut -d' ' -f1)"
  if [ ! -d "$NODE_PEER/node_modules" ] || [ ! -f "$node_stamp" ] || [ "$(cat "$node_stamp")" != "$lock_sum" ]; then
    echo "setup: npm ci in $NODE_PEER" >&2
    npm ci --prefix "$NODE_PEER" --no-audit --no-fund --loglevel=error
    echo "$lock_sum" > "$node_stamp"
  fi
fi
