#!/usr/bin/env bash
# Installs what Distillery needs, idempotently: npm packages (from the lock file), the TypeScript build, and
# the Python engine's pinned virtual environment in engine/.venv. Re-running it is cheap when nothing changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

say() { printf '[setup] %s\n' "$*" >&2; }
hash_of() { sha256sum "$@" | sha256sum | cut -c1-16; }

# 1. npm packages, reinstalled when the lock file changes. Optional packages are left out: node-llama-cpp lists
#    a prebuilt llama.cpp for every platform and GPU (~730 MB); only this machine's CPU build is added below.
lock_hash=$(hash_of package-lock.json)
if [ ! -d node_modules ] || [ "$(cat node_modules/.distillery-lock 2>/dev/null)" != "$lock_hash" ]; then
  say "installing npm packages (npm ci; better-sqlite3 compiles from source where no prebuilt binary is reachable)"
  npm ci --no-audit --no-fund --ignore-scripts=false --omit=optional
  echo "$lock_hash" > node_modules/.distillery-lock
fi
# llama.cpp for node-llama-cpp: this platform's CPU build, or the build named by DISTILLERY_LLAMA_BUILD
# (e.g. linux-x64-cuda, linux-x64-vulkan, win-x64-cuda; see docs/serving.md).
llama_version=$(node -p "require('./node_modules/node-llama-cpp/package.json').version")
llama_build="${DISTILLERY_LLAMA_BUILD:-$(node -p "({'linux-x64':'linux-x64','linux-arm64':'linux-arm64','darwin-arm64':'mac-arm64-metal','darwin-x64':'mac-x64','win32-x64':'win-x64','win32-arm64':'win-arm64'})[process.platform+'-'+process.arch] ?? ''")}"
if [ -n "$llama_build" ] && [ ! -d "node_modules/@node-llama-cpp/$llama_build" ]; then
  say "adding llama.cpp ($llama_build build of node-llama-cpp $llama_version)"
  npm install --no-save --no-audit --no-fund --omit=optional --ignore-scripts "@node-llama-cpp/$llama_build@$llama_version"
fi

# 2. TypeScript build (incremental enough: tsc on this project takes a few seconds).
say "building TypeScript"
npx --no-install tsc -p tsconfig.json

# 3. The engine's virtual environment, rebuilt when the pinned requirements change.
py="${DISTILLERY_BOOTSTRAP_PYTHON:-python3}"
venv="engine/.venv"
req_hash=$(hash_of engine/requirements.lock)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.distillery-req" 2>/dev/null)" != "$req_hash" ]; then
  "$py" -c 'import sys; assert sys.version_info >= (3, 10), "Python 3.10+ is required for the engine"' || {
    say "error: $py is missing or older than 3.10; set DISTILLERY_BOOTSTRAP_PYTHON to a newer interpreter"; exit 1; }
  say "creating the engine environment in $venv (torch, transformers, peft, safetensors; pinned in engine/requirements.lock)"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  # No retries by default: on a machine with a local index an unreachable public index must fail fast.
  PIP_RETRIES="${PIP_RETRIES:-0}" PIP_DEFAULT_TIMEOUT="${PIP_DEFAULT_TIMEOUT:-5}" PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$venv/bin/python" -m pip install --quiet -r engine/requirements.lock
  echo "$req_hash" > "$venv/.distillery-req"
fi
say "ready"
