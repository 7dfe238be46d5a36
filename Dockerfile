# syntax=docker/dockerfile:1
# sandbox-broker container image.
#
#   docker build -t sandbox-broker:local .
#
# Two stages: `build` turns the project into a wheel and installs it, with its runtime
# dependencies only (no [dev] extra), into a virtualenv; `runtime` copies that
# virtualenv onto a clean slim base and runs it as an unprivileged user. No compiler,
# pip cache, source tree or test code reaches the final image.
# For reproducible builds, pin both FROM lines to a digest
# (python:3.11-slim-bookworm@sha256:...) that your registry mirror has vetted.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
# Only what the wheel needs (the .dockerignore keeps tests, data and venvs out anyway).
COPY pyproject.toml README.md ./
COPY app ./app
RUN /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip install . \
    && /opt/venv/bin/pip uninstall --yes pip \
    && find /opt/venv -name '__pycache__' -type d -prune -exec rm -rf {} +

FROM python:3.11-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="sandbox-broker" \
      org.opencontainers.image.description="Leases pre-created cloud sandboxes to lab participants" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed, non-root uid/gid so volume ownership and ECS/Kubernetes runAsUser agree.
RUN groupadd --system --gid 10001 broker \
    && useradd --system --uid 10001 --gid broker --no-create-home \
       --home-dir /srv/broker --shell /usr/sbin/nologin broker \
    && mkdir -p /srv/broker/data \
    && chown -R broker:broker /srv/broker
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BROKER_SQLITE_PATH=/srv/broker/data/broker.db
WORKDIR /srv/broker
USER 10001:10001
EXPOSE 8080
# Liveness only (/healthz does no I/O); readiness (/readyz) is the load balancer's job.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
CMD ["sandbox-broker", "serve", "--host", "0.0.0.0", "--port", "8080"]
