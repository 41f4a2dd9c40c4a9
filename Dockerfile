# syntax=docker/dockerfile:1
# The musrec Discord bot. Build: docker build -t musrec-bot .   Run: see compose.yaml.
# On first start the bot fetches what it lacks into /data (the VGGish files unless it uses MAX servers, AudioSet's
# 2.4 GB features) and builds the index; later starts find them in the volume.

FROM python:3.11-slim AS build

# Annoy ships as source and compiles with -march=native by default: an image built on a newer CPU would die of an
# illegal instruction on an older one. These are Annoy's own flags without -march/-mcpu (portable, x86-64 and arm64).
ENV ANNOY_COMPILER_ARGS="-D_CRT_SECURE_NO_WARNINGS,-fpermissive,-O3,-ffast-math,-fno-associative-math,-DANNOYLIB_MULTITHREADED_BUILD,-std=c++14" \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Unpinned: Debian's current packages of this release (pinned versions vanish from the mirrors within weeks).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

# Installed into a virtual environment that the runtime stage copies whole, without the compiler.
RUN python -m venv /opt/musrec
WORKDIR /src
COPY pyproject.toml README.md ./
COPY musrec ./musrec
COPY bot ./bot
# PIP_EXTRAS: optional extras, comma-separated (pot: the PO-token provider's yt-dlp plugin; see compose.yaml).
ARG PIP_EXTRAS=""
RUN /opt/musrec/bin/pip install ".${PIP_EXTRAS:+[$PIP_EXTRAS]}"


FROM python:3.11-slim

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg mpg123 \
    && rm -rf /var/lib/apt/lists/*

COPY --from=build /opt/musrec /opt/musrec

RUN useradd --create-home --uid 10001 --user-group musrec \
    && mkdir -p /data \
    && chown musrec:musrec /data

# OPENBLAS_NUM_THREADS=1: the small matrix products of a query are slower multi-threaded when requests overlap.
ENV PATH="/opt/musrec/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OPENBLAS_NUM_THREADS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MUSREC_DATA_DIR=/data

USER 10001:10001
WORKDIR /home/musrec
VOLUME ["/data"]

# Quick checks only (no TensorFlow import): configuration, ffmpeg, model files, index, token, Annoy. The first start
# downloads and indexes for a long while, hence the long start period.
HEALTHCHECK --interval=5m --timeout=60s --start-period=2h --retries=3 \
    CMD ["musrec", "doctor", "--quiet", "--quick", "--bot"]

ENTRYPOINT ["musrec-bot"]
