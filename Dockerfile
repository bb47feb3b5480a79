# One file, two images (deploy/README.md):
#
#   DOCKER_BUILDKIT=1 docker build --target api    -t latentq-api:0.1.0 .      # FastAPI, no torch
#   DOCKER_BUILDKIT=1 docker build --target worker -t latentq-worker:0.1.0 .   # CUDA torch + diffusers
#
# No model weights are baked in: workers read them from the /models volume or download a hub id
# into HF_HOME (/cache/huggingface, a volume) on first start, on machines that reach the hub.
# Both images run as the unprivileged user 10001 and keep images and the signing key under
# LATENTQ_DATA_DIR=/data (a volume shared by API and workers while storage is local).
#
# Builds that cannot reach the public registries and indexes (deploy/README.md, "Images"):
# - the base images are build arguments (PYTHON_IMAGE, CUDA_IMAGE): point them at a mirror or
#   at images built locally;
# - every pip install goes through deploy/docker/pip-install.sh, which looks in
#   deploy/docker/wheels/ first (a wheelhouse: `pip download -d deploy/docker/wheels ...`),
#   uses PIP_INDEX_URL when given (a mirror or proxy), installs from the wheelhouse alone
#   with WHEELS_ONLY=1 (air-gapped), and trusts a CA bundle passed as the BuildKit secret `ca`
#   (`--secret id=ca,src=/etc/ssl/certs/ca-certificates.crt`) for a proxy that re-signs TLS.
#   The secret is mounted for the one command; it is in no layer of the image.
# BuildKit is needed for those mounts (DOCKER_BUILDKIT=1, or any `docker buildx`). The file
# names no `# syntax=` frontend image, so BuildKit uses its built-in one and pulls nothing.

# Python 3.11 on Debian 12; the minor version is pinned, patch releases come with rebuilds.
# Any image with Python 3.11 (`python` on PATH) and the venv module will do.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The CUDA user-space libraries (cuBLAS, cuDNN, ...) come with the torch wheels, so the small
# `base` flavour of the CUDA image is enough; it sets up the NVIDIA container runtime (driver
# mounts, NVIDIA_* variables). CUDA 13.0 needs an NVIDIA driver >= 580; on hosts with an older
# driver build with a CUDA 12 pair, e.g.
#   --build-arg CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu22.04 \
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
# Any Debian or Ubuntu image whose archive has python3.11 will do (Ubuntu 22.04, Debian 12).
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-base-ubuntu22.04

# ---------------------------------------------------------------------------------------------
# api: the HTTP layer. Installs only the API's dependencies, then jobs/ and app/ without deps.
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS api-build

# A mirror of the package index, and wheelhouse-only installs (see the top of this file).
ARG PIP_INDEX_URL=""
ARG WHEELS_ONLY=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN --mount=type=secret,id=ca \
    --mount=type=bind,source=deploy/docker,target=/build \
    sh /build/pip-install.sh -r /build/requirements-api.txt
COPY pyproject.toml README.md /src/
COPY jobs/ /src/jobs/
COPY app/ /src/app/
RUN --mount=type=secret,id=ca \
    --mount=type=bind,source=deploy/docker,target=/build \
    sh /build/pip-install.sh --no-deps /src


FROM ${PYTHON_IMAGE} AS api

LABEL org.opencontainers.image.title="latentq-api" \
      org.opencontainers.image.description="latentq HTTP API (FastAPI, no torch)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 latentq \
    && useradd --system --uid 10001 --gid latentq --home-dir /home/latentq --create-home \
       --shell /usr/sbin/nologin latentq \
    && mkdir -p /data /etc/latentq \
    && chown latentq:latentq /data
COPY --from=api-build /opt/venv /opt/venv
COPY deploy/docker/models.toml /etc/latentq/models.toml
COPY deploy/docker/healthcheck.py /usr/local/bin/latentq-healthcheck
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LATENTQ_DATA_DIR=/data \
    LATENTQ_CATALOG=/etc/latentq/models.toml
WORKDIR /home/latentq
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/usr/local/bin/latentq-healthcheck", "http://127.0.0.1:8000/healthz"]
# Behind a proxy, uvicorn believes X-Forwarded-* only from FORWARDED_ALLOW_IPS (default
# 127.0.0.1): docker-compose.yml and the Kubernetes manifests set it to their proxy's
# address. Never "*", which lets a client name its own address (open mode refuses it).
CMD ["uvicorn", "--factory", "app.main:create_app", "--host", "0.0.0.0", "--port", "8000", \
     "--proxy-headers"]


# ---------------------------------------------------------------------------------------------
# worker: one process per GPU, CUDA build of torch from the PyTorch index, the `cuda` extra.
# ---------------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS worker-python

# Python 3.11 from Ubuntu 22.04's own archive (universe); the CUDA base image has no Python.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       python3.11 ca-certificates \
    && rm -rf /var/lib/apt/lists/*


FROM worker-python AS worker-build

# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3.11-venv \
    && rm -rf /var/lib/apt/lists/*
ARG PIP_INDEX_URL=""
ARG WHEELS_ONLY=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN --mount=type=secret,id=ca \
    --mount=type=bind,source=deploy/docker,target=/build \
    sh /build/pip-install.sh pip==25.3
# torch and xformers from the same PyTorch index, so that xformers' kernels match torch's CUDA.
# docker-compose.cpu.yml builds a CPU worker: the CPU index and XFORMERS_VERSION="" (no xformers,
# no `cuda` extra). TORCH_INDEX_URL="" takes torch from the wheelhouse or PIP_INDEX_URL (a CPU
# wheel in the wheelhouse: TORCH_VERSION=2.13.0+cpu).
ARG TORCH_VERSION=2.13.0
ARG XFORMERS_VERSION=0.0.35
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
RUN --mount=type=secret,id=ca \
    --mount=type=bind,source=deploy/docker,target=/build \
    sh /build/pip-install.sh ${TORCH_INDEX_URL:+--index-url "${TORCH_INDEX_URL}"} \
        "torch==${TORCH_VERSION}" ${XFORMERS_VERSION:+"xformers==${XFORMERS_VERSION}"}
# torch is named again so that nothing replaces the CUDA build with another one. A layer of its
# own: the torch layer (GBs) stays cached when only these pins change.
# hadolint ignore=DL3059
RUN --mount=type=secret,id=ca \
    --mount=type=bind,source=deploy/docker,target=/build \
    sh /build/pip-install.sh -r /build/requirements-worker.txt "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md /src/
COPY jobs/ /src/jobs/
COPY worker/ /src/worker/
# Every dependency is already there: this installs the project itself, with its `cuda` extra
# (xformers) checked, and pip check proves the environment consistent.
RUN --mount=type=secret,id=ca \
    --mount=type=bind,source=deploy/docker,target=/build \
    sh /build/pip-install.sh "/src${XFORMERS_VERSION:+[cuda]}" "torch==${TORCH_VERSION}" \
    && pip check


FROM worker-python AS worker

LABEL org.opencontainers.image.title="latentq-worker" \
      org.opencontainers.image.description="latentq GPU worker (diffusers on CUDA torch)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 latentq \
    && useradd --system --uid 10001 --gid latentq --home-dir /home/latentq --create-home \
       --shell /usr/sbin/nologin latentq \
    && mkdir -p /data /models /cache/huggingface /etc/latentq \
    && chown latentq:latentq /data /models /cache/huggingface
COPY --from=worker-build /opt/venv /opt/venv
COPY deploy/docker/models.toml /etc/latentq/models.toml
COPY deploy/docker/healthcheck.py /usr/local/bin/latentq-healthcheck
# Volumes (compose, Kubernetes): /data (images, shared with the API), /models (local weights;
# the demo model is built there) and /cache/huggingface (hub downloads).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/cache/huggingface \
    LATENTQ_DATA_DIR=/data \
    LATENTQ_CATALOG=/etc/latentq/models.toml \
    LATENTQ_METRICS_PORT=9100
WORKDIR /home/latentq
USER 10001:10001
# Prometheus metrics and readiness (200 once the models are warm) of the worker.
EXPOSE 9100
# Loading (or downloading) the models can take minutes before readiness turns 200.
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python", "/usr/local/bin/latentq-healthcheck", "http://127.0.0.1:9100/readyz"]
# SIGTERM is a warm shutdown: the worker finishes the job it runs, then exits. Give it as long
# as the longest job (LATENTQ_JOB_TIMEOUT_S): compose stop_grace_period, Kubernetes
# terminationGracePeriodSeconds.
CMD ["python", "-m", "worker"]
