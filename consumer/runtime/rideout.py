"""Riding out a dependency: work that meets a database or broker outage waits — without a verdict, its offset
uncommitted — and goes again as soon as the probe sees the dependency back; stopping abandons it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from confluent_kafka import KafkaException
from psycopg_pool import ConnectionPool, PoolTimeout

from consumer.redact import redact
from consumer.runtime.health import Health
from consumer.runtime.work import Abandoned
from handlers.errors import infrastructure_cause, is_contention

log = logging.getLogger("allocguard.runtime")
_T = TypeVar("_T")


class RideOut:
    """Owns the count of dependency recoveries; every thread that waits on a dependency waits here."""

    def __init__(self, health: Health, stop: threading.Event, pool: ConnectionPool[Any]) -> None:
        self._health = health
        self._stop = stop
        self._pool = pool
        #: how many times a dependency came back: a ride-out waiting out its back-off retries at once when it moves
        self._recoveries = 0

    def run(self, key: str, work: Callable[[], _T]) -> _T:
        """Run ``work`` until it goes through. Contention (a lock, a serialization conflict) backs off this
        booking alone. An infrastructure failure (privilege, missing object, database down) is never a verdict
        and never a dead letter: the event stays in flight (its offset is not committed), the partitions are
        paused while anything is held back, /readyz says why, and the work is tried again — with backoff, as
        long as the process is not stopping — until the cause is fixed. Stopping abandons it without a
        verdict (:class:`Abandoned`): the next owner of the partition redoes it."""
        delay = 0.2
        while True:
            try:
                result = work()
                break
            except Exception as exc:
                if is_contention(exc):
                    log.warning("booking %s: database busy, backing off %.1fs: %s", key, delay, exc)
                    reason = str(exc)
                else:
                    cause = infrastructure_cause(exc)
                    if cause is None:
                        raise
                    if self._health.degrade(key, cause):
                        log.warning("holding back booking %s (not committed, partitions paused): %s", key, cause)
                    reason = cause
                if self.wait(delay):
                    raise Abandoned(reason) from exc
                delay = min(delay * 2, 5.0)
        if self._health.recover(key):
            log.info("infrastructure recovered; resuming")
        return result

    def until_through(self, work: Callable[[], _T], what: str) -> _T | None:
        """``work`` tried until it goes through while the database or the broker is away; None when stopping."""
        delay, told = 0.5, False
        while True:
            try:
                return work()
            except (psycopg.Error, PoolTimeout, KafkaException) as exc:
                if not told:
                    log.warning("%s waits for its dependencies: %s", what, redact(str(exc).strip()))
                    told = True
            if self.wait(delay):
                return None
            delay = min(delay * 2, 5.0)

    def wait(self, seconds: float) -> bool:
        """A back-off: over early when a dependency comes back (the probe counts it), so held work resumes within
        a probe interval of the database or the broker, not at the end of a 5 s back-off. True when the process
        is stopping."""
        seen, end = self._recoveries, time.monotonic() + seconds
        while not self._stop.wait(min(0.05, max(0.0, end - time.monotonic()))):
            if self._recoveries != seen or time.monotonic() >= end:
                return False
        return True

    def sleep(self, seconds: float) -> None:
        """The retry policy's waits (a hold conflict waits ≥ 10 s): cut short by SIGTERM, abandoning the attempt
        without a verdict."""
        if self._stop.wait(seconds):
            raise Abandoned("stopping during a retry wait")

    def back(self, name: str) -> None:
        """The probe saw ``name`` come back: wake the ride-outs; for the database, have the pool connect now
        (``check`` discards connections the restart broke and starts growing an empty pool at once)."""
        if name == "database":
            try:
                self._pool.check()
            except Exception as exc:  # the pool is closing, or the database went away again
                log.debug("pool check after the database came back: %s", exc)
        self._recoveries += 1
