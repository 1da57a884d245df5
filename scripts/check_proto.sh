#!/usr/bin/env bash
# Regenerates the stubs into a scratch copy of the repository and fails if they differ from
# the checked-in ones (so peers never build against stale stubs).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/clients"
cp -r "$root/protos" "$root/scripts" "$scratch/"
cp -r "$root/clients/python" "$root/clients/go" "$scratch/clients/"
gobin=${GOBIN:-"$root/.tools/bin"}
[ -x "$gobin/protoc-gen-go" ] || gobin="$(go env GOPATH)/bin"
PYTHON="$root/.venv/bin/python" GOBIN="$gobin" "$scratch/scripts/gen_proto.sh" >/dev/null
status=0
for dir in clients/python/llm_manager/v1 clients/go/llmmanagerv1; do
  if ! diff -r "$root/$dir" "$scratch/$dir" -x __pycache__; then
    echo "stale stubs in $dir: run 'make proto' and commit the result" >&2
    status=1
  fi
done
[ $status -eq 0 ] && echo "stubs are up to date"
exit $status
