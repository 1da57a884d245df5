#!/usr/bin/env bash
# Instructions per request of a server, counted by valgrind (callgrind): a noise-free A/B
# measure on a shared VM, where req/s and CPU time drift by 15-30 % between runs.
#
#   bench/instructions.sh llm-manager [ENV=value ...]   # the server, with extra settings
#   bench/instructions.sh bare                          # bench/bare_server.py (uvloop)
#   CALL=stream bench/instructions.sh llm-manager       # StreamGenerate: 10 chunks, no pauses
#   KEYS=1 bench/instructions.sh llm-manager            # with API keys on (LLM_API_KEYS_FILE), every
#                                                       # call carrying "authorization: Bearer <key>"
#
# Starts the benchmark's mock upstream (0 ms mode) and the server under callgrind, warms up
# with 100 calls, zeroes the counters, sends N calls (default 400, 8 concurrent) with ghz,
# dumps the counters and prints user-space instructions of the server process (all its
# threads) per call. Kernel time (system calls) is not counted. Needs valgrind (Debian
# package `valgrind`), the venv (`make setup`) and ghz (`make tools`); takes ~1 minute.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET=${1:?usage: bench/instructions.sh llm-manager|bare [ENV=value ...]}
shift
N=${N:-400}
PY=.venv/bin/python
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
[ -x .tools/bin/ghz ] || { echo ".tools/bin/ghz is missing: run make tools" >&2; exit 1; }

WORK=$(mktemp -d)
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
MOCK_PORT=$(free_port)
PORT=$(free_port)
"$PY" bench/mock_upstream.py --port "$MOCK_PORT" --uvloop > "$WORK/mock.log" 2>&1 &
MOCK=$!
SERVER=""
cleanup() {
  set +e  # a killed server's exit status must not end the cleanup early
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  kill "$MOCK" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

AUTH=()
if [ -n "${KEYS:-}" ]; then  # a keys file of 100 callers; the calls use one of their keys
  KEY=$("$PY" - "$WORK/keys.json" <<'PYTHON'
import json, sys
from llm_manager_server.keys import key_digest, new_key
keys = [new_key() for _ in range(100)]
entries = [{"caller": f"caller-{i}", "key_sha256": key_digest(k).hex()} for i, k in enumerate(keys)]
open(sys.argv[1], "w").write(json.dumps({"keys": entries}))
print(keys[42])
PYTHON
)
  export LLM_API_KEYS_FILE="$WORK/keys.json"
  AUTH=(-m "{\"authorization\": \"Bearer $KEY\"}")
fi
if [ "${CALL:-unary}" = stream ]; then
  UPSTREAM="http://127.0.0.1:$MOCK_PORT/cad0/v1" METHOD=StreamGenerate
else
  UPSTREAM="http://127.0.0.1:$MOCK_PORT/lat0/v1" METHOD=Generate
fi
case "$TARGET" in
  bare) CMD=("$PY" bench/bare_server.py --port "$PORT" --upstream "$UPSTREAM" --uvloop) ;;
  llm-manager)
    CMD=(env LLM_GRPC_HOST=127.0.0.1 LLM_GRPC_PORT="$PORT" LM_STUDIO_ENDPOINT="$UPSTREAM" LLM_GENERAL_MODEL_1=mock-model
         LLM_CACHE_ENABLED=false LLM_CONVERSATION_STORE=memory LLM_HEALTH_INTERVAL_SECONDS=600 "$@" "$PY" -m llm_manager_server) ;;
  *) echo "unknown target $TARGET (llm-manager or bare)" >&2; exit 2 ;;
esac
valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$WORK/cg.out" "${CMD[@]}" > "$WORK/server.log" 2>&1 &
SERVER=$!

GHZ=(.tools/bin/ghz --insecure "${AUTH[@]}" --protoset bench/.build/llm_manager.protoset --call "llm_manager.v1.LLMManagerService.$METHOD"
     -d '{"prompt":"Say hello to the benchmark.","preferences":{"max_tokens":64}}' -c 8 --connections 2 --timeout 60s "127.0.0.1:$PORT")
[ -f bench/.build/llm_manager.protoset ] || { echo "bench/.build/llm_manager.protoset is missing: run make bench once" >&2; exit 1; }
for _ in $(seq 180); do
  "${GHZ[@]}" -n 1 2>/dev/null | grep -q "\[OK\]" && break  # (the bare server has no health service)
  sleep 1
done
"${GHZ[@]}" -n 100 >/dev/null
callgrind_control -z "$SERVER" >/dev/null 2>&1
report=$("${GHZ[@]}" -n "$N")
callgrind_control -d "$SERVER" >/dev/null 2>&1
ok=$(echo "$report" | awk '/\[OK\]/ {print $2}')
[ "${ok:-0}" -gt 0 ] || { echo "no successful calls; ghz said:" >&2; echo "$report" >&2; exit 1; }
total=$(awk '/^summary:/ {print $2}' "$WORK/cg.out.1")
echo "$TARGET $* : $ok calls, $(( total / ok )) instructions per call"
