# syntax=docker/dockerfile:1.7
# One image for every process type: `web`, `worker`, `scheduler` and `manage ...`
# (see docker-compose.yml). Two stages: wheels are built with compilers at hand,
# and only the wheels reach the final image.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS builder
# A few dependencies come as source distributions and compile.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# torch from PyTorch's CPU index: the torch wheel PyPI serves for Linux pulls in the
# CUDA libraries, gigabytes this CPU-only image never uses.
RUN pip wheel --no-cache-dir --wheel-dir /wheels \
        --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY src ./src
# --find-links: the pinned torch resolves to the CPU wheel built above.
RUN pip wheel --no-cache-dir --wheel-dir /wheels --find-links /wheels .

FROM python:${PYTHON_VERSION}-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AISTACK_HOME=/data
# The wheels are mounted for this one step, so they add no layer to the image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels aistack
# Volumes mounted on /data/media and /data/static take these directories' owner.
RUN useradd --create-home --uid 10001 aistack \
    && mkdir -p /data/media /data/static \
    && chown -R aistack:aistack /data
USER aistack
WORKDIR /data
EXPOSE 8000
ENTRYPOINT ["aistack"]
CMD ["web", "--host", "0.0.0.0", "--port", "8000"]
