# syntax=docker/dockerfile:1
# One image for every role: `retrain worker` (the default), `retrain gateway` and every other
# CLI command (`docker compose run --rm cli status`). Runtime dependencies come from
# requirements.lock (`make lock`), so an image built today installs what the tests ran with.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/retrain
WORKDIR /src
# The lock alone first: this layer is rebuilt only when the dependencies change. `--no-deps`
# installs exactly the pinned set and `pip check` proves it is complete and consistent.
COPY requirements.lock ./
RUN /opt/retrain/bin/pip install --no-deps -r requirements.lock \
    && /opt/retrain/bin/pip check
COPY pyproject.toml README.md ./
COPY workflows ./workflows
COPY activities ./activities
COPY workers ./workers
COPY starters ./starters
COPY serving ./serving
RUN /opt/retrain/bin/pip install --no-deps . \
    && /opt/retrain/bin/retrain --help > /dev/null

FROM ${PYTHON_IMAGE}
# A fixed uid/gid, so volume and secret-file ownership can be granted ahead of time.
ARG RETRAIN_UID=10001
RUN groupadd --system --gid "${RETRAIN_UID}" retrain \
    && useradd --system --uid "${RETRAIN_UID}" --gid retrain --home-dir /var/lib/retrain \
        --shell /usr/sbin/nologin retrain \
    && install -d -o retrain -g retrain -m 0750 /var/lib/retrain
# The same path as in the builder: a venv is not relocatable.
COPY --from=builder /opt/retrain /opt/retrain
ENV PATH=/opt/retrain/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RETRAIN_HOME=/var/lib/retrain \
    RETRAIN_METRICS_ADDRESS=0.0.0.0:9464
WORKDIR /var/lib/retrain
USER ${RETRAIN_UID}:${RETRAIN_UID}
# A named volume mounted here starts with this directory's owner (the retrain user).
VOLUME ["/var/lib/retrain"]
# 8080: the gateway; 9464: a worker's Prometheus /metrics.
EXPOSE 8080 9464
# The worker's metrics endpoint answering; the gateway sets RETRAIN_HEALTHCHECK_URL to /healthz.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=5 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('RETRAIN_HEALTHCHECK_URL', 'http://127.0.0.1:9464/metrics'), timeout=4)"]
ENTRYPOINT ["retrain"]
CMD ["worker"]
