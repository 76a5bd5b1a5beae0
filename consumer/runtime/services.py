"""Background services beside the poll loop (the contract: consumer/runtime/service.py): the wake-ups and the
probe. The state gauges' refresher (consumer/runtime/gauges.py) is one too."""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any

import psycopg
from confluent_kafka import IsolationLevel, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from consumer.config import RuntimeSettings
from consumer.redact import redact
from consumer.runtime.health import Health, Outage, kafka_log
from consumer.runtime.jobs import Jobs
from consumer.runtime.scheduler import KeyedScheduler
from consumer.runtime.service import Service
from consumer.runtime.stalls import FetchWatch
from consumer.runtime.work import WakeUp
from handlers import store
from handlers.prevent import claim_due_flags

log = logging.getLogger("allocguard.runtime")


class WakeUps(Service):
    """Waits that fell due (a young blocker's grace ended, an owner's hold expired) are claimed from the database —
    one instance per incident — and planned again on the keyed scheduler, in order with that booking's events.
    Nothing here needs a new platform event, and the due times survive restarts because they live in
    ``allocguard.incidents``. Pending plans past their expiry are expired, and old hold memories swept."""

    name = "wakeups"

    def __init__(
        self,
        stop: threading.Event,
        connect: Callable[[], AbstractContextManager[psycopg.Connection[Any]]],
        health: Health,
        scheduler: KeyedScheduler,
        jobs: Jobs,
        *,
        incidents: bool,
        flags: bool,
        every_s: float = 1.0,
        lease: timedelta = timedelta(seconds=60),
    ) -> None:
        super().__init__(stop)
        self._connect = connect
        self._health = health
        self._scheduler = scheduler
        self._jobs = jobs
        #: incidents wait only in a mode that acts; flags only with prevention on
        self._incidents = incidents
        self._flags = flags
        self._every_s = every_s
        self._lease = lease

    def run(self) -> None:
        instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        failing = False
        expired_at = 0.0
        jobs, lease = self._jobs, self._lease
        while not self.stop.wait(self._every_s):
            if self._health.degraded:
                continue  # held back already: the held work comes first
            try:
                with self._connect() as conn:
                    due = store.claim_due(conn, instance, lease) if self._incidents else []
                    flagged = claim_due_flags(conn, instance, lease) if self._flags else []
                    if time.monotonic() - expired_at >= 30.0:
                        expired_at = time.monotonic()
                        for plan_id in store.expire_plans(conn):
                            log.warning("pending plan %s expired undecided", plan_id)
                        store.sweep_holds(conn)  # the table would otherwise keep every hold ever announced
            except psycopg.Error as exc:
                if not failing:
                    log.warning("cannot claim due wake-ups: %s", redact(str(exc).strip()))
                failing = True
                continue
            failing = False
            for incident_id, booking in due:
                key = str(booking)
                self._scheduler.submit(WakeUp(key=key, run=functools.partial(jobs.recheck, incident_id, key)))
            for booking in flagged:
                key = str(booking)
                self._scheduler.submit(
                    WakeUp(key=key, run=functools.partial(jobs.prevent, booking, "grace ended", key))
                )


class Probe(Service):
    """Once a second, one cheap query on its own database connection, and every third second a metadata request on
    its own Kafka handle, so /readyz answers from state at once and turns false within seconds of losing either (a
    probe never waits on the pool or on the consumer). A metadata request every second showed in the latency tail
    (p99 48 → 163 ms): the broker is probed less often than the database. A dependency back is announced
    (``back``): held work resumes at once."""

    name = "probe"

    def __init__(
        self,
        stop: threading.Event,
        settings: RuntimeSettings,
        database: Outage,
        kafka: Outage,
        back: Callable[[str], None],
        *,
        every_s: float = 1.0,
        kafka_every: int = 3,
        fetches: FetchWatch | None = None,
    ) -> None:
        super().__init__(stop)
        self._settings = settings
        self._fetches = fetches
        self._database = database
        self._kafka = kafka
        self._back = back
        self._every_s = every_s
        self._kafka_every = kafka_every

    def run(self) -> None:
        settings = self._settings
        dsn = settings.resolved_dsn()
        config: dict[str, Any] = {"bootstrap.servers": settings.resolved_bootstrap(), **settings.librdkafka()}
        admin = AdminClient({**config, "logger": kafka_log})  # type: ignore[dict-item]
        conn: psycopg.Connection[Any] | None = None
        rounds = 0
        ends_read = 0.0
        while not self.stop.wait(self._every_s):
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(dsn, autocommit=True, connect_timeout=2, **settings.pg_connect_kwargs())
                conn.execute("SELECT 1")
                if self._database.up():
                    self._back("database")
            except psycopg.Error as exc:
                self._database.down(redact(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)))
                if conn is not None:
                    conn.close()
                conn = None
            rounds += 1
            if rounds % self._kafka_every:
                continue
            try:
                admin.list_topics(timeout=2)
                if self._kafka.up():
                    self._back("kafka")
            except KafkaException as exc:
                self._kafka.down(str(exc.args[0].str() if exc.args else exc))
                continue
            fetches = self._fetches
            if fetches is not None and fetches.suspects and time.monotonic() - ends_read >= fetches.stall_s / 2:
                # partitions whose position stood still: their ends, at most twice a stall period (a quiet
                # stream's partitions are all still, all the time)
                fetches.ends = log_ends(admin, fetches.suspects)
                ends_read = time.monotonic()
        if conn is not None:
            conn.close()


#: ListOffsets' "latest" (the end of the log)
_LATEST = OffsetSpec.latest()  # type: ignore[no-untyped-call]


def log_ends(admin: AdminClient, partitions: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    """The committed ends of ``partitions`` (read_committed: an open transaction's records are not yet there to
    fetch); the partitions whose end could not be read are left out."""
    ends: dict[tuple[str, int], int] = {}
    try:
        asked = admin.list_offsets(
            {TopicPartition(t, p): _LATEST for t, p in partitions},
            isolation_level=IsolationLevel.READ_COMMITTED,
            request_timeout=2,
        )
        for tp, future in asked.items():
            try:
                ends[(tp.topic, tp.partition)] = int(future.result().offset)
            except KafkaException as exc:
                log.debug("log end of %s[%d] not read: %s", tp.topic, tp.partition, exc)
    except KafkaException as exc:
        log.debug("log ends not read: %s", exc)
    return ends
