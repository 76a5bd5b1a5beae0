"""``allocguard run``: the always-on consumer of the platform's Debezium topics — the composition root that wires
the runtime's parts, and the poll loop.

The hot loop stays short: consume a batch, hand it to the dispatcher (decode, route), complete what finished,
store the offsets of what is done, apply backpressure. Work for one booking runs in order; different bookings run
concurrently on a bounded pool, so a booking in a long backoff never holds up the others on its partition. The
offset stored for a partition is the highest *contiguous* completed one, and only after the event's effects are
durable (the remediation's own transactions, a DLQ delivery acknowledged by the broker). Undecodable messages go
to the dead-letter topic with the reason; the loop keeps going. docs/architecture.md draws the parts and threads.
"""

from __future__ import annotations

import json
import logging
import queue
import signal
import threading
import time
from contextlib import AbstractContextManager
from datetime import timedelta
from http.server import ThreadingHTTPServer
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, Producer
from opentelemetry import trace

from consumer.config import RuntimeSettings
from consumer.runtime.backfill import Backfill
from consumer.runtime.clients import (
    base_config,
    client,
    connection_pool,
    consumer_config,
    producer_config,
    topic_ids,
)
from consumer.runtime.deadletter import DeadLetters
from consumer.runtime.dispatch import Dispatcher
from consumer.runtime.folds import Folds
from consumer.runtime.gauges import StateRefresher, heartbeat_age
from consumer.runtime.gauges import register_runtime as register_runtime_gauges
from consumer.runtime.health import _UNREACHABLE, Health, Outage, kafka_log, serve_health
from consumer.runtime.jobs import Jobs, build_remediator
from consumer.runtime.notify import Notifier
from consumer.runtime.offsets import OffsetTracker
from consumer.runtime.outcomes import Outcomes
from consumer.runtime.partitions import Partitions
from consumer.runtime.preflight import preflight
from consumer.runtime.rideout import RideOut
from consumer.runtime.routing import poll_batches_gc
from consumer.runtime.scheduler import KeyedScheduler
from consumer.runtime.services import Probe, WakeUps
from consumer.runtime.shutdown import Budget, close_within, commit_and_close
from consumer.runtime.work import Abandoned, BatchDone, Completion, Event, FatalRuntimeError
from consumer.telemetry import Metrics, Telemetry
from handlers.errors import infrastructure_cause
from handlers.prevent import AssignmentIndex, Guard
from schemas.records import Mode

log = logging.getLogger("allocguard.runtime")

__all__ = ["Abandoned", "FatalRuntimeError", "Runtime", "run"]


class Runtime:
    """Wires the parts (each owns its state; docs/architecture.md), runs the poll loop, shuts down in one budget."""

    def __init__(self, settings: RuntimeSettings, *, once: bool = False) -> None:
        self.settings = settings
        self.once = once
        self.health = Health()
        self.tracker = OffsetTracker()
        #: finished work handed back to the loop (the tracker and the consumer are the loop's alone)
        self.completions: queue.Queue[Completion] = queue.Queue()
        self._stop = threading.Event()
        self._stopping_since: float | None = None
        self._fatal: BaseException | None = None
        #: progress, for benchmarks and the exit log: first message seen, last offset completed, count
        self.stats: dict[str, float] = {"first_at": 0.0, "last_done_at": 0.0, "completed": 0}
        self.pool = connection_pool(settings)
        pool = self.pool

        def connect() -> AbstractContextManager[psycopg.Connection[Any]]:
            return pool.connection(timeout=10.0)

        self._connect = connect
        self.telemetry = Telemetry()
        self.metrics = Metrics()
        self.db_outage = Outage("database", lambda: self.metrics.outages.add(1, {"dependency": "database"}))
        self.kafka_outage = Outage("kafka", lambda: self.metrics.outages.add(1, {"dependency": "kafka"}))
        self.health.database, self.health.kafka = self.db_outage, self.kafka_outage
        self.ride = RideOut(self.health, self._stop, pool)
        self.remediator = build_remediator(settings, connect, self.telemetry, sleep=self.ride.sleep)
        self.scheduler = KeyedScheduler(settings.workers, self.completions.put)
        self.assignments = AssignmentIndex(settings.assignment_index_size)
        self.guard = (
            Guard(
                connect,
                mode=Mode(settings.mode),
                grace=timedelta(seconds=settings.grace_s),
                policy=settings.policy(),
                trace=_current_trace_ids,
            )
            if settings.prevention
            else None
        )
        self.jobs = Jobs(self.remediator, self.guard, self.ride, Outcomes(self.metrics))
        self.consumer = client(Consumer, consumer_config(settings, self._kafka_error))
        self.producer = client(Producer, producer_config(settings, self._kafka_error))
        self.backfill = Backfill(
            settings,
            {**base_config(settings), "logger": kafka_log},
            connect,
            self.remediator.rules,
            self.scheduler,
            self.jobs.event,
            self.ride,
            self.metrics,
            self._stop,
            filled=lambda gap: self.partitions.gaps.filled(gap),
        )
        self.partitions = Partitions(
            self.consumer,
            settings,
            self.health,
            self.tracker,
            self.metrics,
            self.kafka_outage,
            stats=self.stats,
            drain=self._drain,
            stop=self._stop,
            on_gap=self.backfill.start,
            describe=topic_ids(base_config(settings)),
        )
        self.dead_letters = DeadLetters(
            self.producer,
            settings.resolved_dlq(),
            self.telemetry,
            self.metrics,
            done=self.partitions.complete,
            fatal=self._fail,
        )
        self.dispatcher = Dispatcher(
            settings,
            remediator=self.remediator,
            jobs=self.jobs,
            folds=lambda usual: Folds(
                self.remediator,
                connect,
                self.ride,
                self.jobs.outcomes,
                done=self.completions.put,
                usual=usual,
                linger_s=settings.batch_linger_s,
            ),
            scheduler=self.scheduler,
            partitions=self.partitions,
            dead_letters=self.dead_letters,
            assignments=self.assignments,
            telemetry=self.telemetry,
            completed=self.completions.put,
            stop=self._stop,
        )
        self.state = StateRefresher(
            settings.resolved_dsn(),
            lambda: heartbeat_age(settings),
            self._stop,
            refresh_s=settings.metrics_refresh_s,
            options=settings.pg_connect_kwargs(),
        )

    def _kafka_error(self, error: KafkaError) -> None:
        """Only librdkafka's fatal errors end the process; brokers out of reach are an outage, logged once per
        state change, that the client rides out by itself."""
        if error.fatal():
            self._fail(FatalRuntimeError(f"fatal Kafka error: {error}"))
        elif error.code() in _UNREACHABLE:
            self.kafka_outage.down(error.str())
        else:
            kafka_log.warning("kafka: %s", error)

    def _fail(self, error: FatalRuntimeError) -> None:
        self._fatal = error
        self._stop.set()

    # -- the loop --

    def _drain(self, timeout: float = 0.0) -> None:
        """Complete what finished: an event's offset (after its dead letter, if it failed); a batch's events."""
        try:
            work = self.completions.get(timeout=timeout) if timeout else self.completions.get_nowait()
        except queue.Empty:
            return
        partitions = self.partitions
        while True:
            if isinstance(work, BatchDone):
                for where in work.events:
                    partitions.complete(*where)
            else:
                if work.span is not None:
                    self.telemetry.end(work.span, work.error)
                error = work.error
                if error is not None and (isinstance(error, Abandoned) or infrastructure_cause(error) is not None):
                    pass  # only while stopping: the event stays uncommitted and is redelivered after restart
                elif isinstance(work, Event):
                    if work.handed_over:
                        pass  # the folds complete it once written
                    elif error is not None and work.message is not None:
                        # a bug or a permanent refusal: the event goes to the DLQ with the reason, then counts as done
                        self.dead_letters.send(work.message, error)
                    else:
                        partitions.complete(work.topic, work.partition, work.offset)
            try:
                work = self.completions.get_nowait()
            except queue.Empty:
                partitions.store()
                return

    def _close_telemetry(self) -> None:
        self.telemetry.shutdown()
        self.metrics.shutdown()

    def request_stop(self, *_: object) -> None:
        if self._stopping_since is None:
            self._stopping_since = time.monotonic()
        self._stop.set()

    def run(self) -> int:
        settings = self.settings
        log.info("starting with %s", json.dumps(settings.redacted(), default=str))
        server = serve_health(settings, self.health, self.metrics.exposition)  # /readyz says what is awaited
        try:
            preflight(settings, self.health, self._stop)
        except BaseException:
            server.shutdown()
            server.server_close()
            raise
        if self._stop.is_set():  # stopped while waiting for a dependency: nothing was started
            self._shutdown(server)
            return 0
        self.pool.open(wait=False)
        Probe(
            self._stop, settings, self.db_outage, self.kafka_outage, self.ride.back, fetches=self.partitions.fetches
        ).start()
        register_runtime_gauges(
            self.metrics,
            settings,
            self.health,
            paused=lambda: self.partitions.paused,
            last_event_at=lambda: self.dispatcher.last_event_at,
            state=self.state,
        )
        self.state.start()
        if self.guard is not None:
            with self._connect() as conn:
                primed = self.assignments.prime(conn)
            log.info("prevention on: %d assignment rows indexed (key-only deletes are named from it)", primed)
        acts = Mode(settings.mode).acts
        if acts or self.guard is not None:
            WakeUps(
                self._stop,
                self._connect,
                self.health,
                self.scheduler,
                self.jobs,
                incidents=acts,
                flags=self.guard is not None,
            ).start()
        if settings.decision_targets():
            Notifier(self._stop, self._connect, settings, self.metrics).start()
        partitions, dispatcher, consumer, health = self.partitions, self.dispatcher, self.consumer, self.health
        partitions.subscribe()
        idle_since = producer_polled = time.monotonic()
        backlog = False
        try:
            with poll_batches_gc():  # the loop holds a poll batch of messages at a time
                while not self._stop.is_set():
                    health.last_loop = time.monotonic()
                    # poll returns as soon as one message is there; consume(timeout=0) then takes what is buffered
                    # (consume with a timeout would wait it out whenever fewer than num_messages are available).
                    # Behind a backlog (the last batch was full) what is buffered is taken at once: one call, one
                    # GIL hand-over a turn instead of two; an empty take falls back to the waiting poll
                    messages = consumer.consume(num_messages=1000, timeout=0) if backlog else []
                    if not messages:
                        first = consumer.poll(0.1)
                        messages = [first, *consumer.consume(num_messages=999, timeout=0)] if first is not None else []
                    backlog = len(messages) >= 1000
                    if messages:
                        dispatcher.take(messages)
                    if partitions.gaps.unpositioned:
                        partitions.gaps.reposition()
                    self._drain()
                    partitions.store()
                    partitions.backpressure()
                    partitions.watch_group()
                    partitions.watch_fetch()
                    partitions.sample_lag()
                    # the producer only sends dead letters: its delivery reports are served while any is on its
                    # way, and its errors once a second — not a GIL hand-over on every turn of the loop
                    if len(self.producer) or health.last_loop - producer_polled > 1.0:
                        self.producer.poll(0)
                        producer_polled = health.last_loop
                    if self.once:
                        if messages or self.tracker.in_flight():
                            idle_since = time.monotonic()
                        elif health.assigned and time.monotonic() - idle_since > 2.0:
                            break
            if self._fatal is not None:
                raise self._fatal
        finally:
            self._shutdown(server)
        return 0

    def _shutdown(self, server: ThreadingHTTPServer) -> None:
        """Shutdown is a state with one budget: no new work; in-flight work finishes or, woken by the stop flag in
        its backoff, is abandoned without a verdict (status and offset untouched, so the next owner redoes it);
        what finished is committed; the pool closes last. Every step that can block is bounded by what is left."""
        budget = Budget(self._stopping_since or time.monotonic(), self.settings.shutdown_timeout_s)
        batches, scheduler, folds = self.dispatcher.batches, self.scheduler, self.dispatcher.folds
        batches.close()  # the running batch finishes (it may still place work: the scheduler drops it)
        scheduler.shutdown()
        folds.close()  # what is answered is written once more, if the database takes it
        drain_until = time.monotonic() + budget.left(0.6)
        while (scheduler.busy() or batches.busy() or folds.busy()) and time.monotonic() < drain_until:
            self.producer.poll(0)
            self._drain(timeout=0.05)
        self.producer.flush(min(budget.left(0.3), 5.0))
        self._drain()
        self.partitions.store()
        abandoned = self.tracker.in_flight()
        if abandoned:
            log.warning("%d event(s) abandoned without a verdict: the next owner redoes them", abandoned)
        self._stop.set()  # the background services too (a --once run ends with the flag still down)
        close_within(
            budget,
            [
                ("kafka", lambda: commit_and_close(self.consumer)),
                ("pool", lambda: self.pool.close(timeout=1.0)),
                ("telemetry", self._close_telemetry),
            ],
        )
        server.shutdown()
        server.server_close()
        log.info("stopped in %.2fs", time.monotonic() - budget.began)


def run(settings: RuntimeSettings, *, once: bool = False) -> int:
    runtime = Runtime(settings, once=once)
    signal.signal(signal.SIGTERM, runtime.request_stop)
    signal.signal(signal.SIGINT, runtime.request_stop)
    return runtime.run()


def _current_trace_ids() -> tuple[str, str] | None:
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
