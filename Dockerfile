# allocguard: the always-on remediation consumer.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY consumer consumer
COPY handlers handlers
COPY schemas schemas
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home allocguard
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# the SQL migrations and the connector config travel with the image
COPY deploy/sql /opt/allocguard/deploy/sql
COPY deploy/debezium /opt/allocguard/deploy/debezium
ENV ALLOCGUARD_DEPLOY_DIR=/opt/allocguard/deploy \
    ALLOCGUARD_HEALTH_PORT=8088 \
    ALLOCGUARD_ARTIFACTS_DIR=/var/lib/allocguard/artifacts \
    PYTHONUNBUFFERED=1
RUN mkdir -p /var/lib/allocguard/artifacts && chown -R allocguard /var/lib/allocguard
USER 10001
WORKDIR /var/lib/allocguard
EXPOSE 8088
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8088/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["allocguard"]
CMD ["run"]
