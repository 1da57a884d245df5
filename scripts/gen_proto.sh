#!/usr/bin/env bash
# Regenerates the checked-in Python and Go stubs from protos/.
# Python: grpcio-tools' protoc (pinned with protobuf in requirements) plus
# mypy-protobuf for typed .pyi stubs. Go: protoc-gen-go / protoc-gen-go-grpc.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-"$root/.venv/bin/python"}
if [ -z "${GOBIN:-}" ]; then
  GOBIN="$root/.tools/bin"
  [ -x "$GOBIN/protoc-gen-go" ] || GOBIN="$(go env GOPATH)/bin"
fi
gobin=$GOBIN
# protoc-gen-mypy lives beside the venv's python.
export PATH="$gobin:$(dirname "$python"):$PATH"

py_out="$root/clients/python"
go_out="$root/clients/go"
protos=$(cd "$root/protos" && find llm_manager -name '*.proto' | sort)

rm -f "$py_out"/llm_manager/v1/*_pb2*.py "$py_out"/llm_manager/v1/*_pb2*.pyi "$py_out"/llm_manager/v1/*.binpb
rm -f "$go_out"/llmmanagerv1/*.pb.go
mkdir -p "$go_out/llmmanagerv1"

cd "$root/protos"
# grpc_tools bundles the well-known types (google/protobuf/*.proto).
"$python" -m grpc_tools.protoc -I . \
  --python_out="$py_out" --mypy_out="$py_out" \
  --grpc_python_out="$py_out" --mypy_grpc_out="$py_out" \
  $protos

# The descriptors with their comments (source info), served by reflection so grpcurl, buf and
# Evans show the protos' documentation.
"$python" -m grpc_tools.protoc -I . --include_source_info \
  --descriptor_set_out="$py_out/llm_manager/v1/llm_manager.binpb" $protos

wkt=$("$python" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
"$python" -m grpc_tools.protoc -I . -I "$wkt" \
  --plugin=protoc-gen-go="$gobin/protoc-gen-go" \
  --plugin=protoc-gen-go-grpc="$gobin/protoc-gen-go-grpc" \
  --go_out="$go_out" --go_opt=module=github.com/llm-manager/llm-manager/clients/go \
  --go-grpc_out="$go_out" --go-grpc_opt=module=github.com/llm-manager/llm-manager/clients/go \
  $protos
echo "generated: $(ls "$py_out"/llm_manager/v1 | wc -l) Python files, $(ls "$go_out"/llmmanagerv1 | wc -l) Go files"
