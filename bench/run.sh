#!/usr/bin/env bash
# `make bench`: installs what the benchmark needs when missing, then runs bench/run.py.
#   bench/run.sh [bench/run.py options, e.g. --quick, --skip-litellm, --duration 3]
# Needs the project's venv (make setup), Go (ghz, bench/streamload), cargo (oha), python3.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
TOOLS="$ROOT/.tools"
BUILD="$ROOT/bench/.build"
GHZ_VERSION=v0.93.0
OHA_VERSION=1.16.0
LITELLM_VERSION=1.108.7
export PATH="$TOOLS/bin:/usr/local/go/bin:$HOME/.cargo/bin:$PATH"

if [ ! -x "$PY" ]; then
  echo "bench: $PY missing; run 'make setup' first" >&2
  exit 2
fi
mkdir -p "$TOOLS/bin" "$BUILD"

# Python extras in the project venv: py-spy (profile), matplotlib (chart).
if ! "$PY" -c "import matplotlib" 2>/dev/null || [ ! -x "$ROOT/.venv/bin/py-spy" ]; then
  echo "bench: installing bench/requirements.txt into .venv"
  "$PY" -m pip install -q -r bench/requirements.txt
fi

# ghz: gRPC load (Go module proxy).
if [ ! -x "$TOOLS/bin/ghz" ]; then
  echo "bench: go install ghz@$GHZ_VERSION"
  GOBIN="$TOOLS/bin" go install "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION"
fi

# oha: HTTP load (crates.io). --locked: its lock file builds with older stable rustc.
if [ ! -x "$TOOLS/oha/bin/oha" ]; then
  if ! command -v cargo >/dev/null; then
    echo "bench: cargo not found; install Rust (rustup) to build oha, or set OHA=/path/to/oha" >&2
    [ -n "${OHA:-}" ] || exit 2
  else
    echo "bench: cargo install oha $OHA_VERSION (a few minutes, once)"
    cargo install oha --version "$OHA_VERSION" --locked --root "$TOOLS/oha"
  fi
fi

# LiteLLM proxy in its own ignored venv (its dependency tree is large and pins its own versions).
if [ ! -x bench/.litellm-venv/bin/litellm ]; then
  echo "bench: installing litellm[proxy]==$LITELLM_VERSION into bench/.litellm-venv"
  python3 -m venv bench/.litellm-venv
  bench/.litellm-venv/bin/pip install -q --upgrade pip
  bench/.litellm-venv/bin/pip install -q "litellm[proxy]==$LITELLM_VERSION"
fi

# Our streaming load generator, and a descriptor set for ghz (its parser predates proto3 optional).
(cd bench/streamload && go build -o "$BUILD/streamload" .)
"$PY" -m grpc_tools.protoc -I protos --include_imports \
  --descriptor_set_out="$BUILD/llm_manager.protoset" protos/llm_manager/v1/llm_manager_service.proto

# The cost of schema validation per call (tools, structured output), in process: ~10 s.
"$PY" bench/schema_validation.py | tee bench/results/schema_validation.txt

# The cost of API keys and per-caller limits per call (instructions, callgrind): ~4 minutes.
bench/caller_cost.sh 2>/dev/null | tee bench/results/caller_cost.txt

exec "$PY" bench/run.py "$@"
