"""``allocguard run``: the always-on consumer of the platform's Debezium topics.

The hot loop stays short: consume a batch, decode, route, store the offsets of what is done, apply
backpressure. Work for one booking runs in order; different bookings run concurrently on a bounded pool, so a
booking in a long backoff never holds up the others on its partition. The offset stored for a partition is the
highest *contiguous* completed one, and only after the event's effects are durable (the remediation's own
transactions, a DLQ delivery acknowledged by the broker). Undecodable messages go to the dead-letter topic with
the reason; the loop keeps going.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import queue
import signal
import socket
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import UUID

import psycopg
from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from opentelemetry import trace
from opentelemetry.trace import Span
from psycopg_pool import ConnectionPool

from consumer.config import RuntimeSettings
from consumer.operations.check import Status, run_checks
from consumer.redact import redact
from consumer.routing import DeadLetter, Skip, route
from consumer.telemetry import Metrics, Telemetry, TracedCursor
from handlers import store
from handlers.errors import infrastructure_cause, is_contention
from handlers.pipeline import Hooks, IncidentResult, RemediationSettings, Remediator
from handlers.retry import AssignStrategy, HttpAssign, RetryPolicy, SqlAssign
from schemas.errors import CdcDecodeError
from schemas.records import Mode
from schemas.rows import ObservabilityEvent

log = logging.getLogger("allocguard.runtime")

#: the pseudo-topic of wake-up work (no Kafka offset to store when it completes)
_WAKEUP = "allocguard.wakeup"


#: how much of a value a truncated dead-letter copy keeps
_DLQ_TRUNCATE = 64 * 1024


class Abandoned(RuntimeError):
    """Work given up because the process is stopping: no verdict, no dead letter, no offset."""


class FatalRuntimeError(RuntimeError):
    """Kafka or the database failed in a way riding it out cannot fix: exit non-zero, let the orchestrator
    restart us."""

    retryable = False


# ---- offsets ---------------------------------------------------------------------------------------


class OffsetTracker:
    """Per partition: the offsets in flight, and the next offset that is safe to commit."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, int], list[int]] = defaultdict(list)
        self._done: dict[tuple[str, int], set[int]] = defaultdict(set)

    def started(self, topic: str, partition: int, offset: int) -> None:
        heapq.heappush(self._pending[(topic, partition)], offset)

    def completed(self, topic: str, partition: int, offset: int) -> int | None:
        """Mark done; returns the new commit position when the contiguous prefix grew."""
        key = (topic, partition)
        pending, done = self._pending[key], self._done[key]
        done.add(offset)
        position = None
        while pending and pending[0] in done:
            done.discard(pending[0])
            position = heapq.heappop(pending) + 1
        return position

    def in_flight(self, topic: str | None = None, partition: int | None = None) -> int:
        if topic is None:
            return sum(len(p) for p in self._pending.values())
        return len(self._pending.get((topic, partition or 0), []))

    def forget(self, topic: str, partition: int) -> None:
        self._pending.pop((topic, partition), None)
        self._done.pop((topic, partition), None)


# ---- key-ordered work ------------------------------------------------------------------------------


@dataclass
class Work:
    topic: str
    partition: int
    offset: int
    key: str
    run: Callable[[], None]
    message: Message | None = None
    error: BaseException | None = None
    span: Span | None = None


class KeyedScheduler:
    """Runs work for one key in submission order, different keys concurrently on ``workers`` threads."""

    def __init__(self, workers: int, finished: Callable[[Work], None]) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="allocguard-worker")
        self._queues: dict[str, deque[Work]] = {}
        self._lock = threading.Lock()
        self._finished = finished

    def submit(self, work: Work) -> None:
        with self._lock:
            waiting = self._queues.get(work.key)
            if waiting is not None:
                waiting.append(work)
                return
            self._queues[work.key] = deque()
        self._pool.submit(self._run, work)

    def _run(self, work: Work) -> None:
        try:
            work.run()
        except BaseException as exc:  # recorded on the work item; the loop decides
            work.error = exc
        self._finished(work)
        with self._lock:
            waiting = self._queues[work.key]
            if waiting:
                following = waiting.popleft()
            else:
                del self._queues[work.key]
                return
        self._pool.submit(self._run, following)

    def shutdown(self, wait: bool) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)


# ---- health and metrics ----------------------------------------------------------------------------


@dataclass
class Health:
    """State the loop, the workers and the database probe keep; /readyz answers from it without blocking."""

    assigned: set[tuple[str, int]] = field(default_factory=set)
    last_loop: float = field(default_factory=time.monotonic)
    #: work held back by an infrastructure failure: key → reason (privilege, missing object, database down)
    degraded: dict[str, str] = field(default_factory=dict)
    #: the database probe's last failure, None while it answers
    db_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def degrade(self, key: str, reason: str) -> bool:
        """Record that ``key``'s work is held back; True when this reason is new (log state changes only)."""
        with self.lock:
            new = reason not in self.degraded.values()
            self.degraded[key] = reason
            return new

    def recover(self, key: str) -> bool:
        """``key``'s work went through; True when nothing is held back any more."""
        with self.lock:
            if self.degraded.pop(key, None) is None:
                return False
            return not self.degraded

    def reasons(self) -> list[str]:
        with self.lock:
            found = sorted(set(self.degraded.values()))
        return [*found, f"database probe: {self.db_error}"] if self.db_error else found

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        reasons = self.reasons()
        ready = bool(self.assigned) and not reasons
        return ready, {"ready": ready, "kafka_assigned": len(self.assigned), "reasons": reasons}


def serve_health(settings: RuntimeSettings, health: Health, exposition: Callable[[], bytes]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                alive = time.monotonic() - health.last_loop < 30
                self._reply(200 if alive else 503, {"alive": alive})
            elif self.path == "/readyz":
                ready, doc = health.readiness()
                self._reply(200 if ready else 503, doc)
            elif self.path == "/metrics":
                body = exposition()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self._reply(404, {"error": "not found"})

        def _reply(self, status: int, doc: dict[str, Any]) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((settings.health_host, settings.health_port), Handler)
    threading.Thread(target=server.serve_forever, name="allocguard-health", daemon=True).start()
    return server


def _header_list(message: Message) -> list[tuple[str, bytes]]:
    headers = message.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    return [(str(name), value if isinstance(value, bytes) else str(value or "").encode()) for name, value in pairs]


def _failpoints() -> Hooks:
    """Crash points for the kill -9 tests (SIGKILL, deterministic): ``ALLOCGUARD_FAILPOINT=after_prune`` right
    after a prune commits; ``after_assign`` right after the retry's assignment commits, before the incident's
    final state and the processed marker are written."""
    point = os.environ.get("ALLOCGUARD_FAILPOINT")

    def crash() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "after_prune":
        return Hooks(on_pruned=lambda result: crash() if result.status == "pruned" else None)
    if point == "after_assign":
        return Hooks(on_attempt=lambda attempt: crash() if attempt.outcome == "assigned" else None)
    return Hooks()


# ---- the consumer ----------------------------------------------------------------------------------


class Runtime:
    def __init__(self, settings: RuntimeSettings, *, once: bool = False) -> None:
        self.settings = settings
        self.once = once
        self.health = Health()
        self.tracker = OffsetTracker()
        self._completions: queue.Queue[Work] = queue.Queue()
        self._stop = threading.Event()
        self._paused = False
        self.pool = ConnectionPool(
            settings.resolved_dsn(),
            min_size=1,
            max_size=settings.workers + 2,
            kwargs={"autocommit": True, "connect_timeout": 5, "cursor_factory": TracedCursor},
            open=False,
            name="allocguard",
        )
        pool = self.pool

        def connect() -> AbstractContextManager[psycopg.Connection[Any]]:
            return pool.connection(timeout=10.0)

        self._connect = connect
        strategy: AssignStrategy = (
            HttpAssign(settings.assign_endpoint, connect)
            if settings.strategy == "http" and settings.assign_endpoint
            else SqlAssign(connect)
        )
        self.telemetry = Telemetry()
        self.metrics = Metrics()
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
                retry=RetryPolicy(),
            ),
            hooks=hooks,
        )
        self.scheduler = KeyedScheduler(settings.workers, self._completions.put)
        base = {"bootstrap.servers": settings.resolved_bootstrap(), **settings.librdkafka()}
        self.consumer = Consumer(
            {
                **base,
                "group.id": settings.group_id,
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,
                "auto.commit.interval.ms": 1000,
                "auto.offset.reset": settings.auto_offset_reset,
                "partition.assignment.strategy": "cooperative-sticky",
                "fetch.wait.max.ms": 10,
                "error_cb": self._kafka_error,
            }
        )
        # the DLQ is rare traffic: one message per batch, so a copy the topic refuses as too large (the limit applies
        # to the whole batch) never takes its neighbours down with it
        self.producer = Producer(
            {**base, "enable.idempotence": True, "acks": "all", "linger.ms": 5, "batch.num.messages": 1}
        )
        self._fatal: BaseException | None = None
        #: progress, for benchmarks and the exit log: first message seen, last offset completed, count
        self.stats: dict[str, float] = {"first_at": 0.0, "last_done_at": 0.0, "completed": 0}
        self._positions: dict[tuple[str, int], int] = {}

    # -- kafka callbacks --

    def _kafka_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = FatalRuntimeError(f"fatal Kafka error: {error}")
            self._stop.set()
        else:
            log.warning("kafka: %s", error)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions without a committed offset start at their end *now* (for ``latest``), not whenever
        librdkafka gets round to resolving it: once ready, no event written afterwards is skipped."""
        positioned = consumer.committed(partitions, timeout=10)
        fresh: list[TopicPartition] = []
        for partition in positioned:
            if partition.offset < 0 and self.settings.auto_offset_reset == "latest":
                marks = consumer.get_watermark_offsets(partition, timeout=10)
                partition.offset = int(marks[1]) if marks else OFFSET_END
                if partition.offset >= 0:
                    fresh.append(TopicPartition(partition.topic, partition.partition, partition.offset))
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
        log.info("assigned %s", [f"{p.topic}[{p.partition}]@{p.offset}" for p in positioned])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Finish (within a bound) the work of the revoked partitions, store and commit their offsets."""
        revoked = {(p.topic, p.partition) for p in partitions}
        deadline = time.monotonic() + self.settings.revoke_timeout_s
        while any(self.tracker.in_flight(t, p) for t, p in revoked) and time.monotonic() < deadline:
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
            self.tracker.forget(topic, partition)
            self._starts.pop((topic, partition), None)
            self.metrics.lag.pop((topic, partition), None)
        self.health.assigned -= revoked

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {(p.topic, p.partition) for p in partitions}
        for topic, partition in lost:
            self.tracker.forget(topic, partition)
            self._starts.pop((topic, partition), None)
            self.metrics.lag.pop((topic, partition), None)
        self.health.assigned -= lost
        log.warning("partitions lost (no commit): %s", sorted(lost))

    # -- routing --

    def _route(self, message: Message) -> None:
        topic, partition, offset = message.topic() or "", message.partition() or 0, message.offset() or 0
        if not self.stats["first_at"]:
            self.stats["first_at"] = time.monotonic()
        self.tracker.started(topic, partition, offset)
        span = self.telemetry.consumer_span(
            topic, partition, offset, message.key(), _header_list(message), self.settings.group_id
        )
        routed = route(topic, partition, offset, message.key(), message.value(), self.remediator.rules)
        if isinstance(routed, DeadLetter):
            self._dead_letter(message, routed.error, span)
            self.telemetry.end(span, routed.error)
            return
        self.metrics.events.add(1, {"topic": topic, "op": routed.op})
        span.set_attribute("allocguard.cdc.op", routed.op)
        if isinstance(routed, Skip):
            self.telemetry.end(span)
            self._done_now(topic, partition, offset)
            return
        span.set_attribute("allocguard.signal", routed.kind)
        row, key = routed.row, routed.key

        def run_in_span() -> None:
            with trace.use_span(span, end_on_exit=False):
                self._handle(row, key)

        self.scheduler.submit(Work(topic, partition, offset, key, run_in_span, message, span=span))

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
                if self._stop.wait(delay):
                    raise Abandoned(reason) from exc
                delay = min(delay * 2, 5.0)
        if self.health.recover(key):
            log.info("infrastructure recovered; resuming")
        return result

    def _handle(self, event: ObservabilityEvent, key: str) -> None:
        started = time.monotonic()
        result = self._ride_out(key, lambda: self.remediator.observe(event))
        self.metrics.handling.record(time.monotonic() - started, {"signal": "failure" if result else "hold"})
        if result is not None:
            self._record_outcome(event, result)
            self._log_result(key, result)

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
        while not self._stop.wait(every_s):
            if self.health.degraded:
                continue  # held back already: the held work comes first
            try:
                with self._connect() as conn:
                    due = store.claim_due(conn, instance, lease)
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

                self.scheduler.submit(Work(_WAKEUP, -1, -1, key, recheck))

    def _done_now(self, topic: str, partition: int, offset: int) -> None:
        """Nothing to do for this event (or its DLQ copy is acknowledged): complete it in the loop."""
        self._complete(topic, partition, offset)

    def _complete(self, topic: str, partition: int, offset: int) -> None:
        if (topic, partition) not in self.health.assigned:
            return
        self.stats["completed"] += 1
        self.stats["last_done_at"] = time.monotonic()
        position = self.tracker.completed(topic, partition, offset)
        if position is not None:
            self._positions[(topic, partition)] = position

    def _store_positions(self) -> None:
        if self._positions:
            self.consumer.store_offsets(offsets=[TopicPartition(t, p, o) for (t, p), o in self._positions.items()])
            self._positions.clear()

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
            log.error("dead-lettering %s[%s]@%s after a handler error: %r", topic, partition, offset, error)
        original = _header_list(message)
        headers: list[tuple[str, str | bytes | None]] = [*original, *reason]
        if span is not None and not any(name == "traceparent" for name, _ in original):
            headers += self.telemetry.traceparent(span)

        self._produce_dead_letter(
            (topic, partition, offset), message.key(), message.value(), headers, type(error).__name__
        )

    def _produce_dead_letter(
        self,
        where: tuple[str, int, int],
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, str | bytes | None]],
        error_class: str,
        truncated: bool = False,
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
                self._produce_dead_letter(where, key, value[:_DLQ_TRUNCATE], [*headers, *marker], error_class, True)
                return
            log.error(
                "dead-letter copy of %s[%s]@%s refused (%s): counted and skipped", topic, partition, offset, reason
            )
            self.metrics.dlq.add(1, {"topic": topic, "error_class": "unkept"})
            self._done_now(topic, partition, offset)

        def delivered(err: KafkaError | None, _: Message) -> None:
            if err is not None:
                if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    too_large(err)
                    return
                self._fatal = FatalRuntimeError(f"could not write to the dead-letter topic: {err}")
                self._stop.set()
                return
            self.metrics.dlq.add(1, {"topic": topic, "error_class": error_class})
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
        """Consumer lag per partition (end offset - position), sampled from the loop for the lag gauge."""
        now = time.monotonic()
        if now - self._lag_sampled_at < every_s or not self.health.assigned:
            return
        self._lag_sampled_at = now
        assigned = [TopicPartition(t, p) for t, p in self.health.assigned]
        for position in self.consumer.position(assigned):
            key = (position.topic, position.partition)
            at = position.offset if position.offset >= 0 else self._starts.get(key, -1)
            marks = self.consumer.get_watermark_offsets(position, timeout=2, cached=False)
            if marks and marks[1] >= 0 and at >= 0:
                self.metrics.lag[key] = max(0, int(marks[1]) - at)

    def _backpressure(self) -> None:
        """Pause every assigned partition while too much is in flight, or while an infrastructure failure holds
        work back (the loop keeps polling, so the member stays in the group); resume when both clear."""
        in_flight = self.tracker.in_flight()
        assignment = [TopicPartition(t, p) for t, p in self.health.assigned]
        held = bool(self.health.degraded)
        if not self._paused and assignment and (held or in_flight >= self.settings.max_in_flight):
            self.consumer.pause(assignment)
            self._paused = True
        elif self._paused and not held and in_flight <= self.settings.max_in_flight // 2:
            self.consumer.resume(assignment)
            self._paused = False

    def _probe_database(self, every_s: float = 1.0) -> None:
        """A side thread: one cheap query per second on its own connection, so /readyz answers from state at
        once and turns false within seconds of losing the database (a probe never waits on the pool)."""
        dsn = self.settings.resolved_dsn()
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.wait(every_s):
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(dsn, autocommit=True, connect_timeout=2)
                conn.execute("SELECT 1")
                self.health.db_error = None
            except psycopg.Error as exc:
                self.health.db_error = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def preflight(self) -> None:
        """The checks of ``allocguard check``: a FAIL at start-up is a permanent misconfiguration, so the process
        exits 2 with the items and their fixes instead of pausing forever."""
        report = run_checks(self.settings.check_target())
        for item in report.items:
            (log.info if item.status is Status.OK else log.warning)("check %s", item.line())
        if report.failed:
            raise FatalRuntimeError("preflight failed:\n" + "\n".join(i.line() for i in report.failed))

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def run(self) -> int:
        settings = self.settings
        log.info("starting with %s", json.dumps(settings.redacted(), default=str))
        self.preflight()
        self.pool.open(wait=False)
        threading.Thread(target=self._probe_database, name="allocguard-db-probe", daemon=True).start()
        if self.settings.mode == Mode.AUTO.value:
            threading.Thread(target=self._wake_due, name="allocguard-wakeups", daemon=True).start()
        server = serve_health(settings, self.health, self.metrics.exposition)
        self.consumer.subscribe(
            settings.topics(), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                self.health.last_loop = time.monotonic()
                # poll returns as soon as one message is there; consume(timeout=0) then takes what is buffered
                # (consume with a timeout would wait it out whenever fewer than num_messages are available)
                first = self.consumer.poll(0.1)
                messages = [first, *self.consumer.consume(num_messages=499, timeout=0)] if first is not None else []
                for message in messages:
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            continue
                        if error.fatal():
                            raise FatalRuntimeError(f"fatal Kafka error: {error}")
                        log.warning("kafka: %s", error)
                        continue
                    self._route(message)
                self._drain_completions()
                self._store_positions()
                self._backpressure()
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
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        while self.tracker.in_flight() and time.monotonic() < deadline:
            self.producer.poll(0)
            self._drain_completions(timeout=0.05)
        self.scheduler.shutdown(wait=False)
        self.producer.flush(5)
        self._drain_completions()
        self._store_positions()
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("final commit failed: %s", exc)
        self.consumer.close()
        self.pool.close()
        self.telemetry.shutdown()
        self.metrics.shutdown()
        server.shutdown()
        server.server_close()
        log.info("stopped")


def run(settings: RuntimeSettings, *, once: bool = False) -> int:
    runtime = Runtime(settings, once=once)
    signal.signal(signal.SIGTERM, runtime.request_stop)
    signal.signal(signal.SIGINT, runtime.request_stop)
    return runtime.run()
