"""Failure events answered in memory (handlers/settled.py) — more events of an incident settled for good — written
many per statement on a thread of their own, then their offsets completed.

An answer costs no round trip of its own: the events that arrive while a statement runs (or within the linger) go
into the next one, so a storm's 11 extra events per attempt cost a share of one statement and one commit. An
event's offset completes only after its statement committed (effectively-once: the processed marker and the
incident's count are durable first); a database outage holds them back like any other work (ride-out: not
committed, partitions paused, tried again); stopping leaves what is not written uncommitted, and the next owner
answers those events again. An event whose incident is gone (deleted by a person) goes the usual way."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from confluent_kafka import Message

from consumer.runtime.outcomes import Outcomes
from consumer.runtime.rideout import RideOut
from consumer.runtime.scheduler import linger
from consumer.runtime.work import Abandoned, BatchDone
from handlers import store
from handlers.detect import FailureSeen
from handlers.pipeline import Connect, Remediator

log = logging.getLogger("allocguard.runtime")

#: the ride-out key of the fold statements (what /readyz names while the database is away)
FOLD_KEY = "duplicate-events"
#: at most this many events per statement
LIMIT = 2000


@dataclass(slots=True)
class Fold:
    """One failure event of a settled incident, with where it was read."""

    failure: FailureSeen
    incident_id: UUID
    key: str
    topic: str
    partition: int
    offset: int
    message: Message


class Folds:
    def __init__(
        self,
        remediator: Remediator,
        connect: Connect,
        ride: RideOut,
        outcomes: Outcomes,
        *,
        done: Callable[[BatchDone], None],
        usual: Callable[[Fold], None],
        linger_s: float,
    ) -> None:
        self._remediator = remediator
        self._connect = connect
        self._ride = ride
        self._outcomes = outcomes
        #: hands written events back to the loop, which completes their offsets
        self._done = done
        #: an event the statement cannot answer (its incident is gone, or a bug): its own work item
        self._usual = usual
        self._linger_s = linger_s
        self._queue: deque[Fold] = deque()
        self._changed = threading.Condition()
        self._running = False
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="allocguard-folds", daemon=True)
        self._thread.start()

    def add(self, fold: Fold) -> None:
        """An answered event; its offset is in flight until its statement commits."""
        with self._changed:
            self._queue.append(fold)
            if len(self._queue) == 1 or len(self._queue) >= LIMIT:
                self._changed.notify_all()

    def busy(self) -> bool:
        with self._changed:
            return self._running or bool(self._queue)

    def close(self) -> None:
        """No wait for more: what is queued is written once more if the database takes it, then the thread ends."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()

    def _take(self) -> list[Fold] | None:
        with self._changed:
            while not self._queue:
                if self._closing:
                    return None
                self._changed.wait()
            linger(self._changed, lambda: len(self._queue) >= LIMIT or self._closing, self._linger_s)
            batch = [self._queue.popleft() for _ in range(min(LIMIT, len(self._queue)))]
            self._running = True
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            try:
                self._write(batch)
            except Abandoned:  # stopping during an outage: left uncommitted, answered again by the next owner
                pass
            except Exception:  # a bug: each event goes the usual way (it has its own dead letter there)
                log.exception("writing %d duplicate event(s) together failed: each goes the usual way", len(batch))
                for fold in batch:
                    self._usual(fold)
            finally:
                with self._changed:
                    self._running = False

    def _write(self, batch: list[Fold]) -> None:
        started = time.monotonic()

        def write() -> set[UUID]:
            with self._connect() as conn:
                return store.fold_duplicates(conn, [(f.failure, f.incident_id) for f in batch])

        gone = self._ride.run(FOLD_KEY, write)
        written = [f for f in batch if f.failure.event_id not in gone]
        for fold in batch:
            if fold.failure.event_id in gone:
                self._remediator.settled.forget(fold.incident_id)
                self._usual(fold)
        if written:
            self._done(BatchDone([(f.topic, f.partition, f.offset) for f in written]))
            self._outcomes.handled("failure", time.monotonic() - started, len(written))
            self._outcomes.settled_together(Counter({"duplicate": len(written)}))
