"""A small booking lifecycle written into the reference schema, so that CDC can be seen flowing.

It touches every captured table: a booking is created, quoted (hold + member, hence a shadow allocation),
assigned through ``assign_tables_atomic_v2`` (allocation, assignment, idempotency ledger), confirmed through
``apply_booking_state_transition`` (history), observed (``observability_events``), and its hold released.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time as clock
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from consumer.local.platform import create_booking, create_venue


def write_demo_lifecycle(dsn: str) -> uuid.UUID:
    hold = uuid.uuid4()
    day = (datetime.now(UTC) + timedelta(days=3)).date()
    with psycopg.connect(dsn) as conn:
        venue = create_venue(conn, tables=1)
        restaurant, zone, table = venue.restaurant_id, venue.zone_id, venue.table_ids[0]
        booking = create_booking(conn, venue, day=day, start=time(19, 0), end=time(20, 30))
        window = conn.execute("SELECT start_at, end_at FROM bookings WHERE id = %s", (booking,)).fetchone()
        assert window is not None
        start_at, end_at = window
        with conn.transaction():
            conn.execute(
                "INSERT INTO table_holds (id, restaurant_id, booking_id, zone_id, start_at, end_at, expires_at,"
                " metadata) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    hold,
                    restaurant,
                    booking,
                    zone,
                    start_at,
                    end_at,
                    end_at + timedelta(seconds=120),
                    Jsonb({"requireAdjacency": False, "selection": {"tableIds": [str(table)]}}),
                ),
            )
            conn.execute("INSERT INTO table_hold_members (hold_id, table_id) VALUES (%s, %s)", (hold, table))
            conn.execute(
                "INSERT INTO observability_events (source, event_type, severity, context, restaurant_id, booking_id)"
                " VALUES ('capacity.hold', 'capacity.hold.created', 'info', %s, %s, %s)",
                (
                    Jsonb(
                        {
                            "holdId": str(hold),
                            "tableIds": [str(table)],
                            "startAt": start_at.isoformat(),
                            "endAt": end_at.isoformat(),
                        }
                    ),
                    restaurant,
                    booking,
                ),
            )
        with conn.transaction():
            conn.execute(
                "SELECT * FROM assign_tables_atomic_v2(p_booking_id := %s, p_table_ids := %s::uuid[],"
                " p_idempotency_key := %s, p_require_adjacency := false, p_assigned_by := NULL,"
                " p_start_at := %s, p_end_at := %s)",
                (booking, [table], f"demo-{booking}", start_at, end_at),
            )
            conn.execute(
                "SELECT * FROM apply_booking_state_transition(%s, 'confirmed', NULL, NULL, now(), 'pending',"
                " 'confirmed', NULL, now(), 'api_inline_auto_assign', %s)",
                (booking, Jsonb({"source": "api-inline", "holdId": str(hold)})),
            )
            conn.execute("DELETE FROM table_hold_members WHERE hold_id = %s", (hold,))
            conn.execute("DELETE FROM table_holds WHERE id = %s", (hold,))
    return booking


def live_seed_demo(
    dsn: str, echo: Callable[[str], None], timeout_s: float = 60.0, extra_env: dict[str, str] | None = None
) -> bool:
    """``allocguard run --mode auto`` as a child process; the seed incident played into PostgreSQL; wait until
    the victim is confirmed; print what happened; stop the consumer with SIGTERM. True when remediated.
    ``extra_env`` goes to the child (e.g. the OTEL_* variables of the stack's Jaeger)."""
    from consumer.local.simulator import SEED_VICTIM, PlatformApp, seed_incident

    port = free_port()
    env = {
        **os.environ,
        **(extra_env or {}),
        "ALLOCGUARD_MODE": "auto",
        "ALLOCGUARD_HEALTH_PORT": str(port),
        "ALLOCGUARD_HEALTH_HOST": "127.0.0.1",
        "ALLOCGUARD_GROUP_ID": f"allocguard-demo-{uuid.uuid4().hex[:8]}",
    }
    with tempfile.NamedTemporaryFile("w+b", suffix=".log", delete=False) as log_file:
        log_path = Path(log_file.name)
    with log_path.open("wb") as log_out:
        process = subprocess.Popen(
            [sys.executable, "-m", "consumer.cli", "run"], env=env, stdout=log_out, stderr=subprocess.STDOUT
        )
    try:
        echo(f"allocguard run started (pid {process.pid}, health on :{port}); waiting until ready")
        _wait_ready(port, process, timeout_s)
        with psycopg.connect(dsn, autocommit=True) as conn:
            started = clock.monotonic()
            seed_incident(PlatformApp(conn))
            echo(f"seed incident played: victim {SEED_VICTIM} failed on allocations_no_overlap")
            deadline = started + timeout_s
            fixed = False
            while clock.monotonic() < deadline:
                row = conn.execute("SELECT status::text FROM bookings WHERE id = %s", (SEED_VICTIM,)).fetchone()
                if row == ("confirmed",):
                    fixed = True
                    break
                clock.sleep(0.02)
            took = clock.monotonic() - started
        echo(f"victim {'confirmed' if fixed else 'NOT confirmed'} {took:.2f}s after the simulation started")
        _wait_caught_up(port, deadline=clock.monotonic() + 10.0)  # the other failure events: a clean stop
        return fixed
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        echo(f"allocguard run stopped with SIGTERM, exit code {code}; its log:")
        for line in log_path.read_text(errors="replace").splitlines():
            if "starting with" not in line:
                echo("  " + line[:220])
        log_path.unlink(missing_ok=True)


def _wait_caught_up(port: int, deadline: float) -> None:
    """Until nothing is in flight (the platform's further failure events of the attempt are handled too)."""
    while clock.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                if json.loads(response.read()).get("in_flight") == 0:
                    return
        except (urllib.error.URLError, OSError, ValueError):
            pass
        clock.sleep(0.05)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = clock.monotonic() + timeout_s
    while clock.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"allocguard run exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        clock.sleep(0.1)
    raise RuntimeError("allocguard run did not become ready")
