#!/usr/bin/env bash
# The cost of callers' authentication and limits per call (`make bench` runs it; ~4 minutes):
# instructions per unary Generate (bench/instructions.sh, callgrind) with authentication off,
# then with API keys whose callers have every limit (KEYS=1 LIMITS=1: requests and tokens per
# minute, budget per day, far above the load, so no call is refused) counted in memory, then in
# a private Redis (LLM_LIMITS_STORE), and the difference as a share of the plain call. Every mode books
# the usage ledger (on by default). Target: keys + limits under 5 % of a call.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=.venv/bin/python
WORK=$(mktemp -d)
REDIS=""
cleanup() {
  set +e
  [ -n "$REDIS" ] && kill "$REDIS" 2>/dev/null && wait "$REDIS" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

# Health probes every 5 s (not 600): under valgrind on a busy machine the first probe can time
# out, and the model must not stay unhealthy for the whole run. The same in every mode.
count() { bench/instructions.sh llm-manager LLM_HEALTH_INTERVAL_SECONDS=5 "$@" | tee /dev/stderr | awk '{print $(NF-3)}'; }

plain=$(count)
keyed=$(KEYS=1 LIMITS=1 count)

command -v redis-server >/dev/null || { echo "redis-server is not installed (make system-deps)" >&2; exit 1; }
REDIS_PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" > "$WORK/redis.log" 2>&1 &
REDIS=$!
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
shared=$(KEYS=1 LIMITS=1 count LLM_LIMITS_STORE="redis://127.0.0.1:$REDIS_PORT/0")
# Round trips the server made (lease claims and booking flushes), the 100 warm-up calls included.
trips=$(redis-cli -p "$REDIS_PORT" info commandstats | awk -F'[=,:]' '/^cmdstat_(evalsha|eval):/ {n += $3} END {print n + 0}')

"$PY" - "$plain" "$keyed" "$shared" "$trips" <<'PYEOF'
import sys
plain, keyed, shared, trips = (int(v) for v in sys.argv[1:])
print("caller checks per unary call (instructions, callgrind):")
print(f"  authentication off                     {plain:>10,}")
for name, value in (("API key + limits (memory)", keyed), ("API key + limits (Redis)", shared)):
    extra = value - plain
    print(f"  {name:<38} {value:>10,}  {extra:+,} ({100 * extra / plain:+.1f} % of a call; target < 5 %)")
# Leases are renewed (and bookings sent) once a second: under callgrind the server answers some
# tens of calls per second instead of ~1,000, so each round trip is shared by far fewer calls.
print(f"  Redis round trips: {trips} for 500 calls (warm-up included); leases and bookings go once a")
print("  second, and under callgrind a second covers tens of calls, not the ~1,000 of full speed")
PYEOF
