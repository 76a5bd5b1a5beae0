"""OpenTelemetry, configured the ecosystem's way: the standard ``OTEL_*`` variables work unchanged.

- ``OTEL_TRACES_EXPORTER``: ``otlp``, ``console`` or ``none`` (comma-separated). When unset, ``otlp`` if an OTLP
  endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), else none.
- ``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL``: ``http/protobuf`` (default) or ``grpc``; endpoint, headers, timeout
  and compression are read by the exporters themselves.
- ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` (service.name defaults to ``allocguard``),
  ``OTEL_TRACES_SAMPLER(_ARG)`` and ``OTEL_BSP_*`` are read by the SDK.

Instrumentation lives here and in the runtime's wrappers; the handlers only see the span seam
(:class:`handlers.pipeline.Hooks`).
"""

from __future__ import annotations

import functools
import http.client
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from psycopg import Transaction, sql
from psycopg.pq import TransactionStatus

from consumer.redact import redact
from handlers.pipeline import SpanHandle

log = logging.getLogger("allocguard.telemetry")


def _exporters() -> list[SpanExporter]:
    configured = os.environ.get("OTEL_TRACES_EXPORTER")
    if configured is None:
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        configured = "otlp" if endpoint else "none"
    exporters: list[SpanExporter] = []
    for name in (n.strip() for n in configured.split(",")):
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
                "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
            )
            if protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

                exporters.append(GrpcExporter())
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

                exporters.append(HttpExporter())
        elif name not in ("none", ""):
            raise ValueError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (otlp, console, none)")
    return exporters


def service_resource() -> Resource:
    """The SDK's resource from OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES; service.name defaults to allocguard."""
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource.create({"service.name": "allocguard"}))
    return resource


def span_ids(span: Span | None) -> tuple[str, str] | None:
    """(trace id, span id) as hex, when ``span`` is a real, recording span."""
    if span is None:
        return None
    ctx = span.get_span_context()
    if not ctx.is_valid or not span.is_recording():
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


class _Handle:
    def __init__(self, span: Span) -> None:
        self._span = span

    def set(self, key: str, value: str | int | float | bool | list[str]) -> None:
        self._span.set_attribute(key, value)

    def trace_ids(self) -> tuple[str, str] | None:
        return span_ids(self._span)


class _Off:
    def set(self, key: str, value: str | int | float | bool | list[str]) -> None:
        return None

    def trace_ids(self) -> tuple[str, str] | None:
        return None


_OFF = _Off()


class Telemetry:
    """The tracer, the span seam for the handlers, and the consumer-span wrapper for the runtime."""

    def __init__(self) -> None:
        self.provider: TracerProvider | None = None
        exporters = _exporters()
        if exporters:
            self.provider = TracerProvider(resource=service_resource())
            for exporter in exporters:
                self.provider.add_span_processor(BatchSpanProcessor(exporter))
            trace.set_tracer_provider(self.provider)  # wrappers such as TracedCursor use the global provider
            log.info("tracing to %s", ", ".join(type(e).__name__ for e in exporters))
        self.tracer = (self.provider or trace.get_tracer_provider()).get_tracer("allocguard")

    @property
    def tracing(self) -> bool:
        """Whether spans go anywhere: a real tracer (this process's exporters, or one given to it), or an SDK
        provider installed globally by someone else."""
        if not isinstance(self.tracer, trace.ProxyTracer | trace.NoOpTracer):
            return True
        return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)

    @contextmanager
    def span(
        self, name: str, attributes: dict[str, Any], links: list[tuple[str, str]] | None = None
    ) -> Iterator[SpanHandle]:
        if not self.tracing:  # the handlers' seam costs nothing when no one listens
            yield _OFF
            return
        span_links = [
            Link(SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(1)))
            for trace_id, span_id in links or []
        ]
        with self.tracer.start_as_current_span(name, attributes=attributes, links=span_links) as span:
            yield _Handle(span)

    def child(self, parent: Span, name: str, attributes: dict[str, Any]) -> Span | None:
        """A span under ``parent`` that the caller ends (None when tracing is off)."""
        if not self.tracing:
            return None
        return self.tracer.start_span(name, context=trace.set_span_in_context(parent), attributes=attributes)

    def consumer_span(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        headers: list[tuple[str, Any]] | None,
        group: str,
    ) -> Span:
        """A CONSUMER span per message (OpenTelemetry messaging conventions for Kafka), child of the W3C
        ``traceparent`` the message carries, if any. The caller ends it when the message is done. With tracing
        off, the invalid span (every call on it a no-op)."""
        if not self.tracing:
            return trace.INVALID_SPAN
        # headers are whatever the producer sent: undecodable bytes or a malformed traceparent start a new trace
        carrier = {
            str(name): value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
            for name, value in headers or []
        }
        try:
            parent = extract(carrier) if "traceparent" in carrier else otel_context.Context()
        except Exception:  # a propagator must never stop the consumer
            parent = otel_context.Context()
        attributes: dict[str, Any] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": topic,
            "messaging.destination.partition.id": str(partition),
            "messaging.kafka.offset": offset,
            "messaging.kafka.message.offset": offset,
            "messaging.consumer.group.name": group,
        }
        if key is not None:
            attributes["messaging.kafka.message.key"] = key.decode(errors="replace")[:200]
        return self.tracer.start_span(f"process {topic}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes)

    def producer_span(self, topic: str, parent: Span | None, source: tuple[str, int, int]) -> Span:
        """A PRODUCER span for a dead-letter copy (``send <topic>``), under the message's span when there is one;
        the caller ends it when the broker has the copy (or refused it)."""
        if not self.tracing:
            return trace.INVALID_SPAN
        context = trace.set_span_in_context(parent) if parent is not None else otel_context.Context()
        attributes: dict[str, Any] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": topic,
            "allocguard.source.topic": source[0],
            "allocguard.source.partition": source[1],
            "allocguard.source.offset": source[2],
        }
        return self.tracer.start_span(f"send {topic}", context=context, kind=SpanKind.PRODUCER, attributes=attributes)

    @staticmethod
    def traceparent(span: Span) -> list[tuple[str, bytes]]:
        """W3C headers for ``span`` (for DLQ copies of messages that arrived without one)."""
        carrier: dict[str, str] = {}
        inject(carrier, context=trace.set_span_in_context(span))
        return [(name, value.encode()) for name, value in carrier.items()]

    @staticmethod
    def end(span: Span, error: BaseException | None = None) -> None:
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the current trace_id/span_id."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            doc["trace_id"] = format(ctx.trace_id, "032x")
            doc["span_id"] = format(ctx.span_id, "016x")
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


class RedactingFilter(logging.Filter):
    """One redaction path for every log line, ours and our libraries' (psycopg.pool's connection warnings quote
    the DSN): a password in a connection string or a URL never reaches the output."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info, record.exc_text = None, text
        return True


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        formatter = JsonFormatter()
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # the pool logs every failed reconnection attempt; the runtime's probe says once that the database is down
    # and once that it is back (consumer/runtime/health.py's Outage)
    logging.getLogger("psycopg.pool").setLevel(max(logging.ERROR, logging.getLogger().level))


class Metrics:
    """OpenTelemetry metrics, exposed for Prometheus on ``/metrics`` (its own registry per runtime).

    ``OTEL_METRICS_EXPORTER=otlp`` also pushes them to the OTLP endpoint. Labels are bounded: topic, op,
    partition, status, verdict, action, outcome, error class — never booking ids, never guest data."""

    LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

    def __init__(self) -> None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
        from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry()
        readers: list[MetricReader] = [PrometheusMetricReader(registry=self.registry)]
        if "otlp" in os.environ.get("OTEL_METRICS_EXPORTER", ""):
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        seconds = View(
            instrument_name="allocguard.*.duration",
            aggregation=ExplicitBucketHistogramAggregation(self.LATENCY_BUCKETS),
        )
        self.provider = MeterProvider(metric_readers=readers, resource=service_resource(), views=[seconds])
        meter = self.provider.get_meter("allocguard")
        self.events = meter.create_counter("allocguard.events.consumed", description="CDC messages consumed")
        self.dlq = meter.create_counter("allocguard.dlq.messages", description="messages sent to the dead-letter topic")
        self.incidents = meter.create_counter("allocguard.incidents", description="failure events by outcome")
        self.allocations = meter.create_counter(
            "allocguard.allocations", description="allocations assessed, by verdict and by what was done"
        )
        self.attempts = meter.create_counter("allocguard.retry.attempts", description="auto-assign attempts")
        self.prevention = meter.create_counter(
            "allocguard.prevention.flags",
            description="allocations left behind by the platform, caught from CDC, by verdict and what was done",
        )
        self.outages = meter.create_counter(
            "allocguard.dependency.outages", description="times a dependency (kafka, database) became unavailable"
        )
        self.gaps = meter.create_counter(
            "allocguard.kafka.gaps",
            description="times records a partition still needed were gone (retention, a re-created topic): each is "
            "backfilled from observability_events",
        )
        self.gap_records = meter.create_counter(
            "allocguard.kafka.gap.records", description="records lost to retention before they were handled"
        )
        self.backfilled = meter.create_counter(
            "allocguard.backfill.events", description="platform events re-read from the database to fill a gap"
        )
        self.rejoins = meter.create_counter(
            "allocguard.kafka.rejoins",
            description="times the consumer left and joined its group again: no assignment after partitions were lost",
        )
        self.fetch_stalls = meter.create_counter(
            "allocguard.kafka.fetch.stalls",
            description="partitions that stopped fetching with the broker reachable and their log going on: action "
            "restart (resume and seek) or rejoin (the member left and joined its group again)",
        )
        self.handling = meter.create_histogram(
            "allocguard.handling.duration",
            unit="s",
            description="time to handle a signal event, or a batch of them in one round trip (one observation each)",
        )
        self.signals = meter.create_counter("allocguard.signals.handled", description="signal events handled")
        self.decision_requests = meter.create_counter(
            "allocguard.decision.requests",
            description="decision requests sent to a webhook, by kind, target and outcome (delivered, failed, moot)",
        )
        self.resolution = meter.create_histogram(
            "allocguard.resolution.duration",
            unit="s",
            description="failure event created in the platform -> incident settled by allocguard",
        )
        self.lag: dict[tuple[str, int], int] = {}
        meter.create_observable_counter(
            "allocguard.db.statements",
            callbacks=[lambda options: DB_TALLY.observe("statements")],
            description="SQL statements allocguard sent (BEGIN/COMMIT not counted)",
        )
        meter.create_observable_counter(
            "allocguard.db.transactions",
            callbacks=[lambda options: DB_TALLY.observe("transactions")],
            description="database transactions allocguard ran (an autocommit statement is one)",
        )
        meter.create_observable_gauge(
            "allocguard.consumer.lag", callbacks=[self._observe_lag], description="messages behind the partition end"
        )
        self.meter = meter
        # counters an alert takes increase() of exist from the start at 0: a first increment is then a change
        for counter, labels in (
            (self.gaps, {}),
            (self.gap_records, {}),
            (self.rejoins, {}),
            (self.fetch_stalls, {"action": "restart"}),
            (self.fetch_stalls, {"action": "rejoin"}),
            (self.dlq, {}),
            (self.outages, {"dependency": "database"}),
            (self.outages, {"dependency": "kafka"}),
        ):
            counter.add(0, labels)

    def gauge(self, name: str, description: str, read: Callable[[], Iterable[tuple[float, Mapping[str, str]]]]) -> None:
        """A gauge whose samples ``read`` gives at scrape time (it must only read state, never block)."""
        from opentelemetry.metrics import Observation

        def observe(options: Any) -> Iterator[Any]:
            for value, labels in read():
                yield Observation(value, dict(labels))

        self.meter.create_observable_gauge(name, callbacks=[observe], description=description)

    def _observe_lag(self, options: Any) -> Iterator[Any]:
        from opentelemetry.metrics import Observation

        for (topic, partition), lag in list(self.lag.items()):
            yield Observation(lag, {"topic": topic, "partition": str(partition)})

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))

    def shutdown(self) -> None:
        self.provider.shutdown()


class DbTally:
    """Statements and transactions the runtime's connections ran, process-wide: the cost per signal an SRE (and
    bench/storm.py) reads from ``/metrics``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.statements = 0
        self.transactions = 0

    def add(self, statements: int = 0, transactions: int = 0) -> None:
        with self._lock:
            self.statements += statements
            self.transactions += transactions

    def observe(self, what: str) -> Iterator[Any]:
        from opentelemetry.metrics import Observation

        yield Observation(getattr(self, what))


DB_TALLY = DbTally()


class TracedConnection(psycopg.Connection[Any]):
    """Counts the transaction blocks it opens (a nested block is a savepoint, not a transaction)."""

    @contextmanager
    def transaction(self, savepoint_name: str | None = None, force_rollback: bool = False) -> Iterator[Transaction]:
        if self.info.transaction_status == TransactionStatus.IDLE:
            DB_TALLY.add(transactions=1)
        with super().transaction(savepoint_name, force_rollback) as block:
            yield block


#: a table a statement reads or writes: after FROM, JOIN, INTO, UPDATE (not a function call: ``FROM unnest(…)``)
_TABLE = re.compile(
    r"\b(?:FROM|JOIN|INTO|UPDATE)\s+(?:ONLY\s+)?((?:[a-z_][a-z0-9_]*\.)?[a-z_][a-z0-9_]*)(?![\w.]|\s*\()", re.IGNORECASE
)
#: a statement that calls a function: ``SELECT * FROM public.assign_tables_atomic_v2(…)``, ``SELECT f(…)``
_CALL = re.compile(r"^\s*SELECT\s+(?:\*\s+FROM\s+)?(?:[a-z_][a-z0-9_]*\.)?([a-z_][a-z0-9_]*)\s*\(", re.IGNORECASE)
_KEYWORDS = {"select", "lateral", "set", "values", "only", "where"}
#: a common table expression's name (``name AS (``, ``name AS MATERIALIZED (``): not a table
_CTE = re.compile(r"\b([a-z_][a-z0-9_]*)\s+AS\s+(?:NOT\s+)?(?:MATERIALIZED\s+)?\(", re.IGNORECASE)
#: what a statement that starts with ``WITH`` does: the first write in it, else it reads
_WRITE = re.compile(r"\b(INSERT|UPDATE|DELETE)\b", re.IGNORECASE)


@functools.lru_cache(maxsize=2048)
def statement_summary(text: str) -> tuple[str, str, tuple[str, ...]]:
    """(span name, operation, tables) of one statement text, computed once per text: ``SELECT allocations,
    bookings``, ``DELETE allocations``, ``SELECT assign_tables_atomic_v2`` (the OpenTelemetry database
    conventions' ``{operation} {target}``; several tables are named together so that reads can be told apart)."""
    words = text.split(None, 1)
    operation = words[0].upper() if words else "SQL"
    ctes: set[str] = set()
    if operation == "WITH":  # named by what it does: its first write (a data-modifying WITH), else a read
        write = _WRITE.search(text)
        operation = write.group(1).upper() if write else "SELECT"
        ctes = {name.lower() for name in _CTE.findall(text)}
    tables: list[str] = []
    for name in _TABLE.findall(text):
        short = name.lower().removeprefix("public.")
        if short not in tables and short not in _KEYWORDS and short not in ctes:
            tables.append(short)
    if not tables:
        call = _CALL.match(text)
        target = call.group(1).lower() if call else ""
    else:
        target = ", ".join(tables[:3]) + (" …" if len(tables) > 3 else "")
    return (f"{operation} {target}".strip(), operation, tuple(tables))


def _db_tracer() -> trace.Tracer:
    return trace.get_tracer("allocguard.db")


class TracedCursor(psycopg.Cursor[Any]):
    """A CLIENT span per statement (OpenTelemetry database conventions), child of the span it runs in. Installed
    as the runtime pool's ``cursor_factory``, so the handlers' SQL is traced without the handlers knowing. Only
    the parameterised statement text is recorded, never the parameter values."""

    def execute(
        self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: bool | None = None
    ) -> TracedCursor:
        # outside a block, an autocommit statement is a transaction of its own
        DB_TALLY.add(1, 1 if self.connection.info.transaction_status == TransactionStatus.IDLE else 0)
        if not trace.get_current_span().is_recording():
            # no trace to join (tracing off, or the probe's and wake-up thread's housekeeping): no span, and
            # none of the text work for its attributes
            super().execute(query, params, prepare=prepare, binary=binary)
            return self
        text = (
            query.as_string(self)
            if isinstance(query, sql.Composable)
            else (query.decode(errors="replace") if isinstance(query, bytes) else str(query))
        )
        name, operation, tables = statement_summary(text)
        info = self.connection.info
        attributes: dict[str, Any] = {
            "db.system.name": "postgresql",
            "db.system": "postgresql",
            "db.operation.name": operation,
            "db.query.text": " ".join(text.split())[:2000],
        }
        if info.dbname:
            attributes["db.namespace"] = info.dbname
        if len(tables) == 1:
            attributes["db.collection.name"] = tables[0]
        if info.host and not info.host.startswith("/"):
            attributes["server.address"] = info.host
            attributes["server.port"] = info.port
        with _db_tracer().start_as_current_span(
            name, kind=SpanKind.CLIENT, attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                super().execute(query, params, prepare=prepare, binary=binary)
            except psycopg.Error as exc:
                # the class and SQLSTATE only: a message can carry values
                span.set_attribute("error.type", exc.sqlstate or type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
        return self
        text = (
            query.as_string(self)
            if isinstance(query, sql.Composable)
            else (query.decode(errors="replace") if isinstance(query, bytes) else str(query))
        )
        words = text.split(None, 1)
        operation = words[0].upper() if words else "SQL"
        attributes = {
            "db.system.name": "postgresql",
            "db.system": "postgresql",
            "db.operation.name": operation,
            "db.query.text": " ".join(text.split())[:2000],
        }
        if self.connection.info.dbname:
            attributes["db.namespace"] = self.connection.info.dbname
        tracer = trace.get_tracer("allocguard.db")
        with tracer.start_as_current_span(
            f"{operation} {attributes.get('db.namespace', '')}".strip(), kind=SpanKind.CLIENT, attributes=attributes
        ):
            super().execute(query, params, prepare=prepare, binary=binary)
        return self


def traced_send(request: urllib.request.Request, timeout: float, tracer: trace.Tracer | None = None) -> bytes:
    """An HTTP call as a CLIENT span (OpenTelemetry HTTP conventions) that carries ``traceparent``: the assign
    call to the platform's app joins the incident's trace. The URL is recorded without query or credentials."""
    parts = urllib.parse.urlsplit(request.full_url)
    method = request.get_method()
    attributes: dict[str, Any] = {
        "http.request.method": method,
        "server.address": parts.hostname or "",
        "server.port": parts.port or (443 if parts.scheme == "https" else 80),
        "url.full": urllib.parse.urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", "")),
    }
    tracer = tracer or trace.get_tracer("allocguard.http")
    with tracer.start_as_current_span(
        method, kind=SpanKind.CLIENT, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        carrier: dict[str, str] = {}
        inject(carrier)
        for key, value in carrier.items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) checked)
                span.set_attribute("http.response.status_code", response.status)
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError as exc:
            span.set_attribute("http.response.status_code", exc.code)
            span.set_attribute("error.type", str(exc.code))
            span.set_status(Status(StatusCode.ERROR, f"HTTP {exc.code}"))
            raise
        except (OSError, http.client.HTTPException) as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
