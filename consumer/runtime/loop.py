"""``allocguard run``: the always-on consumer of the platform's Debezium topics.

The hot loop stays short: consume a batch, decode, route, store the offsets of what is done, apply
backpressure. Work for one booking runs in order; different bookings run concurrently on a bounded pool, so a
booking in a long backoff never holds up the others on its partition. The offset stored for a partition is the
highest *contiguous* completed one, and only after the event's effects are durable (the remediation's own
transactions, a DLQ delivery acknowledged by the broker). Undecodable messages go to the dead-letter topic with
the reason; the loop keeps going.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from typing import Any, TypeVar, cast
from uuid import UUID

import psycopg
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from opentelemetry import trace
from opentelemetry.trace import Span
from psycopg_pool import ConnectionPool, PoolTimeout

from consumer.config import ConfigurationError, RuntimeSettings
from consumer.operations.check import Status, run_checks
from consumer.operations.reconcile import Sweep, reconcile
from consumer.redact import redact
from consumer.runtime.gaps import Gap, first_retained_time, handled_at, handled_metadata
from consumer.runtime.gauges import StateRefresher
from consumer.runtime.gauges import register as register_gauges
from consumer.runtime.health import _UNREACHABLE, Health, Outage, kafka_log, serve_health
from consumer.runtime.offsets import OffsetTracker
from consumer.runtime.routing import (
    DeadLetter,
    Relevance,
    Signal,
    Skip,
    Watched,
    byte_test_is_native,
    poll_batches_gc,
    route,
)
from consumer.runtime.scheduler import KeyedScheduler, SignalBatches, Work
from consumer.telemetry import Metrics, Telemetry, TracedConnection, TracedCursor, span_ids, traced_send
from consumer.version import version
from handlers import store
from handlers.detect import FailureSeen, HoldSeen
from handlers.errors import infrastructure_cause, is_contention
from handlers.pipeline import (
    Hooks,
    IncidentResult,
    RemediationSettings,
    Remediator,
    failure_attributes,
    hold_attributes,
)
from handlers.prevent import AssignmentIndex, Flagged, Guard, claim_due_flags
from handlers.retry import AssignStrategy, Attempt, HttpAssign, RetryPolicy, SqlAssign
from schemas.envelope import HEARTBEAT_TOPIC_PREFIX
from schemas.errors import CdcDecodeError
from schemas.records import Mode
from schemas.rows import ObservabilityEvent

log = logging.getLogger("allocguard.runtime")
_Client = TypeVar("_Client", Consumer, Producer)
_T = TypeVar("_T")

#: the pseudo-topic of wake-up work (no Kafka offset to store when it completes)
_WAKEUP = "allocguard.wakeup"
#: the pseudo-topic of a batch's completions
_BATCH = "allocguard.batch"


def _nothing() -> None:
    pass


#: the pool's reconnection attempts for a lost connection stop after this long (the next is the probe's)
_RECONNECT_GIVE_UP_S = 2.0

#: how much of a value a truncated dead-letter copy keeps
_DLQ_TRUNCATE = 64 * 1024


class Abandoned(RuntimeError):
    """Work given up because the process is stopping: no verdict, no dead letter, no offset."""


class FatalRuntimeError(RuntimeError):
    """Kafka or the database failed in a way riding it out cannot fix: exit non-zero, let the orchestrator
    restart us."""

    retryable = False


def _header_list(message: Message) -> list[tuple[str, bytes]]:
    headers = message.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    return [(str(name), value if isinstance(value, bytes) else str(value or "").encode()) for name, value in pairs]


def _group_protocol(given: dict[str, str]) -> dict[str, str | int]:
    """The consumer group protocol and what it needs. KIP-848's ``consumer`` protocol (the default; Kafka ≥ 4.0):
    a member keeps its partitions through a broker outage shorter than the group's session timeout, and one whose
    session did expire rejoins with its own member id and is assigned at once — the classic protocol lost the
    partitions 6 s into an outage, and the coordinator, back, waited out the old membership (≈ 6 s) before
    assigning them again. Its session timeout and heartbeat are the broker's (``group.consumer.session.timeout.ms``,
    45 s by default; per group: ``consumer.session.timeout.ms``). ``group.protocol=classic`` (brokers before 4.0)
    gets cooperative-sticky assignment and a 6 s session (the broker's minimum), overridable."""
    if given.get("group.protocol", "consumer").lower() == "consumer":
        return {"group.protocol": "consumer"}
    return {
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
    }


def _failpoints() -> Hooks:
    """Crash points for the kill -9 tests (SIGKILL, deterministic): ``ALLOCGUARD_FAILPOINT=after_prune`` right
    after a prune commits; ``after_assign`` right after the retry's assignment commits, before the incident's
    final state and the processed marker are written."""
    point = os.environ.get("ALLOCGUARD_FAILPOINT")

    def crash() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def attempted(attempt: Attempt) -> None:
        log.info("auto-assign attempt %d (waited %.1fs): %s", attempt.number, attempt.waited_s, attempt.outcome)
        if point == "after_assign" and attempt.outcome == "assigned":
            crash()

    if point == "after_prune":
        return Hooks(on_attempt=attempted, on_pruned=lambda result: crash() if result.status == "pruned" else None)
    return Hooks(on_attempt=attempted)


def _client(kind: Callable[[dict[str, Any]], _Client], config: dict[str, Any]) -> _Client:
    """A Kafka client; a property librdkafka refuses (ALLOCGUARD_KAFKA_CONFIG) is a configuration error."""
    try:
        return kind(config)
    except KafkaException as exc:
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        reason = error.str() if error is not None else str(exc)
        if "group.protocol=consumer" in reason:
            reason += ' (allocguard uses KIP-848\'s consumer protocol; "group.protocol": "classic" for the classic one)'
        raise ConfigurationError(f"ALLOCGUARD_KAFKA_CONFIG: {reason}") from None


# ---- the consumer ----------------------------------------------------------------------------------


class Runtime:
    def __init__(self, settings: RuntimeSettings, *, once: bool = False) -> None:
        self.settings = settings
        self.once = once
        self.health = Health()
        self.tracker = OffsetTracker()
        self._completions: queue.Queue[Work] = queue.Queue()
        self._stop = threading.Event()
        self._stopping_since: float | None = None
        self._paused = False
        #: when partitions were last lost to a session timeout, until the next assignment (see _watch_group)
        self._lost_at: float | None = None
        #: candidates decoded in the current poll batch, by (topic, op): the events counter moves once per batch
        self._routed: Counter[tuple[str, str]] = Counter()
        #: whether the current poll batch is a backlog's (signals batched) or a caught-up stream's (sent on at once)
        self._batching = False
        #: the batch thread's record of the batch's messages already placed (completed or submitted)
        self._placed: set[int] = set()
        #: hold announcements and failures whose bookings had nothing in flight: handled many at a time
        self.batches: SignalBatches[tuple[Signal, Message, Span]] = SignalBatches(
            self._handle_batch, lambda item: item[0].key, linger_s=settings.batch_linger_s
        )
        self.pool = ConnectionPool(
            settings.resolved_dsn(),
            min_size=1,
            max_size=settings.workers + 3,  # + the probe, the wake-ups and the loop's batched hold writes
            kwargs={
                "autocommit": True,
                "connect_timeout": 5,
                "cursor_factory": TracedCursor,
                **settings.pg_connect_kwargs(),
            },
            connection_class=TracedConnection,
            # give up a reconnection after a short while instead of backing off for minutes (1, 2, 4, 8, 16 s…):
            # the probe sees the database back within a second and starts a fresh attempt (_database_back)
            reconnect_timeout=_RECONNECT_GIVE_UP_S,
            configure=store.use_orjson,
            open=False,
            name="allocguard",
        )
        pool = self.pool

        def connect() -> AbstractContextManager[psycopg.Connection[Any]]:
            return pool.connection(timeout=10.0)

        self._connect = connect
        strategy: AssignStrategy = (
            HttpAssign(
                settings.assign_endpoint.get_secret_value(),
                connect,
                headers=settings.assign_header_values(),
                send=traced_send,
            )
            if settings.strategy == "http" and settings.assign_endpoint is not None
            else SqlAssign(connect)
        )
        self.telemetry = Telemetry()
        self.metrics = Metrics()
        self._last_event_at: float | None = None
        self.state = StateRefresher(
            settings.resolved_dsn(),
            self._heartbeat_age,
            self._stop,
            refresh_s=settings.metrics_refresh_s,
            options=settings.pg_connect_kwargs(),
        )
        self.db_outage = Outage("database", lambda: self.metrics.outages.add(1, {"dependency": "database"}))
        self.kafka_outage = Outage("kafka", lambda: self.metrics.outages.add(1, {"dependency": "kafka"}))
        self.health.database, self.health.kafka = self.db_outage, self.kafka_outage
        self._lag_sampled_at = 0.0
        #: where each partition started at assignment: the position until something is consumed there
        self._starts: dict[tuple[str, int], int] = {}
        hooks = _failpoints()
        hooks.span = self.telemetry.span
        self.remediator = Remediator(
            connect,
            strategy,
            RemediationSettings(
                mode=Mode(settings.mode),
                grace=timedelta(seconds=settings.grace_s),
                artifacts_dir=settings.artifacts_dir,
                # hold conflicts wait in the delay queue (a due time, the wake-up thread), not in a worker
                retry=RetryPolicy(defer_hold_conflicts=True),
                policy=settings.policy(),
            ),
            hooks=hooks,
            sleep=self._sleep_unless_stopping,
        )
        self.scheduler = KeyedScheduler(settings.workers, self._completions.put)
        self._relevant = Relevance(self.remediator.rules, watch=settings.prevention)
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
        # back from a broker outage within a second of the broker (librdkafka's default backoff grows to 10 s)
        base = {
            "bootstrap.servers": settings.resolved_bootstrap(),
            "reconnect.backoff.max.ms": 1000,
            **settings.librdkafka(),
        }
        self.consumer = _client(
            Consumer,
            {
                **base,
                "group.id": settings.group_id,
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,
                "auto.commit.interval.ms": 1000,
                # never jump on its own (librdkafka's fallback would skip to the end of a partition whose committed
                # offset retention deleted): _on_assign positions every partition, _reposition handles a reset
                "auto.offset.reset": "error",
                "fetch.wait.max.ms": 10,
                # a backlog must not starve the loop: librdkafka's default waits 1 s before refilling the queue
                "fetch.queue.backoff.ms": 10,
                "queued.max.messages.kbytes": 262144,
                **_group_protocol(settings.librdkafka()),
                **({"group.instance.id": settings.instance_id} if settings.instance_id else {}),
                **settings.librdkafka(),
                "error_cb": self._kafka_error,
                "logger": kafka_log,
            },
        )
        # the DLQ is rare traffic: one message per batch, so a copy the topic refuses as too large (the limit applies
        # to the whole batch) never takes its neighbours down with it
        self.producer = _client(
            Producer,
            {
                **base,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "batch.num.messages": 1,
                "error_cb": self._kafka_error,
                "logger": kafka_log,
            },
        )
        self._fatal: BaseException | None = None
        #: retention gaps being backfilled (their partitions' commits are held below the gap until done)
        self._gaps: dict[tuple[str, int], Gap] = {}
        self._gaps_done: queue.SimpleQueue[tuple[str, int]] = queue.SimpleQueue()
        #: partitions librdkafka could not position (out of range during the run): partition → requested offset
        self._unpositioned: dict[tuple[str, int], int] = {}
        #: per partition, (offset, Kafka timestamp ms) of a message read: a time at or before what is handled
        self._marks: dict[tuple[str, int], tuple[int, int]] = {}
        #: per partition, the handled time last stored with its offset
        self._handled_ms: dict[tuple[str, int], int] = {}
        self._kafka_base = {**base, "logger": kafka_log}
        #: how many times a dependency came back: a ride-out waiting out its back-off retries at once when it moves
        self._recoveries = 0
        #: progress, for benchmarks and the exit log: first message seen, last offset completed, count
        self.stats: dict[str, float] = {"first_at": 0.0, "last_done_at": 0.0, "completed": 0}
        self._positions: dict[tuple[str, int], int] = {}

    # -- kafka callbacks --

    def _kafka_error(self, error: KafkaError) -> None:
        """Only librdkafka's fatal errors end the process; brokers out of reach are an outage, logged once per
        state change, that the client rides out by itself."""
        if error.fatal():
            self._fatal = FatalRuntimeError(f"fatal Kafka error: {error}")
            self._stop.set()
        elif error.code() in _UNREACHABLE:
            self.kafka_outage.down(error.str())
        else:
            kafka_log.warning("kafka: %s", error)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Every partition starts where it should *now*: at its committed offset; a new group's at the end
        (``latest``: once ready, no event written afterwards is skipped) or the beginning. A committed offset the
        log no longer holds (retention ran, the topic was re-created) is found by the first fetch: reading resumes
        at the earliest retained record — never the end — and the lost range is backfilled (_reposition,
        consumer/runtime/gaps.py)."""
        try:
            positioned = consumer.committed(partitions, timeout=10)
        except KafkaException as exc:
            # the coordinator is out of reach: librdkafka resolves the positions itself when it is back (a position
            # out of range then comes back as _AUTO_OFFSET_RESET: _reposition)
            self.kafka_outage.down(f"committed offsets unavailable at assignment: {exc}")
            consumer.incremental_assign(partitions)
            self.health.assigned |= {(p.topic, p.partition) for p in partitions}
            self._lost_at = None
            return
        fresh: list[TopicPartition] = []
        now_ms = int(time.time() * 1000)
        for partition in positioned:
            handled = handled_at(partition.metadata)
            if handled is not None:  # carried forward with every commit until a later time is known
                self._handled_ms[(partition.topic, partition.partition)] = int(handled.timestamp() * 1000)
            if partition.offset >= 0:
                # a committed offset the log no longer holds comes back from the first fetch as
                # _AUTO_OFFSET_RESET (auto.offset.reset=error): _reposition names the gap and fills it
                continue
            try:
                low, high = (int(mark) for mark in consumer.get_watermark_offsets(partition, timeout=10))
            except KafkaException:  # librdkafka resolves it: _AUTO_OFFSET_RESET, then _reposition
                partition.offset = OFFSET_END if self.settings.auto_offset_reset == "latest" else OFFSET_BEGINNING
                continue
            partition.offset = high if self.settings.auto_offset_reset == "latest" else low
            start = TopicPartition(partition.topic, partition.partition, partition.offset)
            if self.settings.auto_offset_reset == "latest":  # everything written from now on is ours
                start = self._stored((partition.topic, partition.partition), partition.offset, now_ms)
            fresh.append(start)
        consumer.incremental_assign(positioned)
        if fresh:
            # commit the start at once: should the partition move to another member before anything is
            # processed here, that member resumes from this point instead of skipping to a later end
            try:
                consumer.commit(offsets=fresh, asynchronous=False)
            except KafkaException as exc:
                log.warning("could not commit start positions %s: %s", fresh, exc)
        self._starts.update({(p.topic, p.partition): p.offset for p in positioned if p.offset >= 0})
        self.health.assigned |= {(p.topic, p.partition) for p in partitions}
        self._lost_at = None
        log.info("assigned %s", [f"{p.topic}[{p.partition}]@{p.offset}" for p in positioned])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Finish (within a bound) the work of the revoked partitions, store and commit their offsets."""
        revoked = {(p.topic, p.partition) for p in partitions}
        deadline = time.monotonic() + self.settings.revoke_timeout_s
        # while stopping, the shutdown already waited for what could finish: the rest is abandoned, not awaited
        while (
            not self._stop.is_set()
            and any(self.tracker.in_flight(t, p) for t, p in revoked)
            and time.monotonic() < deadline
        ):
            self._drain_completions(timeout=0.05)
        unfinished = [f"{t}[{p}]" for t, p in revoked if self.tracker.in_flight(t, p)]
        if unfinished:
            log.warning("revoked with work still in flight (not committed): %s", unfinished)
        self._store_positions()
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit on revoke failed: %s", exc)
        for topic, partition in revoked:
            self._forget_gap((topic, partition))
            self.tracker.forget(topic, partition)
            self._starts.pop((topic, partition), None)
            self.metrics.lag.pop((topic, partition), None)
        self.health.assigned -= revoked

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {(p.topic, p.partition) for p in partitions}
        for topic, partition in lost:
            self._forget_gap((topic, partition))
            self.tracker.forget(topic, partition)
            self._starts.pop((topic, partition), None)
            self.metrics.lag.pop((topic, partition), None)
        self.health.assigned -= lost
        self._lost_at = time.monotonic()
        log.warning("partitions lost (no commit): %s", sorted(lost))

    # -- routing --

    def _take(self, messages: list[Message]) -> None:
        """One poll batch. Most CDC events cannot be signals: the byte test rules them out unread, they are
        counted per batch (not per message), and each partition's read position moves once per batch. Only
        candidates pay for a decode, and only signals and dead letters for a span and offset bookkeeping."""
        self._last_event_at = time.time()
        batch = self._relevant.select(messages)
        # a backlog (a full poll) is worth batching; a caught-up stream sends each signal on at once (latency)
        self._batching = len(messages) >= self.settings.batch_backlog
        for message in batch.errors:
            error = message.error()
            assert error is not None
            if error.code() == KafkaError._PARTITION_EOF:
                continue
            if error.code() == KafkaError._AUTO_OFFSET_RESET:
                # the position is out of the log's range (retention ran past it mid-run): fetching has stopped
                self._unpositioned[(message.topic() or "", message.partition() or 0)] = message.offset() or -1
                continue
            if error.fatal():
                raise FatalRuntimeError(f"fatal Kafka error: {error}")
            kafka_log.warning("kafka: %s", error)
        first = messages[0]
        if first.error() is None:  # one mark per poll batch: a time at or before what this partition handled
            _, timestamp_ms = first.timestamp()
            if timestamp_ms > 0:
                self._marks[(first.topic() or "", first.partition() or 0)] = (first.offset() or 0, timestamp_ms)
        routed = self._routed
        for message in batch.candidates:
            self._route(message)
        if routed:  # candidates are counted per batch too, by topic and op
            for (topic, op), count in routed.items():
                self.metrics.events.add(count, {"topic": topic, "op": op})
            routed.clear()
        skipped = batch.skipped
        if skipped and self.health.assigned:
            # how far each partition has been read: the consumer knows (one call per batch, not per message);
            # anything in flight still holds the commit at its own offset
            tracker = self.tracker
            for read in self.consumer.position([TopicPartition(t, p) for t, p in self.health.assigned]):
                if read.offset > 0:
                    where = (read.topic, read.partition)
                    tracker.seen(read.topic, read.partition, read.offset - 1)
                    position = tracker.position(*where)
                    if position is not None:
                        self._positions[where] = position
        done = sum(skipped.values())
        if done:
            if not self.stats["first_at"]:
                self.stats["first_at"] = time.monotonic()
            self.stats["completed"] += done
            self.stats["last_done_at"] = time.monotonic()
            for topic, count in skipped.items():
                self.metrics.events.add(count, {"topic": topic, "op": "prefiltered"})

    def _route(self, message: Message) -> None:
        """A candidate: decoded and classified; a span only for what becomes a signal or a dead letter."""
        topic, partition, offset = message.topic() or "", message.partition() or 0, message.offset() or 0
        if not self.stats["first_at"]:
            self.stats["first_at"] = time.monotonic()
        self.tracker.started(topic, partition, offset)
        routed = route(topic, partition, offset, message.key(), message.value(), self.remediator.rules)
        if isinstance(routed, Skip):
            self._routed[(topic, routed.op)] += 1
            self._done_now(topic, partition, offset)
            return
        span = (
            self.telemetry.consumer_span(
                topic, partition, offset, message.key(), _header_list(message), self.settings.group_id
            )
            if self.telemetry.tracing
            else trace.INVALID_SPAN
        )
        if isinstance(routed, DeadLetter):
            self._dead_letter(message, routed.error, span)
            self.telemetry.end(span, routed.error)
            return
        self._routed[(topic, routed.op)] += 1
        span.set_attribute("allocguard.cdc.op", routed.op)
        if isinstance(routed, Watched):
            # resolved here, in the loop's order: a key-only assignment delete is named by the rows seen before it
            booking = self.assignments.resolve(routed.watch)
            cause = routed.watch.cause
            span.set_attribute("allocguard.signal", "Watch")
            span.set_attribute("allocguard.prevention.cause", cause)
            if booking is not None:
                span.set_attribute("allocguard.booking.id", str(booking))
            watch_key = str(booking) if booking is not None else _SWEEP
            if not self.batches.wait_clear(watch_key, self._stop):
                self.telemetry.end(span)  # stopping: left in flight, uncommitted, for the next owner
                return

            def prevent_in_span() -> None:
                with trace.use_span(span, end_on_exit=False):
                    self._prevent(booking, cause, watch_key)

            self.scheduler.submit(Work(topic, partition, offset, watch_key, prevent_in_span, message, span=span))
            return
        span.set_attribute("allocguard.signal", routed.kind)
        key = routed.key
        batching = self._batching
        if self.batches.offer(key, (routed, message, span), lambda: batching and not self.scheduler.has(key)):
            return
        # caught up (no backlog), or this booking has work in flight (it waits behind it): its own work item
        self._submit_signal(routed, message, span)

    def _handle_batch(self, batch: list[tuple[Signal, Message, Span]]) -> None:
        """A batch of signals (distinct bookings, in the batch thread): a booking whose earlier failure went to a
        worker meanwhile goes behind it; the rest are handled together."""
        holds: list[tuple[Signal, Message, Span]] = []
        failures: list[tuple[Signal, Message, Span]] = []
        self._placed.clear()
        try:
            for item in batch:
                routed = item[0]
                if self.scheduler.has(routed.key):
                    self._send_on(*item)
                elif isinstance(routed.found, HoldSeen):
                    holds.append(item)
                else:
                    failures.append(item)
            self._flush_signals(holds, failures)
        except Exception:  # a bug, not the database (that is handled inside): what is not placed goes the usual way
            log.exception("handling %d signal(s) together failed: each goes the usual way", len(batch))
            for item in batch:
                if id(item[1]) not in self._placed:
                    self._send_on(*item)

    def _flush_signals(
        self, holds: list[tuple[Signal, Message, Span]], failures: list[tuple[Signal, Message, Span]]
    ) -> None:
        """A batch's hold announcements are written, then its failures' first steps read (processed already? the
        hold they name — perhaps one just written — and the booking's window): two statements, one round trip.
        What that settles — a duplicate, a failure with no window to work with — is settled here, as the whole
        path would settle it, without a work item or a statement of its own; every other failure goes the usual
        way (its own work item, which reads those steps again inside its own work). If the round trip fails for
        any reason, every signal of the batch goes the usual way — its own work item, which rides out an
        infrastructure failure without a verdict — so nothing is lost and nothing is dead-lettered."""
        started = time.monotonic()
        tracing = self.telemetry.tracing
        children: list[Span | None] = []
        remembered: list[tuple[HoldSeen, tuple[str, str] | None]] = []
        for routed, _, span in holds:
            found = cast(HoldSeen, routed.found)
            child = None
            if tracing:
                child = self.telemetry.child(span, "allocguard.hold.remembered", hold_attributes(found))
            children.append(child)
            remembered.append((found, span_ids(child)))
        try:
            verdicts = self.remediator.triage([cast(FailureSeen, r.found) for r, _, _ in failures], remembered)
        except Exception as exc:
            log.info("%d signal(s) not handled together (%s): one at a time", len(holds) + len(failures), exc)
            for child in children:
                if child is not None:
                    child.end()
            for item in (*holds, *failures):
                self._send_on(*item)
            return
        took = time.monotonic() - started
        handling = self.metrics.handling
        for (_, _, span), child in zip(holds, children, strict=True):
            if child is not None:
                child.end()
            self.telemetry.end(span)
            handling.record(took, {"signal": "hold"})
        done = [message for _, message, _ in holds]
        outcomes: Counter[str] = Counter()
        for (routed, message, span), result in zip(failures, verdicts, strict=True):
            if result is None:
                self._send_on(routed, message, span)
                continue
            if tracing and result.status != "duplicate":
                attributes = failure_attributes(cast(FailureSeen, routed.found))
                detect = self.telemetry.child(span, "allocguard.detect", attributes)
                if detect is not None:
                    detect.set_attribute("allocguard.outcome.status", result.status)
                    detect.end()
            self.telemetry.end(span)
            handling.record(took, {"signal": "failure"})
            outcomes[result.status] += 1
            self._log_result(routed.key, result)
            done.append(message)
        self._done_later(done)
        for status, count in outcomes.items():  # neither settles an incident: no resolution time to record
            self.metrics.incidents.add(count, {"status": status})

    def _send_on(self, routed: Signal, message: Message, span: Span) -> None:
        """From the batch thread: this signal goes the usual way (its own work item)."""
        self._placed.add(id(message))
        self._submit_signal(routed, message, span)

    def _done_later(self, messages: list[Message]) -> None:
        """From the batch thread: these events are done; the loop completes their offsets (the tracker is the
        loop's alone) — one hand-over for all of them."""
        if not messages:
            return
        self._placed.update(id(m) for m in messages)
        done = [(m.topic() or "", m.partition() or 0, m.offset() or 0) for m in messages]
        self._completions.put(Work(_BATCH, -1, -1, "", _nothing, done=done))

    def _submit_signal(self, routed: Signal, message: Message, span: Span) -> None:
        row, key = routed.row, routed.key

        def run_in_span() -> None:
            with trace.use_span(span, end_on_exit=False):
                self._handle(row, key)

        self.scheduler.submit(
            Work(
                message.topic() or "",
                message.partition() or 0,
                message.offset() or 0,
                key,
                run_in_span,
                message,
                span=span,
            )
        )

    def _record_outcome(self, event: ObservabilityEvent, result: IncidentResult) -> None:
        metrics = self.metrics
        metrics.incidents.add(1, {"status": result.status})
        pruned = {i for prune in result.prunes for i in prune.pruned_ids}
        if result.plans:
            for evidence in result.plans[0].evidence:
                action = (
                    "pruned"
                    if evidence.allocation_id in pruned
                    else ("reported" if evidence.verdict.value == "stale_by_status" else "kept")
                )
                metrics.allocations.add(1, {"verdict": evidence.verdict.value, "action": action})
        for attempt in result.retry.attempts if result.retry else []:
            metrics.attempts.add(1, {"outcome": attempt.outcome})
        if result.status in ("resolved", "not_needed", "manual_review"):
            waited = (datetime.now(UTC) - event.created_at).total_seconds()
            metrics.resolution.record(max(waited, 0.0), {"status": result.status})

    def _ride_out(self, key: str, work: Callable[[], IncidentResult | None]) -> IncidentResult | None:
        """Run ``work`` until it goes through. Contention (a lock, a serialization conflict) backs off this
        booking alone. An infrastructure failure (privilege, missing object, database down) is never a verdict
        and never a dead letter: the event stays in flight (its offset is not committed), the partitions are
        paused while anything is held back, /readyz says why, and the work is tried again — with backoff, as
        long as the process is not stopping — until the cause is fixed. Stopping abandons it without a
        verdict: the next owner of the partition redoes it."""
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
                    if self.health.degrade(key, cause):
                        log.warning("holding back booking %s (not committed, partitions paused): %s", key, cause)
                    reason = cause
                if self._wait_unless_recovered(delay):
                    raise Abandoned(reason) from exc
                delay = min(delay * 2, 5.0)
        if self.health.recover(key):
            log.info("infrastructure recovered; resuming")
        return result

    def _wait_unless_recovered(self, seconds: float) -> bool:
        """A ride-out's back-off: over early when a dependency comes back (the probe counts it), so held work
        resumes within a probe interval of the database or the broker, not at the end of a 5 s back-off.
        True when the process is stopping."""
        seen, end = self._recoveries, time.monotonic() + seconds
        while not self._stop.wait(min(0.05, max(0.0, end - time.monotonic()))):
            if self._recoveries != seen or time.monotonic() >= end:
                return False
        return True

    def _dependency_back(self, name: str) -> None:
        """The probe saw ``name`` come back: wake the ride-outs; for the database, have the pool connect now
        (``check`` discards connections the restart broke and starts growing an empty pool at once)."""
        if name == "database":
            try:
                self.pool.check()
            except Exception as exc:  # the pool is closing, or the database went away again
                log.debug("pool check after the database came back: %s", exc)
        self._recoveries += 1

    def _handle(self, event: ObservabilityEvent, key: str) -> None:
        started = time.monotonic()
        result = self._ride_out(key, lambda: self.remediator.observe(event))
        self.metrics.handling.record(time.monotonic() - started, {"signal": "failure" if result else "hold"})
        if result is not None:
            self._record_outcome(event, result)
            self._log_result(key, result)

    def _prevent(self, booking: UUID | None, cause: str, key: str) -> None:
        """Prevention for one change: check the booking's allocations (or sweep, when the change named none)."""
        guard = self.guard
        assert guard is not None
        found: list[Flagged] = []

        def check() -> None:
            found[:] = guard.check_booking(booking, cause) if booking is not None else guard.sweep(f"{cause}, swept")

        self._ride_out(key, lambda: check())
        for flag in found:
            if flag.new or flag.status in ("pruned", "released"):
                self.metrics.prevention.add(1, {"verdict": flag.evidence.verdict.value, "status": flag.status})
            if flag.status != "cleared" and (flag.new or flag.status in ("pruned", "released")):
                log.info(
                    "prevention (%s): allocation %s of booking %s on table %s is %s: %s%s",
                    cause,
                    flag.evidence.allocation_id,
                    flag.evidence.booking_id,
                    flag.evidence.table_id,
                    flag.evidence.verdict.value,
                    flag.status,
                    f" (due {flag.due_at.isoformat()})" if flag.due_at else "",
                )

    def _log_result(self, key: str, result: IncidentResult) -> None:
        pruned = [str(i) for prune in result.prunes for i in prune.pruned_ids]
        due = f"; planned again at {result.recheck_at.isoformat()}" if result.recheck_at else ""
        log.info(
            "booking %s: %s (%s)%s%s",
            key,
            result.status,
            result.reason,
            f"; pruned orphan allocation(s) {', '.join(pruned)}" if pruned else "",
            due,
        )

    def _wake_due(self, every_s: float = 1.0, lease: timedelta = timedelta(seconds=60)) -> None:
        """A side thread: waits that fell due (a young blocker's grace ended, an owner's hold expired) are
        claimed from the database — one instance per incident — and planned again on the keyed scheduler, in
        order with that booking's events. Nothing here needs a new platform event, and the due times survive
        restarts because they live in ``allocguard.incidents``."""
        instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        failing = False
        expired_at = 0.0
        while not self._stop.wait(every_s):
            if self.health.degraded:
                continue  # held back already: the held work comes first
            try:
                with self._connect() as conn:
                    due = store.claim_due(conn, instance, lease) if Mode(self.settings.mode).acts else []
                    flagged = claim_due_flags(conn, instance, lease) if self.guard is not None else []
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

                def recheck(incident_id: UUID = incident_id, key: str = key) -> None:
                    result = self._ride_out(key, lambda: self.remediator.recheck(incident_id))
                    if result is not None:
                        self.metrics.incidents.add(1, {"status": result.status})
                        self._log_result(key, result)

                self.scheduler.submit(Work(_WAKEUP, -1, -1, key, recheck, background=True))
            for booking in flagged:
                key = str(booking)

                def grace_ended(booking: UUID = booking, key: str = key) -> None:
                    self._prevent(booking, "grace ended", key)

                self.scheduler.submit(Work(_WAKEUP, -1, -1, key, grace_ended, background=True))

    def _done_now(self, topic: str, partition: int, offset: int) -> None:
        """Nothing to do for this event (or its DLQ copy is acknowledged): complete it in the loop."""
        self._complete(topic, partition, offset)

    def _complete(self, topic: str, partition: int, offset: int) -> None:
        if (topic, partition) not in self.health.assigned:
            return
        self.stats["completed"] += 1
        self.stats["last_done_at"] = time.monotonic()
        self.tracker.completed(topic, partition, offset)
        position = self.tracker.position(topic, partition)
        if position is not None:
            self._positions[(topic, partition)] = position

    def _store_positions(self) -> None:
        """Store what may be committed, with a time at or before the last handled event (the commit's metadata:
        a gap found later is backfilled from there). A partition with a gap being backfilled stays below it."""
        while not self._gaps_done.empty():
            key = self._gaps_done.get_nowait()
            gap = self._gaps.pop(key, None)
            if gap is not None and key in self.health.assigned:
                position = self.tracker.position(*key)  # None: nothing read there since the gap
                self._positions[key] = gap.lost_to if position is None else position
        if self._positions:
            offsets = [self._stored(key, offset) for key, offset in self._positions.items() if key not in self._gaps]
            if offsets:
                self.consumer.store_offsets(offsets=offsets)
            self._positions.clear()

    def _stored(self, key: tuple[str, int], offset: int, handled_ms: int | None = None) -> TopicPartition:
        mark = self._marks.get(key)
        if handled_ms is not None:
            self._handled_ms[key] = handled_ms
        elif mark is not None and mark[0] < offset:
            self._handled_ms[key] = mark[1]
        handled = self._handled_ms.get(key)
        if handled is None:
            return TopicPartition(key[0], key[1], offset)
        return TopicPartition(key[0], key[1], offset, metadata=handled_metadata(handled))

    # -- retention gaps --

    def _reposition(self) -> None:
        """Partitions whose position fell out of the log's range during the run (librdkafka stopped fetching
        them: auto.offset.reset=error): a new partition starts as a new group would; a lost range is a gap,
        and reading resumes at the earliest retained record. Tried again next turn if the broker is away."""
        for key, requested in list(self._unpositioned.items()):
            topic, partition = key
            where = TopicPartition(topic, partition)
            try:
                low, high = (int(mark) for mark in self.consumer.get_watermark_offsets(where, timeout=5))
                committed = self.consumer.committed([where], timeout=5)[0]
            except KafkaException as exc:
                log.warning("cannot position %s[%d] yet (trying again): %s", topic, partition, exc)
                return
            del self._unpositioned[key]
            lost_from = requested if requested >= 0 else committed.offset
            gap: Gap | None = None
            if lost_from < 0:  # never committed: where a new group starts
                start = high if self.settings.auto_offset_reset == "latest" else low
            elif low <= lost_from <= high:
                start = lost_from  # in range again (the log moved meanwhile): nothing lost
            else:
                handled = self._handled_ms.get(key)
                since = datetime.fromtimestamp(handled / 1000, UTC) if handled else handled_at(committed.metadata)
                gap, start = Gap(topic, partition, lost_from, low, since), low
                if lost_from > high:  # the log restarted below us: what was in flight belongs to the old log
                    self.tracker.forget(topic, partition)
            # a partition librdkafka stopped fetching takes no seek: assign it again at the start
            self.consumer.incremental_unassign([where])
            self.consumer.incremental_assign([TopicPartition(topic, partition, start)])
            log.info(
                "positioned %s[%d] at %d (requested %d; log %d..%d)", topic, partition, start, requested, low, high
            )
            if gap is not None:
                self._found_gap(gap)

    def _found_gap(self, gap: Gap) -> None:
        log.error("%s", gap.describe())
        self.metrics.gaps.add(1, {"topic": gap.topic})
        if gap.lost_to > gap.lost_from:
            self.metrics.gap_records.add(gap.lost_to - gap.lost_from, {"topic": gap.topic})
        self._gaps[gap.key] = gap
        with self.health.lock:
            self.health.gaps[gap.where] = f"records lost in {gap.where} ({gap.lost_from}..{gap.lost_to}): backfilling"
        threading.Thread(
            target=self._backfill, args=(gap,), name=f"allocguard-backfill-{gap.where}", daemon=True
        ).start()

    def _forget_gap(self, key: tuple[str, int]) -> None:
        """The partition moved to another member: its commit was held below the gap, so the next owner finds the
        gap again and fills it."""
        gap = self._gaps.pop(key, None)
        if gap is not None:
            with self.health.lock:
                self.health.gaps.pop(gap.where, None)

    def _backfill(self, gap: Gap) -> None:
        """A side thread: the lost range re-read from the source and sent through the live path, then a reconcile
        sweep of every window from now; then the partition's commit moves again. Stopping leaves the gap for the
        next owner (its commit is still below it)."""
        until = first_retained_time(self._kafka_base, gap.topic, gap.partition, gap.lost_to) or datetime.now(UTC)
        since = gap.since or until - timedelta(seconds=self.settings.backfill_window_s)
        margin = timedelta(minutes=1)  # Connect's clock (Kafka timestamps) and PostgreSQL's may differ a little
        rules = self.remediator.rules
        kinds = [(rule.source, rule.event_type) for rule in rules.failures] + [
            (rules.hold.source, rules.hold.event_type)
        ]
        events: list[ObservabilityEvent] = []
        if gap.topic.endswith(".public.observability_events"):

            def read() -> list[ObservabilityEvent]:
                with self._connect() as conn:
                    rows = store.signal_events_between(conn, since - margin, until + margin, kinds)
                return [ObservabilityEvent.model_validate(row) for row in rows]

            found = self._until_through(read, f"the backfill of {gap.where}")
            if found is None:
                return
            events = found
        failed = self._replay_through_live_path(events)
        if failed is None:
            return
        mode = Mode(self.settings.mode)

        def sweep() -> Sweep:
            return reconcile(
                self.settings,
                restaurant=None,
                since=None,
                until=None,
                apply=mode is Mode.AUTO,
                release_stale=False,
                actor="allocguard (gap backfill)",
                artifacts_dir=self.settings.artifacts_dir,
            )

        swept = self._until_through(sweep, f"the reconcile sweep after the gap in {gap.where}")
        if swept is None:
            return
        self.metrics.backfilled.add(len(events), {"topic": gap.topic})
        (log.error if failed else log.info)(
            "gap in %s handled: %d signal events re-read from observability_events (%s .. %s)%s; reconcile sweep "
            "(%s): %d finding(s), %d pruned",
            gap.where,
            len(events),
            (since - margin).isoformat(),
            (until + margin).isoformat(),
            f", {len(failed)} could not be handled: {', '.join(failed[:10])}" if failed else "",
            "applied" if mode is Mode.AUTO else "reported",
            len(swept.findings),
            swept.pruned,
        )
        with self.health.lock:
            self.health.gaps.pop(gap.where, None)
        self._gaps_done.put(gap.key)

    def _replay_through_live_path(self, events: list[ObservabilityEvent]) -> list[str] | None:
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
            self.scheduler.submit(Work(_WAKEUP, -1, -1, key, functools.partial(handle, event, key), background=True))
        while not finished.wait(0.5):
            if self._stop.is_set():
                return None
        return failed

    def _until_through(self, work: Callable[[], _T], what: str) -> _T | None:
        """``work`` tried until it goes through while the database or the broker is away; None when stopping."""
        delay, told = 0.5, False
        while True:
            try:
                return work()
            except (psycopg.Error, PoolTimeout, KafkaException) as exc:
                if not told:
                    log.warning("%s waits for its dependencies: %s", what, redact(str(exc).strip()))
                    told = True
            if self._wait_unless_recovered(delay):
                return None
            delay = min(delay * 2, 5.0)

    def _dead_letter(self, message: Message, error: CdcDecodeError | BaseException, span: Span | None = None) -> None:
        topic, partition, offset = message.topic() or "", message.partition() or 0, message.offset() or 0
        if isinstance(error, CdcDecodeError):
            reason: list[tuple[str, bytes]] = error.as_headers()
            log.warning("dead-lettering %s[%s]@%s: %s: %s", topic, partition, offset, error.field, error.reason)
        else:
            reason = [
                ("allocguard.error.class", type(error).__name__.encode()),
                ("allocguard.error.reason", str(error)[:1000].encode()),
                ("allocguard.source.topic", topic.encode()),
                ("allocguard.source.partition", str(partition).encode()),
                ("allocguard.source.offset", str(offset).encode()),
            ]
            where = f" ({error.filename})" if isinstance(error, OSError) and error.filename else ""
            log.error("dead-lettering %s[%s]@%s after a handler error: %r%s", topic, partition, offset, error, where)
        original = _header_list(message)
        headers: list[tuple[str, str | bytes | None]] = [*original, *reason]
        sending = self.telemetry.producer_span(self.settings.resolved_dlq(), span, (topic, partition, offset))
        if span is not None and not any(name == "traceparent" for name, _ in original):
            headers += self.telemetry.traceparent(sending)

        self._produce_dead_letter(
            (topic, partition, offset), message.key(), message.value(), headers, type(error).__name__, sending=sending
        )

    def _produce_dead_letter(
        self,
        where: tuple[str, int, int],
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, str | bytes | None]],
        error_class: str,
        truncated: bool = False,
        sending: Span = trace.INVALID_SPAN,
    ) -> None:
        """The DLQ copy; the offset completes once the broker has it. A copy the broker (or the client) refuses as
        too large is sent again truncated to 64 KiB with ``allocguard.dlq.truncated``; should even that fail, the
        message is accounted for by a metric and a log line with its coordinates, and the consumer moves on. Any
        other delivery failure is fatal: we would otherwise commit past a message we did not keep."""
        topic, partition, offset = where

        def too_large(reason: object) -> None:
            if not truncated and value is not None:
                log.warning(
                    "dead-letter copy of %s[%s]@%s too large (%s): sent truncated", topic, partition, offset, reason
                )
                marker: list[tuple[str, str | bytes | None]] = [("allocguard.dlq.truncated", str(len(value)).encode())]
                self._produce_dead_letter(
                    where, key, value[:_DLQ_TRUNCATE], [*headers, *marker], error_class, True, sending
                )
                return
            log.error(
                "dead-letter copy of %s[%s]@%s refused (%s): counted and skipped", topic, partition, offset, reason
            )
            self.metrics.dlq.add(1, {"topic": topic, "error_class": "unkept"})
            Telemetry.end(sending, RuntimeError(f"dead-letter copy refused: {reason}"))
            self._done_now(topic, partition, offset)

        def delivered(err: KafkaError | None, _: Message) -> None:
            if err is not None:
                if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    too_large(err)
                    return
                self._fatal = FatalRuntimeError(f"could not write to the dead-letter topic: {err}")
                Telemetry.end(sending, self._fatal)
                self._stop.set()
                return
            self.metrics.dlq.add(1, {"topic": topic, "error_class": error_class})
            Telemetry.end(sending)
            self._done_now(topic, partition, offset)

        def produce() -> None:
            self.producer.produce(
                self.settings.resolved_dlq(), key=key, value=value, headers=headers, on_delivery=delivered
            )

        try:
            produce()
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                too_large(exc)
                return
            raise
        except BufferError:
            self.producer.poll(1.0)  # the local queue is full: let deliveries drain, then try once more
            produce()

    # -- the loop --

    def _drain_completions(self, timeout: float = 0.0) -> None:
        try:
            work = self._completions.get(timeout=timeout) if timeout else self._completions.get_nowait()
        except queue.Empty:
            return
        while True:
            if work.span is not None:
                self.telemetry.end(work.span, work.error)
            if work.error is not None and (
                isinstance(work.error, Abandoned) or infrastructure_cause(work.error) is not None
            ):
                pass  # only while stopping: the event stays uncommitted and is redelivered after restart
            elif work.done is not None:
                for where in work.done:
                    self._complete(*where)
            elif work.error is not None and work.message is not None:
                # a bug or a permanent refusal: the event goes to the DLQ with the reason, then counts as done
                self._dead_letter(work.message, work.error)
            else:
                self._complete(work.topic, work.partition, work.offset)
            try:
                work = self._completions.get_nowait()
            except queue.Empty:
                self._store_positions()
                return

    def _sample_lag(self, every_s: float = 5.0) -> None:
        """Consumer lag per partition (end offset - position) for the lag gauge, from what the client already knows
        (cached high watermarks from its fetch responses): no broker round trip on the loop, nothing that can
        fail when a broker is away."""
        now = time.monotonic()
        if now - self._lag_sampled_at < every_s or not self.health.assigned:
            return
        self._lag_sampled_at = now
        assigned = [TopicPartition(t, p) for t, p in self.health.assigned]
        try:
            for position in self.consumer.position(assigned):
                key = (position.topic, position.partition)
                at = position.offset if position.offset >= 0 else self._starts.get(key, -1)
                marks = self.consumer.get_watermark_offsets(position, cached=True)
                if marks and marks[1] >= 0 and at >= 0:
                    self.metrics.lag[key] = max(0, int(marks[1]) - at)
        except KafkaException as exc:
            log.debug("lag not sampled: %s", exc)

    def _watch_group(self) -> None:
        """A member whose partitions were lost to a session timeout (the broker was away) rejoins by itself — almost
        always. Seen here about once in ten broker restarts under traffic: it never did, polling with nothing
        assigned while the broker was back (the chaos suite lost every incident after it). So: once the broker has
        been reachable for ``rejoin_after_s`` since the loss with no assignment at all (not even an empty one), the
        member leaves and joins again; it repeats at that pace until it is assigned."""
        lost_at = self._lost_at
        if lost_at is None:
            return
        now = time.monotonic()
        if self.kafka_outage.is_down:
            self._lost_at = now  # the clock runs only while the broker is reachable
            return
        if now - lost_at < self.settings.rejoin_after_s:
            return
        log.warning(
            "no assignment %.0fs after partitions were lost, with the broker reachable: leaving and joining again",
            now - lost_at,
        )
        self._lost_at = now
        self.metrics.rejoins.add(1)
        self.consumer.unsubscribe()
        self._subscribe()

    def _subscribe(self) -> None:
        self.consumer.subscribe(
            self.settings.topics(), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def _backpressure(self) -> None:
        """Pause every assigned partition while too much is in flight, or while an infrastructure failure holds
        work back (the loop keeps polling, so the member stays in the group); resume when both clear."""
        in_flight = self.health.in_flight = self.tracker.in_flight()
        assignment = [TopicPartition(t, p) for t, p in self.health.assigned]
        held = bool(self.health.degraded)
        if not self._paused and assignment and (held or in_flight >= self.settings.max_in_flight):
            self.consumer.pause(assignment)
            self._paused = True
        elif self._paused and not held and in_flight <= self.settings.max_in_flight // 2:
            self.consumer.resume(assignment)
            self._paused = False

    def _register_gauges(self) -> None:
        health = self.health

        def partitions() -> tuple[int, int]:
            assigned = len(health.assigned)
            return assigned, assigned if self._paused else 0

        register_gauges(
            self.metrics,
            build={
                "version": version(),
                "byte_test": "native" if byte_test_is_native() else "python",
                "group_protocol": str(_group_protocol(self.settings.librdkafka()).get("group.protocol", "classic")),
                "mode": str(self.settings.mode),
            },
            ready=lambda: health.readiness()[0],
            dependencies=lambda: {"database": not self.db_outage.is_down, "kafka": not self.kafka_outage.is_down},
            partitions=partitions,
            held=lambda: len(health.degraded),
            gaps_open=lambda: len(health.gaps),
            last_event_at=lambda: self._last_event_at,
            database=lambda: self.state.state,
        )

    def _heartbeat_age(self) -> float | None:
        """Seconds since Debezium's last heartbeat on ``__debezium-heartbeat.<prefix>`` (its own short-lived reader)."""
        from consumer.operations.check import last_message_age

        target = self.settings.check_target()
        return last_message_age(target, f"{HEARTBEAT_TOPIC_PREFIX}.{self.settings.topic_prefix}")

    def _probe(self, every_s: float = 1.0, kafka_every: int = 3) -> None:
        """A side thread: once a second, one cheap query on its own database connection, and every third second
        a metadata request on its own Kafka handle, so /readyz answers from state at once and turns false within
        seconds of losing either (a probe never waits on the pool or on the consumer). A metadata request every
        second showed in the latency tail (p99 48 → 163 ms): the broker is probed less often than the database."""
        from confluent_kafka.admin import AdminClient

        dsn = self.settings.resolved_dsn()
        config: dict[str, Any] = {"bootstrap.servers": self.settings.resolved_bootstrap(), **self.settings.librdkafka()}
        admin = AdminClient({**config, "logger": kafka_log})  # type: ignore[dict-item]
        conn: psycopg.Connection[Any] | None = None
        rounds = 0
        while not self._stop.wait(every_s):
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(dsn, autocommit=True, connect_timeout=2, **self.settings.pg_connect_kwargs())
                conn.execute("SELECT 1")
                if self.db_outage.up():
                    self._dependency_back("database")
            except psycopg.Error as exc:
                self.db_outage.down(redact(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)))
                if conn is not None:
                    conn.close()
                conn = None
            rounds += 1
            if rounds % kafka_every:
                continue
            try:
                admin.list_topics(timeout=2)
                if self.kafka_outage.up():
                    self._dependency_back("kafka")
            except KafkaException as exc:
                self.kafka_outage.down(str(exc.args[0].str() if exc.args else exc))
        if conn is not None:
            conn.close()

    def preflight(self) -> None:
        """The checks of ``allocguard check``, before anything starts. A misconfiguration (a grant missing, a wrong
        connection string) exits 2 with the items and their fixes: waiting cannot fix it. A dependency that is
        merely out of reach — PostgreSQL or the brokers down, no connection slot free — is waited for with
        back-off: one log line per change of what is awaited, ``/readyz`` 503 with the reason. Kafka Connect out
        of reach is reported, not waited for: allocguard reads the topics, not Connect."""
        awaited: frozenset[str] = frozenset()
        delay = 0.5
        while not self._stop.is_set():
            report = run_checks(self.settings.check_target(), guest_data=False)
            if report.misconfigured:
                raise ConfigurationError(
                    "preflight failed:\n" + "\n".join(item.line() for item in report.misconfigured)
                )
            waiting = [item for item in report.failed if item.unavailable in ("database", "kafka")]
            self.health.waiting = {str(item.unavailable): f"{item.name}: {item.detail}" for item in waiting}
            now = frozenset(self.health.waiting)
            if now != awaited:
                for item in waiting:
                    log.warning("waiting for %s (not exiting): %s", item.unavailable, item.line())
                if awaited - now:
                    log.info("%s available", ", ".join(sorted(awaited - now)))
                awaited = now
            if not waiting:
                for item in report.items:
                    (log.info if item.status is Status.OK else log.warning)("check %s", item.line())
                return
            self._stop.wait(delay)
            delay = min(delay * 2, 2.0)  # a refused connection costs nothing: look again soon

    def _sleep_unless_stopping(self, seconds: float) -> None:
        """The retry policy's waits (a hold conflict waits ≥ 10 s): cut short by SIGTERM, abandoning the attempt
        without a verdict."""
        if self._stop.wait(seconds):
            raise Abandoned("stopping during a retry wait")

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
            self.preflight()
        except BaseException:
            server.shutdown()
            server.server_close()
            raise
        if self._stop.is_set():  # stopped while waiting for a dependency: nothing was started
            self._shutdown(server)
            return 0
        self.pool.open(wait=False)
        threading.Thread(target=self._probe, name="allocguard-probe", daemon=True).start()
        self._register_gauges()
        self.state.start()
        if self.guard is not None:
            with self._connect() as conn:
                primed = self.assignments.prime(conn)
            log.info("prevention on: %d assignment rows indexed (key-only deletes are named from it)", primed)
        if Mode(self.settings.mode).acts or self.guard is not None:
            threading.Thread(target=self._wake_due, name="allocguard-wakeups", daemon=True).start()
        self._subscribe()
        idle_since = time.monotonic()
        try:
            with poll_batches_gc():  # the loop holds a poll batch of messages at a time
                while not self._stop.is_set():
                    self.health.last_loop = time.monotonic()
                    # poll returns as soon as one message is there; consume(timeout=0) then takes what is buffered
                    # (consume with a timeout would wait it out whenever fewer than num_messages are available)
                    first = self.consumer.poll(0.1)
                    messages = [first, *self.consumer.consume(num_messages=999, timeout=0)] if first is not None else []
                    if messages:
                        self._take(messages)
                    if self._unpositioned:
                        self._reposition()
                    self._drain_completions()
                    self._store_positions()
                    self._backpressure()
                    self._watch_group()
                    self._sample_lag()
                    self.producer.poll(0)
                    if self.once:
                        if messages or self.tracker.in_flight():
                            idle_since = time.monotonic()
                        elif self.health.assigned and time.monotonic() - idle_since > 2.0:
                            break
            if self._fatal is not None:
                raise self._fatal
        finally:
            self._shutdown(server)
        return 0

    def _shutdown(self, server: ThreadingHTTPServer) -> None:
        """Shutdown is a state with one budget (``shutdown_timeout_s``, measured from the stop request): no new
        work; in-flight work finishes or, woken by the stop flag in its backoff, is abandoned without a verdict
        (status and offset untouched, so the next owner redoes it); what finished is committed; the pool closes
        last. Every step that can block on a dead broker, database or collector is bounded by what is left."""
        began = self._stopping_since or time.monotonic()
        budget = self.settings.shutdown_timeout_s
        end = began + budget * 0.85  # the rest is the interpreter's own exit

        def left(share: float = 1.0) -> float:
            return max(0.05, (end - time.monotonic()) * share)

        self.batches.close()  # the running batch finishes (it may still place work: the scheduler drops it)
        self.scheduler.shutdown()
        drain_until = time.monotonic() + left(0.6)
        while (self.scheduler.busy() or self.batches.busy()) and time.monotonic() < drain_until:
            self.producer.poll(0)
            self._drain_completions(timeout=0.05)
        self.producer.flush(min(left(0.3), 5.0))
        self._drain_completions()
        self._store_positions()
        abandoned = self.tracker.in_flight()
        if abandoned:
            log.warning("%d event(s) abandoned without a verdict: the next owner redoes them", abandoned)

        def close_kafka() -> None:
            try:
                self.consumer.commit(asynchronous=False)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError._NO_OFFSET:
                    log.warning("final commit failed: %s", exc)
            self.consumer.close()

        for name, step in (
            ("kafka", close_kafka),
            ("pool", lambda: self.pool.close(timeout=1.0)),
            ("telemetry", self._close_telemetry),
        ):
            thread = threading.Thread(target=step, name=f"allocguard-close-{name}", daemon=True)
            thread.start()
            thread.join(left(0.5))
            if thread.is_alive():
                log.warning("closing %s did not finish within the shutdown budget; leaving it", name)
        server.shutdown()
        server.server_close()
        log.info("stopped in %.2fs", time.monotonic() - began)


def run(settings: RuntimeSettings, *, once: bool = False) -> int:
    runtime = Runtime(settings, once=once)
    signal.signal(signal.SIGTERM, runtime.request_stop)
    signal.signal(signal.SIGINT, runtime.request_stop)
    return runtime.run()


#: the scheduler key of a change that named no booking (answered by a sweep, one at a time)
_SWEEP = "prevention-sweep"


def _current_trace_ids() -> tuple[str, str] | None:
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
