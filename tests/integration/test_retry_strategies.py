"""The assign strategies against the real PostgreSQL: the ledger traps, the error classes, and HTTP."""

from __future__ import annotations

import base64
import functools
import json
import threading
from collections.abc import Callable, Iterator
from datetime import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import psycopg
import pytest

from consumer.local.platform import Venue, create_booking, create_venue
from consumer.local.settings import StackSettings
from consumer.local.simulator import PlatformApp, block_window, tomorrow
from handlers.errors import (
    HoldConflictError,
    NewBlockerError,
    NotNeededError,
    PermanentAssignError,
    TransientDatabaseError,
)
from handlers.retry import AssignRequest, HttpAssign, SqlAssign
from schemas.values import TstzRange

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]


def victim_request(app: PlatformApp, venue: Venue) -> AssignRequest:
    victim = create_booking(app.conn, venue, day=tomorrow(), start=time(19, 0), end=time(21, 0))
    return AssignRequest(
        victim, (venue.table_ids[0],), TstzRange.closed_open(*block_window(app.booking(victim))), False
    )


def assert_confirmed(conn: Conn, request: AssignRequest) -> None:
    row = conn.execute(
        "SELECT b.status::text, count(x.id) FROM bookings b LEFT JOIN booking_table_assignments x"
        " ON x.booking_id = b.id WHERE b.id = %s GROUP BY b.status",
        (request.booking_id,),
    ).fetchone()
    assert row == ("confirmed", 1)
    history = conn.execute(
        "SELECT reason, metadata ->> 'source' FROM booking_state_history WHERE booking_id = %s", (request.booking_id,)
    ).fetchall()
    assert history == [("auto_assign_remediation", "remediation-consumer")]


@pytest.mark.parametrize("trap", ["same_key_no_rows", "same_tables_other_key"])
def test_sql_assign_gets_past_the_ledger_traps(trap: str, app: PlatformApp, connect: Callable[[], Conn]) -> None:
    venue = create_venue(app.conn, tables=1, capacity=2)
    request = victim_request(app, venue)
    tables = [str(t) for t in request.table_ids]
    key = request.idempotency_key if trap == "same_key_no_rows" else f"api-{request.booking_id}"
    # a ledger row left from an earlier assignment whose assignment rows are gone
    app.conn.execute(
        "INSERT INTO booking_assignment_idempotency (booking_id, idempotency_key, table_ids, assignment_window,"
        " table_set_hash) VALUES (%s, %s, %s, tstzrange(%s, %s, '[)'), md5(%s))",
        (
            request.booking_id,
            key,
            list(request.table_ids),
            request.window.lower,
            request.window.upper,
            ",".join(sorted(tables)),
        ),
    )
    SqlAssign(connect).assign(request)
    assert_confirmed(app.conn, request)


def test_sql_assign_error_classes(app: PlatformApp, connect: Callable[[], Conn]) -> None:
    venue = create_venue(app.conn, tables=1, capacity=2)
    table = venue.table_ids[0]
    # another booking's active hold on the table
    holder = create_booking(app.conn, venue, day=tomorrow(), start=time(19, 0), end=time(21, 0))
    request = victim_request(app, venue)
    hold = app.quote(holder, tables=[table])
    assert hold is not None
    with pytest.raises(HoldConflictError, match="P0001 Hold conflict"):
        SqlAssign(connect).assign(request)
    app.release(hold)
    # an orphan on the table: the function's own allocations_no_overlap
    app.reseat_direct(holder, [table])
    app.conn.execute("DELETE FROM booking_table_assignments WHERE booking_id = %s", (holder,))
    with pytest.raises(NewBlockerError, match="allocations_no_overlap"):
        SqlAssign(connect).assign(request)
    # a booking that is no longer pending
    app.ops_cancel(request.booking_id)
    with pytest.raises(NotNeededError, match="cancelled"):
        SqlAssign(connect).assign(request)


class FakeApp(BaseHTTPRequestHandler):
    """The platform app's assign endpoint, backed by the real database."""

    dsn = ""
    calls: ClassVar[list[dict[str, Any]]] = []
    headers_seen: ClassVar[list[dict[str, str]]] = []
    #: the Authorization header the app demands (None: none)
    demand: ClassVar[str | None] = None

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeApp.headers_seen.append({key.lower(): value for key, value in self.headers.items()})
        if FakeApp.demand is not None and self.headers.get("Authorization") != FakeApp.demand:
            self._reply(401, {"message": "unauthorized"})
            return
        FakeApp.calls.append(body)
        try:
            with psycopg.connect(FakeApp.dsn, autocommit=True) as conn, conn.transaction():
                conn.execute(
                    "SELECT * FROM assign_tables_atomic_v2(p_booking_id := %s, p_table_ids := %s::uuid[],"
                    " p_idempotency_key := %s, p_require_adjacency := %s, p_assigned_by := NULL,"
                    " p_start_at := %s, p_end_at := %s)",
                    (
                        body["bookingId"],
                        body["tableIds"],
                        body["idempotencyKey"],
                        body["requireAdjacency"],
                        body["startAt"],
                        body["endAt"],
                    ),
                )
                conn.execute("UPDATE bookings SET status = 'confirmed' WHERE id = %s", (body["bookingId"],))
        except psycopg.Error as exc:
            self._reply(409, {"code": exc.sqlstate, "message": str(exc.diag.message_primary)})
            return
        self._reply(200, {"ok": True})

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def endpoint(stack_settings: StackSettings) -> Iterator[str]:
    FakeApp.dsn = stack_settings.platform_dsn
    FakeApp.calls = []
    FakeApp.headers_seen = []
    FakeApp.demand = None
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/ops/auto-assign"
    server.shutdown()
    server.server_close()


def test_http_strategy_assigns_through_the_app_and_verifies(
    app: PlatformApp, connect: Callable[[], Conn], endpoint: str
) -> None:
    venue = create_venue(app.conn, tables=1, capacity=2)
    request = victim_request(app, venue)
    HttpAssign(endpoint, connect).assign(request)
    assert FakeApp.calls[0]["tableIds"] == [str(venue.table_ids[0])]
    assert FakeApp.calls[0]["idempotencyKey"] == request.idempotency_key
    row = app.conn.execute("SELECT status::text FROM bookings WHERE id = %s", (request.booking_id,)).fetchone()
    assert row == ("confirmed",)


def test_http_strategy_error_classes(app: PlatformApp, connect: Callable[[], Conn], endpoint: str) -> None:
    venue = create_venue(app.conn, tables=1, capacity=2)
    request = victim_request(app, venue)
    owner = create_booking(app.conn, venue, day=tomorrow(), start=time(19, 0), end=time(21, 0))
    app.reseat_direct(owner, [venue.table_ids[0]])
    app.conn.execute("DELETE FROM booking_table_assignments WHERE booking_id = %s", (owner,))
    with pytest.raises(NewBlockerError):
        HttpAssign(endpoint, connect).assign(request)
    closed = endpoint.rsplit(":", 1)[0] + ":9/none"  # discard port: nothing listens
    with pytest.raises(TransientDatabaseError, match="unreachable"):
        HttpAssign(closed, connect, timeout_s=2).assign(request)
    with pytest.raises(ValueError, match="http"):
        HttpAssign("file:///etc/passwd", connect)


def test_http_strategy_authenticates_and_joins_the_trace(
    app: PlatformApp, connect: Callable[[], Conn], endpoint: str
) -> None:
    """An app that demands a bearer token: refused without it (a permanent error, no retry storm), assigned with
    the secret header setting; the call carries ``traceparent`` and is a CLIENT span; credentials in the URL go
    as HTTP Basic and never into an error message."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from consumer.telemetry import traced_send

    FakeApp.demand = "Bearer s3cret"
    venue = create_venue(app.conn, tables=1, capacity=2)
    request = victim_request(app, venue)
    with pytest.raises(PermanentAssignError, match="HTTP 401"):
        HttpAssign(endpoint, connect).assign(request)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("incident") as parent:
        trace_id = format(parent.get_span_context().trace_id, "032x")
        send = functools.partial(traced_send, tracer=tracer)
        HttpAssign(endpoint, connect, headers={"Authorization": "Bearer s3cret"}, send=send).assign(request)
    sent = FakeApp.headers_seen[-1]
    assert sent["authorization"] == "Bearer s3cret"
    assert trace_id in sent["traceparent"]
    client = next(span for span in exporter.get_finished_spans() if span.name == "POST")
    assert client.kind == trace.SpanKind.CLIENT
    assert client.attributes is not None
    assert client.attributes["http.response.status_code"] == 200
    assert "s3cret" not in json.dumps(dict(client.attributes))
    row = app.conn.execute("SELECT status::text FROM bookings WHERE id = %s", (request.booking_id,)).fetchone()
    assert row == ("confirmed",)

    FakeApp.demand = "Basic " + base64.b64encode(b"ops:p@ss").decode()
    other = victim_request(app, create_venue(app.conn, tables=1, capacity=2))
    with_userinfo = endpoint.replace("http://", "http://ops:p%40ss@")
    HttpAssign(with_userinfo, connect).assign(other)
    assert FakeApp.headers_seen[-1]["authorization"] == FakeApp.demand
    with pytest.raises(ValueError, match="http") as refused:
        HttpAssign("ftp://ops:p%40ss@example", connect)
    assert "p%40ss" not in str(refused.value)
