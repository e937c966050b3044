# pydynamo runtime image: the `dynamo` package with the operator extras, on python:3.11-slim.
# It runs the operator (dynamo-platform chart), the frontend, the mocker and the planner; the
# engine images (docker/Dockerfile.{vllm,sglang,trtllm}) add a real engine.
#   docker build -t pydynamo/runtime:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python3 -m pip wheel --no-cache-dir --wheel-dir /wheels ".[operator]"

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
# The wheels were just built from this source: the version is the one in pyproject.toml.
# hadolint ignore=DL3013
RUN python3 -m pip install --no-index --find-links=/wheels "pydynamo[operator]" \
    && rm -rf /wheels \
    && groupadd --gid 1000 dynamo \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/dynamo dynamo \
    && mkdir -p /workspace && chown dynamo:dynamo /workspace
COPY --chown=dynamo:dynamo examples /workspace/examples
WORKDIR /workspace
USER 1000:1000
LABEL org.opencontainers.image.title="pydynamo runtime" \
      org.opencontainers.image.description="Python implementation of NVIDIA Dynamo" \
      org.opencontainers.image.licenses="Apache-2.0"
# `docker run pydynamo/runtime:0.1.0 -m dynamo.frontend`; Kubernetes manifests set the command.
ENTRYPOINT ["python3"]
CMD ["-m", "dynamo.frontend"]
