"""The seed incident end to end with a real OTLP/HTTP receiver in the test: the span tree, its attributes and
links, decoded over the wire with the official OpenTelemetry protobuf definitions, and the way back from the
database to the trace. Plus: no guest PII in any exported span or log line."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Producer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from consumer.local.settings import StackSettings
from consumer.local.simulator import SEED_VICTIM, PlatformApp, seed_incident
from tests.support.process import RuntimeProcess, metric_value, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]
GUEST_PII = ("Synthetic Guest", "@example.invalid", "+00 0000 000000")


class Receiver:
    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Span]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    for resource_spans in request.resource_spans:
                        resource = {a.key: value(a.value) for a in resource_spans.resource.attributes}
                        for scope in resource_spans.scope_spans:
                            receiver.spans.extend((resource, span) for span in scope.spans)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def by_name(self, name: str) -> list[Span]:
        with self.lock:
            return [span for _, span in self.spans if span.name == name]


def value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def attrs(span: Span) -> dict[str, Any]:
    return {a.key: value(a.value) for a in span.attributes}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_seed_incident_trace(receiver: Receiver, connect: Callable[[], Conn], tmp_path: Any, unique: str) -> None:
    runtime = RuntimeProcess(
        tmp_path / "run.log",
        f"e2e-traces-{unique}",
        env={
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": "allocguard-e2e",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "ALLOCGUARD_LOG_FORMAT": "json",
        },
    )
    try:
        runtime.wait_ready()
        with connect() as conn:
            seed_incident(PlatformApp(conn))

        def victim_confirmed() -> bool:
            with connect() as conn:
                row = conn.execute("SELECT status::text FROM bookings WHERE id = %s", (SEED_VICTIM,)).fetchone()
                return row == ("confirmed",)

        wait_for("the seed victim confirmed", victim_confirmed, timeout=60)
        wait_for("the incident's outcome exported", lambda: receiver.by_name("allocguard.outcome"), timeout=30)
        status, metrics = runtime.get("/metrics")
        assert status == 200
        topic = "platform.public.observability_events"

        def caught_up() -> str | None:
            text = str(runtime.get("/metrics")[1])
            partitions = {
                p for p in ("0", "1", "2") if f'partition="{p}"' in text and "allocguard_consumer_lag" in text
            }
            lagging = metric_value(text, "allocguard_consumer_lag", topic=topic)
            # and nothing read is still being handled (a span is exported when its work ends)
            idle = runtime.get("/readyz")[1].get("in_flight") == 0
            return text if partitions == {"0", "1", "2"} and lagging == 0 and idle else None

        wait_for("the lag gauge sampled at 0 on every partition, nothing in flight", caught_up, timeout=30)
        scraped_from = time.time_ns()
        metrics = str(runtime.get("/metrics")[1])
        scraped_to = time.time_ns()
    finally:
        code, _ = runtime.stop()
    assert code == 0

    with connect() as conn:
        incident = conn.execute(
            "SELECT trace_id, span_id, status FROM allocguard.incidents WHERE booking_id = %s", (SEED_VICTIM,)
        ).fetchone()
        remediation = conn.execute(
            "SELECT r.trace_id, r.span_id FROM allocguard.remediations r JOIN allocguard.incidents i"
            " ON i.id = r.incident_id WHERE i.booking_id = %s",
            (SEED_VICTIM,),
        ).fetchone()
        pruned_event = conn.execute(
            "SELECT context ->> 'traceId', context ->> 'spanId' FROM observability_events"
            " WHERE booking_id = %s AND event_type = 'allocguard.orphans_pruned'",
            (SEED_VICTIM,),
        ).fetchone()
        hold_trace = conn.execute(
            "SELECT h.trace_id, h.span_id FROM allocguard.hold_observations h"
            " JOIN allocguard.incidents i ON i.hold_id = h.hold_id WHERE i.booking_id = %s",
            (SEED_VICTIM,),
        ).fetchone()
    assert incident is not None
    assert remediation is not None
    trace_id, span_id, _status = incident

    # the incident span: the one whose ids the database holds
    handled = [s for s in receiver.by_name("allocguard.incident") if s.span_id.hex() == span_id]
    assert len(handled) == 1, "the incident span stored in allocguard.incidents was exported"
    incident_span = handled[0]
    assert incident_span.trace_id.hex() == trace_id
    assert remediation == (trace_id, span_id), "the remediation record points at the incident span"
    assert pruned_event == (trace_id, span_id), "so does the observability event allocguard wrote"
    incident_attrs = attrs(incident_span)
    assert incident_attrs["allocguard.booking.id"] == str(SEED_VICTIM)
    assert incident_attrs["allocguard.incident.window_source"] == "hold"
    assert incident_attrs["allocguard.outcome.status"] in ("resolved", "not_needed")

    # its parent: the CONSUMER span of the failure message, with the messaging conventions
    spans = {s.span_id: s for _, s in receiver.spans}
    consumer = spans[incident_span.parent_span_id]
    assert consumer.kind == Span.SpanKind.SPAN_KIND_CONSUMER
    consumer_attrs = attrs(consumer)
    assert consumer.name == "process platform.public.observability_events"
    assert consumer_attrs["messaging.system"] == "kafka"
    assert consumer_attrs["messaging.destination.name"] == "platform.public.observability_events"
    assert consumer_attrs["messaging.consumer.group.name"] == f"e2e-traces-{unique}"
    assert isinstance(consumer_attrs["messaging.kafka.offset"], int)
    assert str(SEED_VICTIM) in consumer_attrs["messaging.kafka.message.key"]

    # detect sits beside it under the message; plan, prune, attempts and outcome under the incident
    children = [s for _, s in receiver.spans if s.parent_span_id == incident_span.span_id]
    ordered = sorted(children, key=lambda s: s.start_time_unix_nano)
    names = [s.name for s in ordered if s.name.startswith("allocguard.")]
    own = {s.name for s in ordered} - set(names)
    # its own statements are DB spans: the incident's status, and the guardrail's hourly count — and, when the
    # retry found the victim seated meanwhile (the platform's own job may win the race), whose key seated it
    expected = {"UPDATE allocguard.incidents", "SELECT allocguard.remediations, allocguard.incidents"}
    if incident_attrs["allocguard.outcome.status"] == "not_needed":
        expected.add("SELECT booking_table_assignments")
    assert own == expected, own
    assert names[0] == "allocguard.plan"
    assert "allocguard.prune" in names
    assert names[-1] == "allocguard.outcome"
    plan = next(s for s in children if s.name == "allocguard.plan")
    assert attrs(plan)["allocguard.evidence.orphan"] == 1
    assert attrs(plan)["allocguard.plan.decision"] == "prune_and_retry"
    prune = next(s for s in children if s.name == "allocguard.prune")
    assert attrs(prune)["allocguard.prune.status"] == "pruned"
    # DB spans under the prune: the executor's statements, parameterised text only
    statements = [s for _, s in receiver.spans if s.parent_span_id == prune.span_id]
    assert all(s.kind == Span.SpanKind.SPAN_KIND_CLIENT for s in statements)
    texts = [attrs(s)["db.query.text"] for s in statements]
    assert any(t.startswith("DELETE FROM public.allocations WHERE id = ANY(%s)") for t in texts), texts
    assert any("INSERT INTO public.allocations_archive" in t for t in texts)
    assert any(t.startswith("INSERT INTO allocguard.remediations") for t in texts)
    assert all(attrs(s)["db.system.name"] == "postgresql" for s in statements)
    attempts = [s for _, s in receiver.spans if s.name == "allocguard.retry.attempt" and s.trace_id.hex() == trace_id]
    assert attempts, "one span per retry attempt"
    assert attrs(attempts[0])["allocguard.attempt.number"] == 1
    assert attrs(attempts[0])["allocguard.attempt.outcome"] in ("assigned", "not_needed")
    detect = [s for _, s in receiver.spans if s.name == "allocguard.detect" and s.parent_span_id == consumer.span_id]
    assert len(detect) == 1

    # links: to the hold announcement's span, and later failure events link back to the incident
    assert hold_trace is not None
    linked = {(link.trace_id.hex(), link.span_id.hex()) for link in incident_span.links}
    assert tuple(hold_trace) in linked
    later = [s for s in receiver.by_name("allocguard.incident") if s.span_id != incident_span.span_id]
    assert later, "the platform's other failure events of the same attempt were traced too"
    for span in later:
        assert (trace_id, span_id) in {(link.trace_id.hex(), link.span_id.hex()) for link in span.links}
        assert attrs(span)["allocguard.outcome.status"] == "duplicate"

    resource = receiver.spans[0][0]
    assert resource["service.name"] == "allocguard-e2e"
    assert resource["deployment.environment"] == "test"

    # /metrics: the counters moved for the scenario
    def consumed() -> list[int]:
        return [
            s.start_time_unix_nano
            for _, s in receiver.spans
            if s.kind == Span.SpanKind.SPAN_KIND_CONSUMER and attrs(s).get("allocguard.cdc.op") == "c"
        ]

    counted = metric_value(metrics, "allocguard_events_consumed_total", topic=topic, op="c")
    # the counter moves right after a message's span starts: between what had started 50 ms before the scrape
    # and what had started by its end (allocguard's own follow-up events keep arriving). A span is exported when
    # its work ends: a failure still waiting behind its booking's earlier work is counted before its span arrives.
    assert len([t for t in consumed() if t <= scraped_from - 50_000_000]) <= counted
    wait_for(
        "the spans of every event counted by the scrape",
        lambda: counted <= len([t for t in consumed() if t <= scraped_to]),
        timeout=30,
    )
    assert counted >= 5
    assert metric_value(metrics, "allocguard_incidents_total", status="duplicate") >= 1
    incidents_counted = metric_value(metrics, "allocguard_incidents_total")
    ended = [s.end_time_unix_nano for s in receiver.by_name("allocguard.incident")]
    assert len([t for t in ended if t <= scraped_from - 50_000_000]) <= incidents_counted <= len(ended)
    assert metric_value(metrics, "allocguard_allocations_total", verdict="orphan", action="pruned") == 1
    assert metric_value(metrics, "allocguard_retry_attempts_total") >= 1
    assert metric_value(metrics, "allocguard_handling_duration_seconds_count") >= 2
    assert metric_value(metrics, "allocguard_resolution_duration_seconds_count") >= 1

    # no guest PII anywhere in what was exported, logged or labelled
    assert all(pii not in metrics for pii in GUEST_PII)
    exported = " ".join(f"{s.name} {attrs(s)}" for _, s in receiver.spans)
    logged = runtime.log_path.read_text(errors="replace")
    for pii in GUEST_PII:
        assert pii not in exported
        assert pii not in logged
    assert '"trace_id"' in logged, "JSON logs carry the trace id"


def test_otlp_over_grpc(connect: Callable[[], Conn], tmp_path: Any, unique: str) -> None:
    """The same exporter configuration with OTEL_EXPORTER_OTLP_PROTOCOL=grpc reaches a real gRPC OTLP receiver."""
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    from consumer.local.simulator import orphan_by_reseat

    received: list[Span] = []

    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: ExportTraceServiceRequest, context: Any) -> ExportTraceServiceResponse:
            for resource_spans in request.resource_spans:
                for scope in resource_spans.scope_spans:
                    received.extend(scope.spans)
            return ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    runtime = RuntimeProcess(
        tmp_path / "grpc.log",
        f"e2e-grpc-{unique}",
        env={
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )
    try:
        runtime.wait_ready()
        with connect() as conn:
            scenario = orphan_by_reseat(PlatformApp(conn), job_attempts=0)
        wait_for(
            "an incident span over gRPC",
            lambda: any(s.name == "allocguard.incident" for s in list(received)),
            timeout=30,
        )
    finally:
        assert runtime.stop()[0] == 0
        server.stop(grace=None)
    incident = next(s for s in received if s.name == "allocguard.incident")
    assert attrs(incident)["allocguard.booking.id"] == str(scenario.victim_id)
    assert any(s.kind == Span.SpanKind.SPAN_KIND_CONSUMER for s in received)


def test_a_dead_letter_is_a_producer_span_its_copy_continues(
    receiver: Receiver, stack_settings: StackSettings, tmp_path: Any, unique: str
) -> None:
    """A malformed event: its CONSUMER span has a PRODUCER child ``send <dlq>``, and the dead-letter copy's
    ``traceparent`` names that PRODUCER span (whoever reads the DLQ continues the trace from the send)."""
    dlq = f"traces-dlq-{unique}"
    runtime = RuntimeProcess(
        tmp_path / "run.log",
        f"e2e-dlq-traces-{unique}",
        env={
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "ALLOCGUARD_DLQ_TOPIC": dlq,
        },
    )
    try:
        runtime.wait_ready()
        topic = f"{stack_settings.topic_prefix}.public.observability_events"
        producer = Producer({"bootstrap.servers": stack_settings.kafka_bootstrap})
        # a marker of the rules gets it past the byte test to the decoder, which refuses it
        producer.produce(topic, key=b'{"booking_id": "x"}', value=b'{"payload": "allocations_no_overlap"')
        producer.flush(10)
        wait_for("the send span exported", lambda: receiver.by_name(f"send {dlq}"), timeout=30)
    finally:
        runtime.stop()
    (send,) = receiver.by_name(f"send {dlq}")
    assert send.kind == Span.SpanKind.SPAN_KIND_PRODUCER
    assert attrs(send)["messaging.destination.name"] == dlq
    parent = next(s for _, s in receiver.spans if s.span_id == send.parent_span_id)
    assert parent.kind == Span.SpanKind.SPAN_KIND_CONSUMER
    reader = Consumer(
        {
            "bootstrap.servers": stack_settings.kafka_bootstrap,
            "group.id": f"r-{unique}",
            "auto.offset.reset": "earliest",
        }
    )
    reader.subscribe([dlq])
    try:
        copy = None
        deadline = time.monotonic() + 30
        while copy is None and time.monotonic() < deadline:
            message = reader.poll(0.5)
            copy = message if message is not None and message.error() is None else None
        assert copy is not None, "the dead-letter copy"
        headers: list[tuple[str, bytes]] = copy.headers() or []  # type: ignore[assignment]
        traceparent = dict(headers)["traceparent"].decode()
        assert traceparent.split("-")[1:3] == [send.trace_id.hex(), send.span_id.hex()]
    finally:
        reader.close()
