"""Database spans by the OpenTelemetry conventions: named from the operation and the tables (so an incident's
reads can be told apart), ``db.collection.name`` for one table, the server's address, and on an error the status
and ``error.type`` (the SQLSTATE) — never the message, which can carry values."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from consumer import telemetry
from consumer.local.settings import StackSettings
from consumer.telemetry import TracedConnection, TracedCursor, statement_summary


@pytest.mark.parametrize(
    ("text", "name", "tables"),
    [
        (
            "SELECT a.id FROM public.allocations a JOIN bookings b ON b.id = a.booking_id",
            "SELECT allocations, bookings",
            ("allocations", "bookings"),
        ),
        ("DELETE FROM public.allocations WHERE id = ANY(%s)", "DELETE allocations", ("allocations",)),
        ("SELECT * FROM public.assign_tables_atomic_v2(%s, %s)", "SELECT assign_tables_atomic_v2", ()),
        ("UPDATE allocguard.incidents SET status = %s", "UPDATE allocguard.incidents", ("allocguard.incidents",)),
        ("SELECT x FROM unnest(%s) AS u JOIN public.table_holds h ON true", "SELECT table_holds", ("table_holds",)),
        # a WITH is named by what it does (its first write, else a read), its expressions' names are not tables
        (
            "WITH a AS MATERIALIZED (SELECT * FROM public.allocations), o AS (SELECT booking_id FROM a)"
            " SELECT (SELECT count(*) FROM o), (SELECT 1 FROM public.bookings b JOIN a ON a.booking_id = b.id)",
            "SELECT allocations, bookings",
            ("allocations", "bookings"),
        ),
        (
            "WITH recorded AS (INSERT INTO allocguard.incidents AS i (id) VALUES (%s) RETURNING id)"
            " SELECT recorded.id FROM recorded JOIN public.allocations a ON true",
            "INSERT allocguard.incidents, allocations",
            ("allocguard.incidents", "allocations"),
        ),
    ],
)
def test_statement_names(text: str, name: str, tables: tuple[str, ...]) -> None:
    assert statement_summary(text) == (name, name.split()[0], tables)


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(telemetry, "_db_tracer", lambda: provider.get_tracer("allocguard.db"))
    return provider.get_tracer("test"), exporter


@pytest.mark.stack
def test_a_statement_span_and_a_failing_one(
    stack_settings: StackSettings, spans: tuple[Any, InMemorySpanExporter]
) -> None:
    tracer, exporter = spans
    with (
        TracedConnection.connect(stack_settings.pg_dsn, autocommit=True, cursor_factory=TracedCursor) as conn,
        tracer.start_as_current_span("incident"),
    ):
        conn.execute("SELECT count(*) FROM public.allocations")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM public.bookings WHERE id = %s", ("00000000-0000-0000-0000-000000000000",))
    done = {span.name: span for span in exporter.get_finished_spans()}
    read = done["SELECT allocations"]
    assert read.kind == SpanKind.CLIENT
    assert read.attributes is not None
    assert read.attributes["db.collection.name"] == "allocations"
    assert read.attributes["server.address"] == "127.0.0.1"
    assert read.attributes["server.port"] == stack_settings.pg_port
    assert read.status.status_code == StatusCode.UNSET
    failed = done["DELETE bookings"]
    assert failed.attributes is not None
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.attributes["error.type"] == "42501"
    assert "00000000" not in str(failed.status.description)
