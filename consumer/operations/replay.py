"""``allocguard replay`` and ``allocguard capture``: reprocess a topic range (or a captured file) to find, explain
and — if asked — fix past ``allocations_no_overlap`` incidents, without disturbing the live consumer.

A replay reads with its own consumer identity: partitions are *assigned* (no group membership, no rebalance of
the live group) and nothing is ever committed. It reads from the offsets for ``--since`` (or given offsets) up
to the offsets for ``--until`` or the end offsets taken when it started, then stops. Every message goes through
the live path's byte test and routing (``consumer/runtime/routing.py``) and every signal through the same remediator
(detect → incident → evidence/plan → executor → retry), so a replay is idempotent: what the live consumer or an
earlier replay fixed is reported as such, not redone. ``--dry-run`` (the default) writes nothing to the
platform's tables; ``--apply`` acts like ``run --mode auto``.
"""

from __future__ import annotations

import base64
import json
import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from confluent_kafka import Consumer, TopicPartition

from consumer.config import RuntimeSettings
from consumer.operations import standalone_remediator
from consumer.report import unique_prefixes
from consumer.runtime.health import kafka_log
from consumer.runtime.offsets import watermarks
from consumer.runtime.routing import Relevance, Signal, poll_batches_gc, route
from handlers import store
from handlers.detect import DetectionRules, FailureSeen
from handlers.pipeline import Connect, IncidentResult, Remediator
from schemas.records import Decision, Mode, Plan


@dataclass(frozen=True)
class Raw:
    """One message, from Kafka or from a capture file."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None

    def to_json(self) -> dict[str, Any]:
        def text(data: bytes | None) -> dict[str, str] | None:
            if data is None:
                return None
            try:
                return {"utf8": data.decode()}
            except UnicodeDecodeError:
                return {"base64": base64.b64encode(data).decode()}

        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
            "key": text(self.key),
            "value": text(self.value),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Raw:
        def data(field_doc: dict[str, str] | None) -> bytes | None:
            if field_doc is None:
                return None
            return field_doc["utf8"].encode() if "utf8" in field_doc else base64.b64decode(field_doc["base64"])

        return cls(
            doc["topic"], doc["partition"], doc["offset"], doc["timestamp_ms"], data(doc["key"]), data(doc["value"])
        )


# ---- reading a range ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    since: datetime | None = None
    until: datetime | None = None
    #: explicit ranges: partition -> (first offset, end offset exclusive)
    offsets: dict[int, tuple[int, int]] | None = None


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def read_range(
    settings: RuntimeSettings,
    window: Window,
    progress: Callable[[int, int], None],
    keep: Relevance | None = None,
    tally: dict[str, int] | None = None,
) -> Iterator[Raw]:
    """The messages of the consumed topics in ``window``, read by an assigned consumer that never commits. With
    ``keep`` (the live path's byte test, a batch at a time), only candidates are yielded; every message read in
    the range is counted in ``tally`` (from the consumer's positions, once per batch)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.resolved_bootstrap(),
            **settings.librdkafka(),
            "group.id": f"allocguard-replay-{time.time_ns()}",  # never joins, never commits: only a client id
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "fetch.queue.backoff.ms": 10,
            # the prefetched messages waiting for the replay (librdkafka's default is 64 MB), as `run` caps them
            "queued.max.messages.kbytes": 16384,
            "logger": kafka_log,
        }
    )
    try:
        marks = watermarks(consumer, settings.topics())
        starts: dict[tuple[str, int], int] = {}
        ends: dict[tuple[str, int], int] = {}
        for tp, (low, high) in marks.items():
            key = (tp.topic, tp.partition)
            starts[key], ends[key] = low, high
            if window.offsets is not None:
                first, end = window.offsets.get(tp.partition, (high, high))
                starts[key], ends[key] = max(first, low), min(end, high)
        for bound, target in ((window.since, starts), (window.until, ends)):
            if bound is None:
                continue
            found = consumer.offsets_for_times([TopicPartition(t, p, _ms(bound)) for t, p in target], timeout=10)
            for tp in found:
                key = (tp.topic, tp.partition)
                # -1: no message at or after the time; the range then reaches the end captured at start
                target[key] = tp.offset if tp.offset >= 0 else marks[TopicPartition(*key)][1]
        remaining = {key: end for key, end in ends.items() if starts[key] < end}
        total = sum(end - starts[key] for key, end in remaining.items())
        consumer.assign([TopicPartition(t, p, starts[(t, p)]) for t, p in remaining])
        read: dict[tuple[str, int], int] = {}
        counts = tally if tally is not None else {}
        while remaining:
            messages = consumer.consume(1000, 1.0)
            if messages and "first_read_ns" not in counts:
                counts["first_read_ns"] = time.monotonic_ns()  # the reading rate starts here (as a raw read's)
            chosen = keep.select(messages).candidates if keep is not None else messages
            for message in chosen:
                if message.error() is not None:
                    continue
                key = (message.topic() or "", message.partition() or 0)
                offset = message.offset() or 0
                stop = remaining.get(key)
                if stop is None or offset >= stop:
                    continue
                yield Raw(key[0], key[1], offset, message.timestamp()[1], message.key(), message.value())
            # how far each partition has been read, from the consumer (not per message): past the end, it is done
            for position in consumer.position([TopicPartition(t, p) for t, p in remaining]):
                key = (position.topic, position.partition)
                if position.offset >= 0:
                    read[key] = min(position.offset, ends[key]) - starts[key]
                if position.offset >= remaining[key]:
                    del remaining[key]
                    consumer.incremental_unassign([TopicPartition(*key)])
            done = sum(read.values())
            counts["read"] = done
            progress(done, total)
    finally:
        consumer.close()


def read_file(
    path: Path,
    progress: Callable[[int, int], None],
    tally: dict[str, int] | None = None,
    keep: Relevance | None = None,
) -> Iterator[Raw]:
    """The messages of a capture file; with ``keep`` (the live path's byte test), only candidates are yielded;
    every message read is counted in ``tally``."""
    lines = path.read_text().splitlines()
    counts = tally if tally is not None else {}
    for number, line in enumerate(lines, start=1):
        if line.strip():
            counts["read"] = counts.get("read", 0) + 1
            raw = Raw.from_json(json.loads(line))
            if keep is None or keep(raw.topic, raw.value):
                yield raw
        if number % 1000 == 0 or number == len(lines):
            progress(number, len(lines))


_END = object()


def read_ahead(source: Iterator[Raw], depth: int = 4096, chunk: int = 256) -> Iterator[Raw]:
    """``source``, read by a thread of its own while the caller works on what it has already yielded: a replay's
    database round trips (evidence, plans) then overlap the reading instead of stalling it. Handed over ``chunk``
    items at a time (a queue hand-over per item cost more than the hold announcement it carried), at most
    ``depth`` items ahead. Order is kept; an error in the reader is raised here; a caller that stops early stops
    the reader too."""
    size = max(1, min(chunk, depth))
    items: queue.Queue[object] = queue.Queue(maxsize=max(1, depth // size))
    stop = threading.Event()
    failure: list[BaseException] = []

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        pending: list[Raw] = []
        try:
            for raw in source:
                pending.append(raw)
                if len(pending) >= size:
                    if not put(pending):
                        break
                    pending = []
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # a generator's finally (the consumer's close) runs in this thread
            if pending:  # what was read before an error still reaches the caller, then the error
                put(pending)
            put(_END)

    reader = threading.Thread(target=read, name="allocguard-replay-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = items.get()
            if item is _END:
                break
            yield from item  # type: ignore[misc]
    finally:
        stop.set()
        reader.join(timeout=10)
    if failure:
        raise failure[0]


class ReadAhead:
    """``source``, read in the caller's thread until :meth:`start` — then by :func:`read_ahead`'s thread. A stream
    of hold announcements costs nothing but reading, and a second thread handing it over cost a quarter of the
    rate (the two contend for the GIL); once work that waits on the database begins (a failure's plan), reading
    overlaps it. Order is kept across the switch; closing this closes the source, switched or not."""

    def __init__(self, source: Iterator[Raw]) -> None:
        self._source = source
        self._ahead: Iterator[Raw] | None = None

    def start(self) -> None:
        """From the next item on, read ahead (once; later calls change nothing)."""
        if self._ahead is None:
            self._ahead = read_ahead(self._source)

    def __iter__(self) -> Iterator[Raw]:
        source = self._source
        try:
            while self._ahead is None:
                try:
                    raw = next(source)
                except StopIteration:
                    return
                yield raw
            yield from self._ahead
        finally:
            ahead = self._ahead if self._ahead is not None else source
            close = getattr(ahead, "close", None)
            if close is not None:
                close()


def capture(settings: RuntimeSettings, window: Window, out: Path, echo: Callable[[str], None]) -> int:
    """Export a topic range to JSON Lines (values kept byte for byte: UTF-8 text, else base64). Written to a
    temporary file beside ``out`` and renamed at the end: a capture that fails (the brokers out of reach) leaves
    no file, never an empty or partial one."""
    count = 0
    partial = out.with_name(f".{out.name}.partial")
    try:
        with partial.open("w") as handle:
            for raw in read_range(settings, window, Progress(echo)):
                handle.write(json.dumps(raw.to_json(), separators=(",", ":")) + "\n")
                count += 1
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    echo(f"captured {count} message(s) to {out}")
    return count


# ---- the report ---------------------------------------------------------------------------------------

#: report buckets, from what the remediator says happened now
OUTCOMES = {
    "resolved": "fixed now",
    "dry_run": "would be fixed (dry run)",
    "already_fixed": "already fixed by allocguard",
    "not_needed": "resolved by someone else",
    "manual_review": "still blocked",
    "open": "still blocked (waiting)",
    "unresolvable": "no window to work with",
}


@dataclass
class ReplayReport:
    messages: int = 0
    signals: int = 0
    failure_events: int = 0
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        counts = Counter(i["outcome"] for i in self.incidents.values())
        return {
            "messages": self.messages,
            "signals": self.signals,
            "failure_events": self.failure_events,
            "incidents_found": len(self.incidents),
            "outcomes": {OUTCOMES.get(k, k): v for k, v in sorted(counts.items())},
            "events_per_s": round(self.messages / self.elapsed_s) if self.elapsed_s else None,
        }

    def as_json(self) -> dict[str, Any]:
        return {"summary": self.summary(), "incidents": sorted(self.incidents.values(), key=lambda i: i["booking_id"])}

    def table(self) -> str:
        summary = self.summary()
        lines = [
            f"read {summary['messages']} message(s) ({summary['events_per_s']} events/s); "
            f"{summary['failure_events']} failure event(s); {summary['incidents_found']} incident(s)",
            f"{'OUTCOME':<30} {'INCIDENTS':>9}",
        ]
        lines += [f"{name:<30} {count:>9}" for name, count in summary["outcomes"].items()]
        lines.append("")
        items = sorted(self.incidents.values(), key=lambda i: i["booking_id"])
        short = unique_prefixes([item["booking_id"] for item in items])
        width = max([10, *(len(v) + 2 for v in short.values())])
        lines.append(f"{'BOOKING':<{width}} {'OUTCOME':<28} WHY")
        for item in items:
            outcome = OUTCOMES.get(item["outcome"], item["outcome"])
            lines.append(f"{short[item['booking_id']]:<{width}} {outcome:<28} {item['why']}")
        return "\n".join(lines)


class Progress:
    """A progress line with rate and ETA on a terminal; nothing when stderr is not one."""

    def __init__(self, echo: Callable[[str], None], stream: Any = None) -> None:
        self._stream = stream or sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._started = time.monotonic()
        self._shown = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self._tty or (now - self._shown < 0.2 and done < total):
            return
        self._shown = now
        rate = done / max(now - self._started, 1e-6)
        eta = (total - done) / rate if rate and total else 0.0
        share = done / total if total else 1.0
        bar = "#" * int(share * 30)
        self._stream.write(f"\r[{bar:<30}] {done}/{total} {rate:,.0f}/s ETA {eta:4.0f}s")
        if done >= total:
            self._stream.write("\n")
        self._stream.flush()


#: a plan's decision, as a replay reports it
_DECISIONS = {
    "prune_and_retry": "dry_run",
    "retry": "dry_run",
    "manual_review": "manual_review",
    "wait": "open",
    "not_needed": "not_needed",
}


def _from_plan(plan: Plan) -> tuple[str, str]:
    if plan.decision is Decision.NOT_NEEDED and plan.victim_assigned_by_allocguard:
        return "already_fixed", "the booking holds an assignment with allocguard's idempotency key"
    return _DECISIONS.get(plan.decision, plan.decision), plan.decision_reason


def _outcome(
    remediator: Remediator, connect: Connect, result: IncidentResult, booking: UUID | None
) -> tuple[str, str, str]:
    """(incident key, outcome, why). What this replay did, or — for an incident already handled (by the live
    consumer or an earlier replay) — what its evidence says now, re-planned read-only."""
    if result.status != "duplicate":
        plan = result.plans[-1] if result.plans else None
        if plan is not None and plan.decision is Decision.NOT_NEEDED and plan.victim_assigned_by_allocguard:
            return str(result.incident_id), *_from_plan(plan)
        return str(result.incident_id), result.status, result.reason
    with connect() as conn:
        incident = result.incident
        incident_id = result.incident_id
        if incident is None:  # an event the auto consumer marked processed: its incident, as recorded
            rows = [r for r in store.incident_rows(conn, booking) if r["mode"] == "auto"] if booking else []
            if not rows:
                return f"{booking}", "already_fixed", result.reason
            incident_id = rows[-1]["id"]
            loaded = store.load_incident(conn, incident_id)
            assert loaded is not None
            incident = loaded[0]
        outcome, why = _from_plan(remediator.plan(conn, incident))
    return str(incident_id), outcome, why


def _folded(connect: Connect, failure: FailureSeen, incident_id: UUID) -> bool:
    """One more event of an incident settled for good, written as ``run`` writes it (its processed marker, the
    incident's count and sources; one statement) — False when the incident is gone (the database path decides)."""
    with connect() as conn:
        return not store.fold_duplicates(conn, [(failure, incident_id)])


def replay(
    settings: RuntimeSettings,
    source: Iterator[Raw],
    *,
    apply: bool,
    booking: UUID | None = None,
    restaurant: UUID | None = None,
    tally: dict[str, int] | None = None,
) -> ReplayReport:
    """Every message of ``source`` through the live path's routing, every signal through the remediator. The
    source applies the byte test (``keep`` of :func:`read_range` and :func:`read_file`): what it leaves out cannot
    be a signal, and a message routed in full without it is decided the same, only later."""
    rules = DetectionRules()
    remediator, connect = standalone_remediator(
        settings,
        Mode.AUTO if apply else Mode.DRY_RUN,
        "allocguard-replay",
        settings.artifacts_dir if apply else None,
        rules,
    )
    remember = remediator.memory.remember  # no spans here (a one-off command's remediator has no hooks)
    report = ReplayReport()
    started = time.monotonic()
    ahead = ReadAhead(source)
    try:
        with poll_batches_gc():  # the reader holds a batch of 1,000 messages at a time
            for raw in ahead:
                report.messages += 1  # (a source that pre-filters reports the messages it read in ``tally``)
                routed = route(raw.topic, raw.partition, raw.offset, raw.key, raw.value, rules)
                if not isinstance(routed, Signal):
                    continue
                found = routed.found
                if booking is not None and str(found.booking_id) != str(booking):
                    continue
                if restaurant is not None and found.restaurant_id not in (None, restaurant, str(restaurant)):
                    continue
                report.signals += 1
                if not isinstance(found, FailureSeen):
                    remember(found)  # a hold: kept in memory, as `run` keeps it
                    continue
                ahead.start()  # the database work from here on overlaps the reading
                report.failure_events += 1
                known = remediator.known_incident(found)  # (applying only: a dry run plans every event again)
                entry = report.incidents.get(str(known.incident_id)) if known is not None else None
                if known is not None and entry is not None and _folded(connect, found, known.incident_id):
                    entry["events"] += 1  # one more event of an incident this replay settled: as `run` answers it
                    continue
                result = remediator.on_failure(found)
                key, outcome, why = _outcome(remediator, connect, result, found.booking_id)
                entry = report.incidents.get(key)
                if entry is None:
                    entry = report.incidents[key] = {"booking_id": str(found.booking_id), "events": 0}
                    entry.update(outcome=outcome, why=why)
                    if result.incident is not None:
                        entry["window"] = result.incident.window.to_postgres()
                        entry["tables"] = [str(t) for t in result.incident.table_ids]
                entry["events"] += 1
    finally:
        connect.close()
    report.elapsed_s = time.monotonic() - started
    if tally is not None:
        report.messages = tally.get("read", report.messages)
    return report
