"""A retention gap's backfill (consumer/runtime/gaps.py): the lost range re-read from the source and sent through
the live path, then a reconcile sweep of every window from now; then the partition's commit moves again. One side
thread fills the gaps found together — a retention cut reaches every partition it lags on, and the source's rows
carry no partition — with one read of their joint time range and one sweep (a gap found while a fill runs goes
into the next); stopping leaves the gaps for the next owner (their commits are still below them)."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from consumer.config import RuntimeSettings
from consumer.operations.reconcile import Sweep, reconcile
from consumer.redact import redact
from consumer.runtime.gaps import Gap, first_retained_time
from consumer.runtime.rideout import RideOut
from consumer.runtime.scheduler import KeyedScheduler
from consumer.runtime.work import Abandoned, WakeUp
from consumer.telemetry import Metrics
from handlers import store
from handlers.detect import DetectionRules
from schemas.records import Mode
from schemas.rows import ObservabilityEvent

log = logging.getLogger("allocguard.runtime")


class Backfill:
    def __init__(
        self,
        settings: RuntimeSettings,
        kafka_config: dict[str, Any],
        connect: Callable[[], AbstractContextManager[psycopg.Connection[Any]]],
        rules: DetectionRules,
        scheduler: KeyedScheduler,
        handle: Callable[[ObservabilityEvent, str], None],
        ride: RideOut,
        metrics: Metrics,
        stop: threading.Event,
        *,
        filled: Callable[[Gap], None],
    ) -> None:
        self._settings = settings
        self._kafka_config = kafka_config
        self._connect = connect
        self._rules = rules
        self._scheduler = scheduler
        #: the live path's handling of one event (a work body)
        self._handle = handle
        self._ride = ride
        self._metrics = metrics
        self._stop = stop
        self._filled = filled
        self._lock = threading.Lock()
        #: gaps found and not yet taken by a fill
        self._pending: list[Gap] = []
        self._running = False

    def start(self, gap: Gap) -> None:
        """A gap to fill: with the others found meanwhile (within ``linger_s`` of the first), by the fill thread."""
        with self._lock:
            self._pending.append(gap)
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._fill_all, name="allocguard-backfill", daemon=True).start()

    def _fill_all(self, linger_s: float = 0.5) -> None:
        while True:
            self._stop.wait(linger_s)  # the other partitions' gaps of the same cut
            with self._lock:
                gaps, self._pending = self._pending, []
                if not gaps or self._stop.is_set():
                    self._running = False
                    return
            try:
                self.run(gaps)
            except Exception:  # a bug: these gaps stay open (their commits below them), the next ones still fill
                log.exception("filling the gap(s) in %s failed", ", ".join(g.where for g in gaps))

    def run(self, gaps: list[Gap]) -> None:
        settings = self._settings
        now = datetime.now(UTC)
        until = max(first_retained_time(self._kafka_config, g.topic, g.partition, g.lost_to) or now for g in gaps)
        since = min(g.since or until - timedelta(seconds=settings.backfill_window_s) for g in gaps)
        margin = timedelta(minutes=1)  # Connect's clock (Kafka timestamps) and PostgreSQL's may differ a little
        rules = self._rules
        kinds = [(rule.source, rule.event_type) for rule in rules.failures] + [
            (rules.hold.source, rules.hold.event_type)
        ]
        where = ", ".join(g.where for g in gaps)
        sources = [g.topic for g in gaps if g.topic.endswith(".public.observability_events")]
        events: list[ObservabilityEvent] = []
        if sources:

            def read() -> list[ObservabilityEvent]:
                with self._connect() as conn:
                    rows = store.signal_events_between(conn, since - margin, until + margin, kinds)
                return [ObservabilityEvent.model_validate(row) for row in rows]

            found = self._ride.until_through(read, f"the backfill of {where}")
            if found is None:
                return
            events = found
        failed = self._through_live_path(events)
        if failed is None:
            return
        mode = Mode(settings.mode)

        def sweep() -> Sweep:
            return reconcile(
                settings,
                restaurant=None,
                since=None,
                until=None,
                apply=mode is Mode.AUTO,
                release_stale=False,
                actor="allocguard (gap backfill)",
                artifacts_dir=settings.artifacts_dir,
            )

        swept = self._ride.until_through(sweep, f"the reconcile sweep after the gap in {where}")
        if swept is None:
            return
        self._metrics.backfilled.add(len(events), {"topic": sources[0] if sources else gaps[0].topic})
        together = f" (one read and one sweep for the {len(gaps)} gaps {where})" if len(gaps) > 1 else ""
        for gap in gaps:  # one line per gap: what an SRE greps for names its partition
            (log.error if failed else log.info)(
                "gap in %s handled: %d signal events re-read from observability_events (%s .. %s)%s; reconcile "
                "sweep (%s): %d finding(s), %d pruned%s",
                gap.where,
                len(events),
                (since - margin).isoformat(),
                (until + margin).isoformat(),
                f", {len(failed)} could not be handled: {', '.join(failed[:10])}" if failed else "",
                "applied" if mode is Mode.AUTO else "reported",
                len(swept.findings),
                swept.pruned,
                together,
            )
            self._filled(gap)

    def _through_live_path(self, events: list[ObservabilityEvent]) -> list[str] | None:
        """Each event as live work of its booking (in order with the booking's own events; background lane, so
        live traffic goes first); the ids that failed, or None when stopping before they were all done."""
        if not events:
            return []
        remaining = [len(events)]
        lock, finished = threading.Lock(), threading.Event()
        failed: list[str] = []

        def handle(event: ObservabilityEvent, key: str) -> None:
            try:
                self._handle(event, key)
            except Abandoned:
                raise
            except Exception as exc:
                failed.append(str(event.id))
                log.error("backfilled event %s could not be handled: %s", event.id, redact(str(exc)))
            finally:
                with lock:
                    remaining[0] -= 1
                    if not remaining[0]:
                        finished.set()

        for event in events:
            key = str(event.booking_id) if event.booking_id is not None else f"event:{event.id}"
            self._scheduler.submit(WakeUp(key=key, run=functools.partial(handle, event, key)))
        while not finished.wait(0.5):
            if self._stop.is_set():
                return None
        return failed
