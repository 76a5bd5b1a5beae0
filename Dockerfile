# allocguard: the always-on remediation consumer.
# With a registry: `podman build -t allocguard .` (or docker). Pin the bases by digest in your own registry's terms
# (BUILD_BASE/BASE=…@sha256:…): no registry is reachable where this file is tested, so no digest could be checked.
# Without one (CI here): `python -m consumer.local.image build` passes Debian bases made by mmdebstrap.
ARG BUILD_BASE=docker.io/library/python:3.11-slim-bookworm
ARG BASE=docker.io/library/python:3.11-slim-bookworm

FROM ${BUILD_BASE} AS build
# the registry base has no compiler; the local build base brings gcc and python3-dev
RUN command -v gcc >/dev/null || { apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*; }
ARG PIP_CERT=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# dependencies first, locked with hashes (deploy/image/*.lock, pip-compile --generate-hashes): a layer that
# changes only with the locks
COPY deploy/image/requirements.lock deploy/image/build-requirements.lock ./
RUN python3 -m venv /opt/allocguard \
    && /opt/allocguard/bin/pip install ${PIP_CERT:+--cert "$PIP_CERT"} --require-hashes --only-binary=:all: \
       -r build-requirements.lock -r requirements.lock
COPY pyproject.toml setup.py README.md ./
COPY consumer consumer
COPY handlers handlers
COPY schemas schemas
# the byte test (consumer/_bytetest.c) and the hold scanner (handlers/_holdscan.c) compiled, or the build fails:
# the Python twins are ≈ 7× slower per message and ≈ 3× per hold announcement
RUN /opt/allocguard/bin/pip install ${PIP_CERT:+--cert "$PIP_CERT"} --no-deps --no-build-isolation . \
    && /opt/allocguard/bin/pip check \
    && cd / && /opt/allocguard/bin/allocguard --version | tee /dev/stderr | grep "byte test: native" | grep -q "hold scanner: native"

FROM ${BASE}
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin allocguard \
    && mkdir -p /var/lib/allocguard/artifacts && chown -R 10001 /var/lib/allocguard
COPY --from=build /opt/allocguard /opt/allocguard
# the SQL migrations and the connector config travel with the image (db init, connector register)
COPY deploy/sql /opt/allocguard/deploy/sql
COPY deploy/debezium /opt/allocguard/deploy/debezium
ENV PATH=/opt/allocguard/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    ALLOCGUARD_DEPLOY_DIR=/opt/allocguard/deploy \
    ALLOCGUARD_HEALTH_PORT=8088 \
    ALLOCGUARD_ARTIFACTS_DIR=/var/lib/allocguard/artifacts \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LANG=C.UTF-8
# non-root; runs with a read-only root filesystem (the artifacts directory is the one writable mount)
USER 10001
WORKDIR /var/lib/allocguard
EXPOSE 8088
ENTRYPOINT ["allocguard"]
CMD ["run"]
