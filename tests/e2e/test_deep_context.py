"""A failure row whose context nests deeper than orjson's 1,024 levels — PostgreSQL stores it, Debezium passes it on —
is handled like any other: allocguard run seats the victim (it was dead-lettered before)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import time as dtime
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from consumer.local.platform import create_booking, create_venue
from consumer.local.simulator import PlatformApp, tomorrow
from tests.support.platform import confirmed
from tests.support.process import RuntimeProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]
DEPTH = 5_000


def test_a_failure_with_a_deeply_nested_context_is_handled(
    platform_connect: Callable[[], Conn], runtimes: Callable[..., RuntimeProcess], unique: str
) -> None:
    runtime = runtimes("run", f"deep-{unique}")
    runtime.wait_ready()
    with platform_connect() as conn:
        app = PlatformApp(conn)
        venue = create_venue(conn, tables=1, capacity=2)
        owner = create_booking(conn, venue, day=tomorrow(), start=dtime(19), end=dtime(21))
        app.reseat_direct(owner, [venue.table_ids[0]])
        conn.execute("DELETE FROM booking_table_assignments WHERE booking_id = %s", (owner,))  # the orphan stays
        app.age_allocations(owner, timedelta(hours=1))
        victim = create_booking(conn, venue, day=tomorrow(), start=dtime(19, 30), end=dtime(21))
        nested = '{"a":' * DEPTH + "1" + "}" * DEPTH
        context = f'{{"error": "allocations_no_overlap", "attempt": {nested}}}'
        conn.execute(
            "INSERT INTO observability_events (source, event_type, severity, context, restaurant_id, booking_id)"
            " VALUES ('capacity.atomic_confirm', 'transaction.failed', 'error', %s::jsonb, %s, %s)",
            (context, venue.restaurant_id, victim),
        )
        stored = conn.execute(
            "SELECT jsonb_typeof(context #> %s) FROM observability_events WHERE booking_id = %s",
            (["attempt", *(["a"] * (DEPTH - 1))], victim),
        ).fetchone()
    assert stored == ("object",), "PostgreSQL kept all the levels"
    wait_for("the victim seated", lambda: confirmed(platform_connect, victim), timeout=60)
    assert "dead-lettering" not in runtime.log()
