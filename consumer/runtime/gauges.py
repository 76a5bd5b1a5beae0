"""The gauges an alert needs, outside the handlers: read at scrape time from the runtime's own state (readiness,
dependencies, partitions, the last event consumed) and, every ``refresh_s`` in a side thread on its own database
connection and Kafka handle, from what only the database and the heartbeat topic know (plans waiting for a
person, incidents not settled, the replication slot's retained WAL, the Debezium heartbeat's age).

Values read from the database are the same on every replica: alert rules aggregate them with ``max()``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

from consumer.config import RuntimeSettings
from consumer.operations.check import last_message_age
from consumer.runtime.clients import group_protocol
from consumer.runtime.health import Health
from consumer.runtime.service import Service
from consumer.telemetry import Metrics
from consumer.version import byte_test_is_native, hold_scanner_is_native, version
from schemas.envelope import HEARTBEAT_TOPIC_PREFIX

log = logging.getLogger("allocguard.runtime")

Sample = tuple[float, Mapping[str, str]]
#: incident statuses that wait for something (a wake-up, a person): how many, and the oldest one's age
UNSETTLED = ("open", "manual_review", "awaiting_approval")

_STATE_SQL = """
SELECT
  (SELECT count(*) FROM allocguard.plans WHERE status = 'pending'),
  (SELECT extract(epoch FROM min(expires_at) - now()) FROM allocguard.plans WHERE status = 'pending'),
  (SELECT coalesce(jsonb_object_agg(status, jsonb_build_array(n, age)), '{}'::jsonb) FROM (
     SELECT status, count(*) AS n, extract(epoch FROM now() - min(created_at)) AS age
     FROM allocguard.incidents WHERE status = ANY(%s) GROUP BY status) AS unsettled)
"""
_SLOTS_SQL = """
SELECT slot_name, coalesce(wal_status, 'unknown'), active, safe_wal_size,
       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)
FROM pg_replication_slots WHERE database = current_database()
"""


@dataclass
class DatabaseState:
    """What the refresher last read; None until the first read succeeds."""

    refreshed_at: float | None = None
    plans_pending: float | None = None
    plans_next_expiry_s: float | None = None
    unsettled: dict[str, tuple[float, float]] = field(default_factory=dict)
    slots: list[tuple[str, str, bool, float | None, float | None]] = field(default_factory=list)
    heartbeat_age_s: float | None = None


class StateRefresher(Service):
    """Reads the database-side and heartbeat gauges every ``refresh_s`` (a failed read keeps the last values and
    says so once; /readyz and the probe own the outage)."""

    name = "gauges"

    def __init__(
        self,
        dsn: str,
        heartbeat_age: Callable[[], float | None],
        stop: threading.Event,
        refresh_s: float = 15.0,
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(stop)
        self.dsn = dsn
        self.options = options or {}
        self.heartbeat_age = heartbeat_age
        self.refresh_s = refresh_s
        self.state = DatabaseState()
        self._failing = False

    def run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while True:
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5, **self.options)
                self.read(conn)
                self._failing = False
            except psycopg.Error as exc:
                if not self._failing:
                    log.warning("state gauges not refreshed (kept): %s", str(exc).strip().splitlines()[:1])
                self._failing = True
                if conn is not None:
                    conn.close()
                conn = None
            try:
                self.state.heartbeat_age_s = self.heartbeat_age()
            except Exception as exc:
                log.debug("heartbeat age not read: %s", exc)
            if self.stop.wait(self.refresh_s):
                break
        if conn is not None:
            conn.close()

    def read(self, conn: psycopg.Connection[Any]) -> None:
        row = conn.execute(_STATE_SQL, (list(UNSETTLED),)).fetchone()
        slots = conn.execute(_SLOTS_SQL).fetchall()
        assert row is not None
        pending, next_expiry, unsettled = row
        self.state = DatabaseState(
            refreshed_at=time.time(),
            plans_pending=float(pending),
            plans_next_expiry_s=None if next_expiry is None else float(next_expiry),
            unsettled={status: (float(n), float(age)) for status, (n, age) in unsettled.items()},
            slots=[
                (
                    str(name),
                    str(status),
                    bool(active),
                    None if safe is None else float(safe),
                    None if retained is None else float(retained),
                )
                for name, status, active, safe, retained in slots
            ],
            heartbeat_age_s=self.state.heartbeat_age_s,
        )


def register(
    metrics: Metrics,
    *,
    build: Mapping[str, str],
    ready: Callable[[], bool],
    dependencies: Callable[[], Mapping[str, bool]],
    partitions: Callable[[], tuple[int, int]],
    held: Callable[[], int],
    gaps_open: Callable[[], int],
    last_event_at: Callable[[], float | None],
    database: Callable[[], DatabaseState],
) -> None:
    """Every gauge an alert or the dashboard reads; the callbacks run at scrape time and only read state."""

    def one(value: float | None, labels: Mapping[str, str] | None = None) -> Iterable[Sample]:
        return [] if value is None else [(value, labels or {})]

    gauge = metrics.gauge
    gauge(
        "allocguard.build.info",
        "1, labelled with the version, the byte test and the group protocol",
        lambda: one(1.0, build),
    )
    gauge(
        "allocguard.ready",
        "1 when /readyz is 200: partitions assigned, nothing held back",
        lambda: one(1.0 if ready() else 0.0),
    )
    gauge(
        "allocguard.dependency.up",
        "1 while the dependency (database, kafka) answers the probe",
        lambda: [(1.0 if up else 0.0, {"dependency": name}) for name, up in dependencies().items()],
    )
    gauge("allocguard.partitions.assigned", "partitions this member owns", lambda: one(float(partitions()[0])))
    gauge(
        "allocguard.partitions.paused",
        "partitions paused (backpressure or an outage holding work back)",
        lambda: one(float(partitions()[1])),
    )
    gauge(
        "allocguard.work.held", "bookings whose work an infrastructure failure holds back", lambda: one(float(held()))
    )
    gauge("allocguard.gaps.open", "partitions whose lost records are being backfilled", lambda: one(float(gaps_open())))
    gauge(
        "allocguard.last.event.timestamp.seconds",
        "unix time the last CDC message was consumed",
        lambda: one(last_event_at()),
    )

    def db(read: Callable[[DatabaseState], Iterable[Sample]]) -> Callable[[], Iterable[Sample]]:
        return lambda: read(database())

    gauge(
        "allocguard.state.refreshed.timestamp.seconds",
        "unix time the database gauges were last read (every ALLOCGUARD_METRICS_REFRESH_S)",
        db(lambda s: one(s.refreshed_at)),
    )
    gauge(
        "allocguard.plans.pending",
        "plans waiting for a person (same on every replica: max())",
        db(lambda s: one(s.plans_pending)),
    )
    gauge(
        "allocguard.plans.next.expiry.seconds",
        "seconds until the first pending plan expires (none: no series)",
        db(lambda s: one(s.plans_next_expiry_s)),
    )
    gauge(
        "allocguard.incidents.unsettled",
        "incidents waiting (open, manual_review, awaiting_approval)",
        db(
            lambda s: (
                [(s.unsettled.get(st, (0.0, 0.0))[0], {"status": st}) for st in UNSETTLED] if s.refreshed_at else []
            )
        ),
    )
    gauge(
        "allocguard.incidents.oldest.age.seconds",
        "age of the oldest incident in each waiting status",
        db(lambda s: [(age, {"status": st}) for st, (_, age) in s.unsettled.items()]),
    )
    gauge(
        "allocguard.replication.slot.retained.wal.bytes",
        "WAL the slot holds back (current LSN - restart_lsn)",
        db(lambda s: [(r, {"slot": n}) for n, _, _, _, r in s.slots if r is not None]),
    )
    gauge(
        "allocguard.replication.slot.safe.wal.size.bytes",
        "WAL that can still be written before the slot is invalidated (none when max_slot_wal_keep_size = -1)",
        db(lambda s: [(f, {"slot": n}) for n, _, _, f, _ in s.slots if f is not None]),
    )
    gauge(
        "allocguard.replication.slot.status",
        "1 for the slot's wal_status (reserved, extended, unreserved, lost)",
        db(lambda s: [(1.0, {"slot": n, "wal_status": st}) for n, st, _, _, _ in s.slots]),
    )
    gauge(
        "allocguard.replication.slot.active",
        "1 while a client (Debezium) streams from the slot",
        db(lambda s: [(1.0 if a else 0.0, {"slot": n}) for n, _, a, _, _ in s.slots]),
    )
    gauge(
        "allocguard.debezium.heartbeat.age.seconds",
        "seconds since the connector's last heartbeat message",
        db(lambda s: one(s.heartbeat_age_s)),
    )


def heartbeat_age(settings: RuntimeSettings) -> float | None:
    """Seconds since Debezium's last heartbeat on ``__debezium-heartbeat.<prefix>`` (its own short-lived reader)."""
    target = settings.check_target()
    return last_message_age(target, f"{HEARTBEAT_TOPIC_PREFIX}.{settings.topic_prefix}")


def register_runtime(
    metrics: Metrics,
    settings: RuntimeSettings,
    health: Health,
    *,
    paused: Callable[[], bool],
    last_event_at: Callable[[], float | None],
    state: StateRefresher,
) -> None:
    """:func:`register`, fed from ``allocguard run``'s parts."""

    def assigned() -> tuple[int, int]:
        count = len(health.assigned)
        return count, count if paused() else 0

    def dependencies() -> dict[str, bool]:
        return {
            name: outage is None or not outage.is_down
            for name, outage in (("database", health.database), ("kafka", health.kafka))
        }

    register(
        metrics,
        build={
            "version": version(),
            "byte_test": "native" if byte_test_is_native() else "python",
            "hold_scanner": "native" if hold_scanner_is_native() else "msgspec",
            "group_protocol": str(group_protocol(settings.librdkafka()).get("group.protocol", "classic")),
            "mode": str(settings.mode),
        },
        ready=lambda: health.readiness()[0],
        dependencies=dependencies,
        partitions=assigned,
        held=lambda: len(health.degraded),
        gaps_open=lambda: len(health.gaps),
        last_event_at=last_event_at,
        database=lambda: state.state,
    )
