# syntax=docker/dockerfile:1
# One image for the operator (`mcop operator`) and the worker pods (`mcop worker`), built from this
# repository: docker build -t montecarlo-operator:0.1.0 .
# The base is pinned to a Python patch release; pin its digest too in your registry's mirror
# (--build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# --- builder: the project's wheel and the wheels of its dependencies ----------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
# worker/mcop_worker/model/crds is a symlink to ../../../crds: the wheel gets a copy of the CRDs.
COPY crds/ crds/
COPY worker/ worker/
COPY operator/ operator/
# constraints.txt pins every dependency to the versions the test suite ran with, so two builds of
# one commit carry the same numpy and numba (the numbers' bits depend on them).
# The registry settings (index, certificate authority) of the machine that builds are mounted for
# this step only, never stored in a layer: buildah/docker build --secret id=pip.conf,src=...
# --secret id=pip-ca.crt,src=... (scripts/build-images does it); without them pip's defaults apply.
RUN --mount=type=secret,id=pip.conf,target=/run/secrets/pip.conf \
    --mount=type=secret,id=pip-ca.crt,target=/run/secrets/pip-ca.crt \
    PIP_CONFIG_FILE=/run/secrets/pip.conf pip wheel --constraint constraints.txt --wheel-dir /wheels .

# --- final: the installed package, no compiler, no sources, a non-root numeric user -------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="montecarlo-operator" \
      org.opencontainers.image.description="Reproducible Monte Carlo simulations as Kubernetes resources: operator and workers" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    NUMBA_CPU_NAME=generic \
    MCOP_NUMBA_SHIPPED_CACHE=/opt/mcop/numba-cache
# Installed from the builder's wheels only (--no-index); the wheels are mounted, not copied, so
# they leave no layer behind. pip compiles the bytecode now: the pods' root filesystem is read-only.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels montecarlo-operator \
    && groupadd --system --gid 10001 mcop \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin mcop
# The numba kernels, compiled now for a generic x86-64 CPU (NUMBA_CPU_NAME above) from one small
# block of each example: a worker copies them into its writable NUMBA_CACHE_DIR at start instead
# of compiling them (mcop_worker.programs.kernel_cache).
RUN --mount=type=bind,source=examples,target=/tmp/examples \
    NUMBA_CACHE_DIR=/opt/mcop/numba-cache \
    python3 -m mcop_worker.programs.kernel_cache build /opt/mcop/numba-cache /tmp/examples/*.yaml
# The same numbers as the chart's runAsUser and the worker pods' (mcop_operator.builders.WORKER_UID).
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["mcop"]
CMD ["--help"]
