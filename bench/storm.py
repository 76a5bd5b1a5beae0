"""A storm of victims through the real path (platform commit → Debezium → Kafka → ``allocguard run`` as a
subprocess → PostgreSQL), with pgbench on the same server in the same run.

1. pgbench's standard TPC-B-like run alone: the server's yardstick (tps).
2. Unrelated incidents one at a time, nothing else going on: failure committed → victim confirmed (p50/p99).
3. **Fixable storm**: ``--victims`` failures (an orphan allocation on the only table, a victim whose confirm
   fails on it) committed while allocguard is stopped; then it starts with pgbench running beside:
   remediations/s through the backlog, pgbench's tps before and meanwhile, and allocguard's statements and
   transactions per remediation (its ``/metrics`` counters).
4. **The fixable storm against PostgreSQL back to back**: ``--victims`` more, allocguard in this process with
   every statement captured (no pgbench beside), then the same statements run by pgbench on copies of the
   database as allocguard found it (:func:`captured`): remediations/s against PostgreSQL's.
5. **Backing-off storm**: ``--victims`` more failures committed while allocguard is stopped, their tables then
   held by an ops hold; allocguard starts, prunes each orphan, the auto-assign meets the hold and the booking waits
   in the delay queue (a due time, re-planned every ``hold_conflict_wait_s``). While all of them back off,
   unrelated incidents again, one at a time: their p50/p99 beside step 2's. Then the holds go and the wake-ups
   confirm the backlog.

    python -m bench.storm --victims 1000 --unrelated 30
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from bench import local_stack, pgbase
from bench.latency import blocked_victim, incidents, rss_mb, summary
from consumer.config import RuntimeSettings
from consumer.local.settings import StackSettings
from consumer.local.simulator import Hold, PlatformApp
from consumer.runtime.loop import Runtime
from tests.support.process import RuntimeProcess, free_port

Conn = psycopg.Connection[Any]


def prepare(app: PlatformApp, count: int, held: bool) -> list[tuple[uuid.UUID, Hold, uuid.UUID | None]]:
    """``count`` victims, each quoted on the one table of its own venue that an orphan still blocks; with
    ``held``, the restaurant to take an ops hold in (after the failure)."""
    out: list[tuple[uuid.UUID, Hold, uuid.UUID | None]] = []
    for _ in range(count):
        victim, hold, restaurant = blocked_victim(app)
        out.append((victim, hold, restaurant if held else None))
    return out


def ops_hold(conn: Conn, victim: uuid.UUID, restaurant: uuid.UUID) -> uuid.UUID:
    row = conn.execute(
        "INSERT INTO table_holds (restaurant_id, booking_id, zone_id, start_at, end_at, expires_at)"
        " SELECT b.restaurant_id, NULL, z.id, b.start_at - interval '15 minutes', b.end_at + interval '15 minutes',"
        " b.end_at + interval '25 minutes' FROM bookings b JOIN zones z ON z.restaurant_id = b.restaurant_id"
        " WHERE b.id = %s RETURNING id",
        (victim,),
    ).fetchone()
    assert row is not None
    conn.execute(
        "INSERT INTO table_hold_members (hold_id, table_id) SELECT %s, t.id FROM table_inventory t"
        " WHERE t.restaurant_id = %s",
        (row[0], restaurant),
    )
    return uuid.UUID(str(row[0]))


def _array(ids: list[uuid.UUID]) -> str:
    return "{" + ",".join(map(str, ids)) + "}"


def confirmed(conn: Conn, victims: list[uuid.UUID] | str) -> int:
    """How many of ``victims`` are confirmed (the ids, or their array literal: :func:`wait_confirmed` polls with
    one built once — adapting a thousand UUIDs every 20 ms took the GIL from an in-process allocguard)."""
    ids = victims if isinstance(victims, str) else _array(victims)
    row = conn.execute(
        "SELECT count(*) FROM bookings WHERE id = ANY(%s::uuid[]) AND status = 'confirmed'", (ids,)
    ).fetchone()
    return int(row[0]) if row else 0


def wait_confirmed(conn: Conn, victims: list[uuid.UUID], timeout: float) -> float:
    ids = _array(victims)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if confirmed(conn, ids) == len(victims):
            return time.monotonic()
        time.sleep(0.02)
    raise AssertionError(f"{confirmed(conn, ids)} of {len(victims)} victims confirmed within {timeout}s")


def counters(runtime: RuntimeProcess) -> dict[str, float]:
    _, body = runtime.get("/metrics")
    found: dict[str, float] = {}
    for name in ("allocguard_db_statements_total", "allocguard_db_transactions_total"):
        match = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", str(body), re.MULTILINE)
        found[name] = float(match.group(1)) if match else 0.0
    return found


class Beside:
    """pgbench running beside the storm (``-P 1``): its per-second tps while the storm lasts."""

    def __init__(self, dsn: str, clients: int = 4) -> None:
        self._process = subprocess.Popen(
            [pgbase.pgbench_binary(), "-n", "-c", str(clients), "-j", "2", "-T", "3600", "-P", "1", dsn],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.samples: list[float] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            found = re.search(r"progress: [0-9.]+ s, ([0-9.]+) tps", line)
            if found:
                self.samples.append(float(found.group(1)))

    def stop(self) -> list[float]:
        self._process.terminate()
        self._process.wait(timeout=30)
        return self.samples


def storm(
    app: PlatformApp, start: Callable[[], RuntimeProcess], pgbench_dsn: str, victims: list[tuple[uuid.UUID, Hold, Any]]
) -> tuple[RuntimeProcess, dict[str, Any]]:
    """The failures are committed while allocguard is stopped (a storm is faster than any platform call rate
    here), then allocguard starts with pgbench running beside it and works through the backlog."""
    conn = app.conn
    for victim, hold, _ in victims:
        result = app.confirm(hold, key=f"api-{victim}", reason="api_inline_auto_assign", source="api-inline")
        assert not result.ok
    beside = Beside(pgbench_dsn)
    time.sleep(2)  # pgbench's first samples: its rate before the storm
    alone = list(beside.samples)
    launched = time.monotonic()
    runtime = start()
    runtime.wait_ready()
    ready = time.monotonic()
    before = counters(runtime)
    done = wait_confirmed(conn, [v for v, _, _ in victims], timeout=900)
    during = beside.samples[len(alone) :]
    beside.stop()
    after = counters(runtime)
    count = len(victims)
    statements = after["allocguard_db_statements_total"] - before["allocguard_db_statements_total"]
    transactions = after["allocguard_db_transactions_total"] - before["allocguard_db_transactions_total"]
    return runtime, {
        "victims": count,
        "started_to_last_confirmed_s": round(done - launched, 2),
        "ready_to_last_confirmed_s": round(done - ready, 2),
        "remediations_per_s": round(count / (done - ready), 1),
        "pgbench_tps_beside_before_storm": round(sum(alone) / len(alone)) if alone else None,
        "pgbench_tps_during": round(sum(during) / len(during)) if during else None,
        "statements_per_remediation": round(statements / count, 1),
        "transactions_per_remediation": round(transactions / count, 1),
    }


_ID_TRIGGER = (
    "CREATE TABLE allocguard.bench_incident_ids (booking_id uuid PRIMARY KEY, id uuid NOT NULL);"
    " CREATE FUNCTION allocguard.bench_incident_id() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER"
    " SET search_path = pg_catalog AS $$ BEGIN"
    "   NEW.id := coalesce((SELECT m.id FROM allocguard.bench_incident_ids m WHERE m.booking_id = NEW.booking_id),"
    "                      NEW.id);"
    "   RETURN NEW; END $$;"
    " CREATE TRIGGER bench_incident_id BEFORE INSERT ON allocguard.incidents"
    " FOR EACH ROW EXECUTE FUNCTION allocguard.bench_incident_id()"
)


def captured(
    app: PlatformApp, stack: StackSettings, group: str, victims: list[tuple[uuid.UUID, Hold, Any]], folder: Path
) -> dict[str, Any]:
    """The fixable storm once more with allocguard in this process, so that every statement it sends is captured;
    then PostgreSQL runs the same statements back to back (pgbench, no Python) on copies of the database as
    allocguard found it — the storm's "bound by PostgreSQL, not Python" yardstick.

    A copy is restored from a dump taken after the failures committed and before allocguard started, one per
    client count (the statements prune and assign: they change what they touch). The copy differs in one thing:
    the incident ids the database generated in allocguard's run, which its later statements name, are generated
    again by a trigger from the run's own (booking → incident) pairs. Each copy must end with every victim
    confirmed, or PostgreSQL did not do the same work."""
    conn = app.conn
    ids = [v for v, _, _ in victims]
    for victim, hold, _ in victims:
        result = app.confirm(hold, key=f"api-{victim}", reason="api_inline_auto_assign", source="api-inline")
        assert not result.ok
    before = folder / "before-storm.dump"
    pgbase.dump(stack.admin_dsn, before)
    runtime = Runtime(
        RuntimeSettings(
            group_id=group,
            mode="auto",
            health_host="127.0.0.1",
            health_port=free_port(),
            artifacts_dir=folder / "artifacts-captured",
        )
    )
    with pgbase.capturing() as capture:
        thread = threading.Thread(target=runtime.run, name="bench-runtime")
        thread.start()
        try:
            deadline = time.monotonic() + 60
            while not runtime.health.readiness()[0]:
                if time.monotonic() > deadline or not thread.is_alive():
                    raise AssertionError("allocguard (in process) never became ready")
                time.sleep(0.02)
            ready = time.monotonic()
            done = wait_confirmed(conn, ids, timeout=900)
        finally:
            runtime.request_stop()
            thread.join(120)
    with psycopg.connect(stack.admin_dsn, autocommit=True) as admin:
        pairs = admin.execute(
            "SELECT booking_id, id FROM allocguard.incidents WHERE booking_id = ANY(%s) AND mode = 'auto'", (ids,)
        ).fetchall()
    assert len(pairs) == len(ids), f"{len(pairs)} incidents for {len(ids)} victims"
    sequences = pgbase.render(capture, stack.pg_dsn)
    copies: dict[int, str] = {}

    def copy_for(clients: int) -> str:
        name = f"allocguard_storm_copy_{clients}"
        admin_dsn = pgbase.restore_copy(stack.admin_dsn, before, name)
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(_ID_TRIGGER)
            with admin.cursor() as cur:
                cur.executemany("INSERT INTO allocguard.bench_incident_ids VALUES (%s, %s)", pairs)
        copies[clients] = name
        return stack.dsn_for(name, stack.pg_dsn)

    try:
        walls = pgbase.back_to_back(sequences, copy_for, whole=True)
        for clients, name in copies.items():
            with psycopg.connect(stack.dsn_for(name), autocommit=True) as copy:
                seated = confirmed(copy, ids)
            assert seated == len(ids), f"the copy for {clients} client(s) seated {seated} of {len(ids)} victims"
    finally:
        for name in copies.values():
            pgbase.drop_database(stack.admin_dsn, name)
    handled = len(ids) / (done - ready)
    postgres = len(ids) / walls["best"]
    return {
        "victims": len(ids),
        "remediations_per_s": round(handled, 1),
        "postgres_back_to_back_remediations_per_s": round(postgres, 1),
        "postgres_back_to_back_wall_s": {k: round(v, 3) for k, v in walls.items()},
        "remediations_vs_postgres": round(handled / postgres, 3),
        "remediations_vs_postgres_one_client": round(handled / (len(ids) / walls["1"]), 3),
        "statements_per_remediation": round(capture.statements / len(ids), 1),
        "transactions_per_remediation": round(capture.transactions / len(ids), 1),
    }


def backing_off(
    app: PlatformApp,
    start: Callable[[], RuntimeProcess],
    dsn: str,
    victims: list[tuple[uuid.UUID, Hold, Any]],
    unrelated: int,
) -> tuple[RuntimeProcess, dict[str, Any]]:
    """The failures are committed while allocguard is stopped (as after an outage), the ops holds taken, then
    allocguard starts and finds the backlog."""
    conn = app.conn
    for victim, hold, _ in victims:
        result = app.confirm(hold, key=f"api-{victim}", reason="api_inline_auto_assign", source="api-inline")
        assert not result.ok
    holds = [ops_hold(conn, victim, restaurant) for victim, _, restaurant in victims]
    ids = [v for v, _, _ in victims]
    runtime = start()
    runtime.wait_ready()
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as mine:
        deadline = time.monotonic() + 600
        waiting = 0
        while time.monotonic() < deadline:
            row = mine.execute(
                "SELECT count(*) FROM allocguard.incidents WHERE booking_id = ANY(%s) AND status = 'open'"
                " AND next_check_at IS NOT NULL AND mode = 'auto'",
                (ids,),
            ).fetchone()
            waiting = int(row[0]) if row else 0
            if waiting == len(ids):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"only {waiting} of {len(ids)} incidents waiting in the delay queue")
    all_waiting = time.monotonic()
    # the storm now backs off (re-planned every hold_conflict_wait_s): others must not notice
    latencies = incidents(app, unrelated)
    assert confirmed(conn, ids) == 0, "the holds are still there: no backing-off victim can be seated"
    conn.execute("DELETE FROM table_holds WHERE id = ANY(%s)", (holds,))
    released = time.monotonic()
    done = wait_confirmed(conn, ids, timeout=900)
    return runtime, {
        "victims": len(ids),
        "backlog_read_to_all_in_delay_queue_s": round(all_waiting - started, 2),
        "unrelated_while_backing_off": summary(latencies),
        "holds_released_to_all_confirmed_s": round(done - released, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--victims", type=int, default=1000)
    parser.add_argument("--unrelated", type=int, default=30)
    parser.add_argument("--pgbench-seconds", type=int, default=10)
    args = parser.parse_args()
    settings = local_stack()
    tps_alone = pgbase.pgbench_tps(settings.admin_dsn, seconds=args.pgbench_seconds)
    pgbench_dsn = make_conninfo(settings.admin_dsn, dbname="allocguard_pgbench")
    with tempfile.TemporaryDirectory() as folder, psycopg.connect(settings.platform_dsn, autocommit=True) as conn:
        app = PlatformApp(conn)
        prepared_at = time.monotonic()
        fixable = prepare(app, args.victims, held=False)
        blocked = prepare(app, args.victims, held=True)
        again = prepare(app, args.victims, held=False)
        prepared_s = time.monotonic() - prepared_at
        group = f"bench-storm-{uuid.uuid4().hex[:8]}"
        started: list[RuntimeProcess] = []

        def start(name: str) -> RuntimeProcess:
            started.append(RuntimeProcess(Path(folder) / f"{name}.log", group))
            return started[-1]

        try:
            runtime = start("run")
            runtime.wait_ready()
            baseline = incidents(app, args.unrelated)
            runtime.stop()
            runtime, fixed = storm(app, lambda: start("run-storm"), pgbench_dsn, fixable)
            resident = rss_mb(runtime.process.pid)
            runtime.stop()
            back_to_back = captured(app, settings, group, again, Path(folder))
            runtime, waited = backing_off(app, lambda: start("run2"), settings.pg_dsn, blocked, args.unrelated)
            resident = max(resident, rss_mb(runtime.process.pid))
        finally:
            for each in started:
                if each.process.poll() is None:
                    each.stop()
    base, during = summary(baseline), waited["unrelated_while_backing_off"]
    print(
        json.dumps(
            {
                "benchmark": "storm",
                "prepared_s": round(prepared_s, 1),
                "pgbench_tpcb_tps_alone": round(tps_alone),
                "fixable_storm": {
                    **fixed,
                    "remediations_per_pgbench_tps": round(fixed["remediations_per_s"] / tps_alone, 3),
                },
                "fixable_storm_beside_postgres": back_to_back,
                "backing_off_storm": waited,
                "unrelated_alone": base,
                "unrelated_p99_change_ms": round(during["p99_ms"] - base["p99_ms"], 1),
                "allocguard_run_rss_mb_after": round(resident, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
