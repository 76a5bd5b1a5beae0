"""The runtime's consumer span: messaging attributes, and an incoming W3C traceparent continued."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from consumer.telemetry import Telemetry

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"


@pytest.fixture
def telemetry(monkeypatch: pytest.MonkeyPatch) -> tuple[Telemetry, InMemorySpanExporter]:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instance = Telemetry()
    instance.tracer = provider.get_tracer("test")
    return instance, exporter


def test_incoming_traceparent_is_continued(telemetry: tuple[Telemetry, InMemorySpanExporter]) -> None:
    instance, exporter = telemetry
    span = instance.consumer_span(
        "platform.public.observability_events",
        2,
        41,
        b'{"booking_id":"b"}',
        [("traceparent", f"00-{TRACE}-{PARENT}-01".encode())],
        "allocguard",
    )
    instance.end(span)
    (finished,) = exporter.get_finished_spans()
    assert finished.kind is SpanKind.CONSUMER
    assert format(finished.context.trace_id, "032x") == TRACE
    assert finished.parent is not None
    assert format(finished.parent.span_id, "016x") == PARENT
    assert finished.attributes is not None
    assert finished.attributes["messaging.destination.partition.id"] == "2"
    assert finished.attributes["messaging.kafka.offset"] == 41
    assert finished.attributes["messaging.consumer.group.name"] == "allocguard"
    forwarded = dict(instance.traceparent(span))
    assert forwarded["traceparent"].decode().startswith(f"00-{TRACE}-")


def test_without_traceparent_a_new_trace_starts(telemetry: tuple[Telemetry, InMemorySpanExporter]) -> None:
    instance, exporter = telemetry
    span = instance.consumer_span("t", 0, 1, None, [], "g")
    instance.end(span, RuntimeError("boom"))
    (finished,) = exporter.get_finished_spans()
    assert finished.parent is None
    assert finished.status.status_code.name == "ERROR"
    assert finished.events[0].name == "exception"
