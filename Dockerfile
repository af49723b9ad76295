# syntax=docker/dockerfile:1
# envelope-proxy container image.
#
# Build:  docker build -t envelope-proxy:0.1.0 \
#           --build-arg REVISION="$(git rev-parse HEAD)" --build-arg SOURCE="<repository URL>" .
# Run:    docker run -p 8080:8080 -p 9090:9090 \
#           -e ENVELOPE_PROXY_UPSTREAM__URL=http://noetl-server:8082 envelope-proxy:0.1.0
#
# The base is pinned by tag. For production builds pin it by digest as well, e.g.
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest>
# so a rebuild cannot silently pick up a different interpreter or Debian update.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------
# builder: resolve the locked runtime dependencies into a self-contained venv.
# The venv lives at the same path in both stages because its scripts carry
# absolute shebangs.
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ARG VENV=/opt/envelope-proxy
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY pyproject.toml requirements.lock README.md ./
COPY proxy/ proxy/
COPY rules/ rules/
# Every dependency version comes from requirements.lock (-c); only the runtime
# dependencies of the project (uvloop and httptools among them) are installed.
# The NoETL ingest emulator (proxy/emulator, behind `envelope-proxy upstream` and `demo`)
# is a demo and test tool, so the image leaves it out, RECORD entries included; those two
# commands then say it is not installed. The import check fails the build if it survived.
RUN python -m venv "${VENV}" \
    && "${VENV}/bin/pip" install --no-cache-dir -c requirements.lock . \
    && "${VENV}/bin/pip" uninstall --yes pip setuptools \
    && rm -r "${VENV}"/lib/python3*/site-packages/proxy/emulator \
    && sed -i '/^proxy\/emulator\//d' "${VENV}"/lib/python3*/site-packages/envelope_proxy-*.dist-info/RECORD \
    && ! "${VENV}/bin/python" -I -c 'import proxy.emulator' 2> /dev/null \
    && "${VENV}/bin/envelope-proxy" --help > /dev/null

# ---------------------------------------------------------------------------
# runtime: the interpreter from the base image plus the venv, nothing else.
# Works with a read-only root filesystem: only /tmp and /var/lib/envelope-proxy
# (mounted as emptyDir in Kubernetes) are written.
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG PYTHON_IMAGE
ARG VENV=/opt/envelope-proxy
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="envelope-proxy" \
      org.opencontainers.image.description="Migration sidecar for NoETL: accepts every event envelope shape and forwards the one the upstream control plane understands." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="${VENV}/bin:${PATH}"
COPY --from=builder ${VENV} ${VENV}
# The built-in configuration is the defaults (listen 0.0.0.0:8080, admin
# 0.0.0.0:9090, upstream http://127.0.0.1:8082); mount a directory over
# /etc/envelope-proxy or set ENVELOPE_PROXY_* variables to change it.
RUN mkdir -p /etc/envelope-proxy /var/lib/envelope-proxy \
    && echo '{}' > /etc/envelope-proxy/config.yaml \
    && chown 10001:10001 /var/lib/envelope-proxy
WORKDIR /var/lib/envelope-proxy
USER 10001:10001
EXPOSE 8080 9090
# Docker/Compose only: Kubernetes ignores HEALTHCHECK and uses the chart's probes.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/healthz', timeout=2)"]
ENTRYPOINT ["envelope-proxy", "serve"]
CMD ["--config", "/etc/envelope-proxy/config.yaml"]
