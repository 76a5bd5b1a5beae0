"""What one Kafka message means for allocguard — decided without I/O, and never by raising.

``route`` is the whole per-message decision of ``allocguard run`` (and of the fuzz test that drives hostile
messages through it): a message is **skipped** (a heartbeat, a tombstone, a change that is not a signal), a
**signal** for the remediator (a hold announcement or an ``allocations_no_overlap`` failure, with the key that
orders its work), or a **dead letter** with the reason. Whatever a single message holds — any bytes, nesting
100k levels deep, dates at the ends of the calendar, broken encodings — it ends as one of the three.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import cast

from confluent_kafka import Message

try:  # the same byte test in C (setup.py builds it; optional — tested to decide exactly as select_python)
    from consumer import _bytetest as native
except ImportError:  # pragma: no cover - a build without a C compiler
    native = None  # type: ignore[assignment]

from handlers.announcements import CREATED, read_failure, read_hold
from handlers.detect import DetectionRules, FailureSeen, HoldNote, HoldSeen, classify
from handlers.prevent import WATCHED_TABLES, Watch, watched
from handlers.store import Triage
from schemas import ChangeEvent, Heartbeat, Tombstone, decode_message
from schemas.envelope import table_of_topic
from schemas.errors import CdcDecodeError
from schemas.rows import ObservabilityEvent


@dataclass(frozen=True, slots=True)
class Skip:
    #: for the events counter: the CDC op, or the record kind (heartbeat, tombstone)
    op: str


@dataclass(slots=True)  # not frozen: made once per signal on the poll loop (a frozen __init__ costs 3 times more)
class Signal:
    op: str
    #: the decoded row, when the models read the message (a hold or failure the fast readers read has none)
    row: ObservabilityEvent | None
    #: the booking whose work this is (one booking's work runs in order)
    key: str
    kind: str
    #: what ``classify`` found; it travels on with the work and is never classified again
    found: HoldNote | FailureSeen
    #: a failure's first steps, when a batch read them already (its work item does not read them again)
    triaged: Triage | None = None


@dataclass(frozen=True, slots=True)
class Watched:
    """A change of an assignment, allocation or booking that prevention looks at (``handlers/prevent.py``)."""

    op: str
    watch: Watch


@dataclass(frozen=True, slots=True)
class DeadLetter:
    error: CdcDecodeError


Routed = Skip | Signal | Watched | DeadLetter

#: a signal's kind (the span attribute ``allocguard.signal``)
HOLD, FAILURE = "HoldSeen", "FailureSeen"


def route(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, rules: DetectionRules
) -> Routed:
    signal_topic = table_of_topic(topic) == ObservabilityEvent.table
    read = plain_hold(signal_topic, key, value, rules)
    if read is not None:
        return hold_signal(*read)
    failure = plain_failure(signal_topic, key, value, rules)
    if failure is not None:
        return failure_signal(*failure)
    return route_decoded(topic, partition, offset, key, value, rules)


def plain_hold(
    signal_topic: bool, key: bytes | None, value: bytes | None, rules: DetectionRules
) -> tuple[str, HoldNote] | None:
    """:func:`route`'s first case: a hold announcement in the plain shape (every booking attempt makes one), read
    without the models, deciding as they would (handlers/announcements.py) — its op and note; None: anything else,
    which is decoded in full."""
    if signal_topic and value is not None and value.startswith(CREATED):
        return read_hold(key, value, rules)
    return None


def hold_signal(op: str, note: HoldNote) -> Signal:
    """The signal of a hold :func:`plain_hold` read."""
    return Signal(op, None, cast(str, note.booking_id), HOLD, note)  # read only with a booking id


def plain_failure(
    signal_topic: bool, key: bytes | None, value: bytes | None, rules: DetectionRules
) -> tuple[str, FailureSeen] | None:
    """:func:`route`'s second case: an ``allocations_no_overlap`` failure in the plain shape (a failed attempt
    emits a dozen), read without the models, deciding as they would (handlers/announcements.py) — its op and what
    it reports; None: anything else, which is decoded in full."""
    if signal_topic and value is not None and value.startswith(CREATED):
        return read_failure(key, value, rules)
    return None


def failure_signal(op: str, failure: FailureSeen) -> Signal:
    """The signal of a failure :func:`plain_failure` read (no row: the failure carries what its work needs)."""
    return Signal(op, None, str(failure.booking_id), FAILURE, failure)


def route_decoded(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, rules: DetectionRules
) -> Routed:
    """:func:`route` by the models alone: decoded in full, then classified (the specification the fast reader
    agrees with)."""

    def failed(field: str, reason: str) -> DeadLetter:
        return DeadLetter(CdcDecodeError(topic=topic, partition=partition, offset=offset, field=field, reason=reason))

    try:
        record = decode_message(topic, partition, offset, key, value)
    except CdcDecodeError as exc:
        return DeadLetter(exc)
    except RecursionError:
        return failed("value", "nested too deeply to decode")
    except Exception as exc:  # a decoder bug must not stop the consumer: the message is kept, with the reason
        return failed("value", f"{type(exc).__name__}: {exc}"[:500])
    if isinstance(record, Heartbeat | Tombstone) or not isinstance(record, ChangeEvent):
        return Skip(type(record).__name__.lower())
    op = record.op.value
    if record.source.qualified_table in WATCHED_TABLES:
        found = watched(record)
        return Watched(op, found) if found is not None else Skip(op)
    row = record.after
    if record.op not in ("c", "r") or not isinstance(row, ObservabilityEvent):
        return Skip(op)
    if value is not None:
        raw_kind = first_event_type(value)
        if raw_kind is not None and raw_kind != row.event_type.encode():
            # what the byte test reads first is not what the decoder kept: a duplicate key, ambiguous JSON
            return failed("after.event_type", "the key appears more than once with different values")
    try:
        signal = classify(row, rules)
    except Exception as exc:  # e.g. a hold announced for year 9999: a bad message, not a reason to stop
        return failed("after.context", f"cannot be classified: {type(exc).__name__}: {exc}"[:500])
    if signal is None:
        return Skip(op)
    key_text = str(row.booking_id) if row.booking_id is not None else f"event:{row.id}"
    if isinstance(signal, HoldSeen):
        return Signal(op, row, key_text, HOLD, HoldNote.of(signal))
    return Signal(op, row, key_text, FAILURE, signal)


@dataclass(slots=True)
class Batch:
    """One poll batch after the byte test: the candidates to decode (in order), how many were skipped unread per
    topic, and Kafka's error messages."""

    candidates: list[Message] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    errors: list[Message] = field(default_factory=list)


#: how Debezium's JsonConverter (schemas off) begins a create or snapshot read, and the event-type key
_CREATED = b'{"before":null,"after":{'
_EVENT_TYPE = b'"event_type":"'


def first_event_type(value: bytes) -> bytes | None:
    """The raw text of the first ``"event_type":"…"`` of a create/read in Debezium's compact shape, when it holds
    no escape; None otherwise (another shape: the caller must not rely on it)."""
    if not value.startswith(_CREATED):
        return None
    at = value.find(_EVENT_TYPE, 24)
    if at < 0:
        return None
    begin = at + 14
    end = value.find(b'"', begin)
    if end < 0:
        return None
    kind = value[begin:end]
    return None if b"\\" in kind else kind


class Relevance:
    """The detection rules compiled to a test on the raw value, run before any decode.

    A message can only become a signal if it is a change of ``observability_events`` whose value holds one of
    the rules' markers: the hold announcement's event type, or the text a failure rule looks for in its context
    (``allocations_no_overlap``). JSON can spell a letter only literally or as a ``\\u00XX`` escape, so a value
    holding neither a marker nor such an escape cannot decode to a signal: it is skipped unread — counted per
    batch, its offset committed. The price, stated: a *malformed* value that the test rules out is never decoded,
    so it is not dead-lettered either (it could not have carried a signal).

    The fast path reads only the event type, for values in the shape Debezium's JsonConverter writes a create or
    snapshot read (``{"before":null,"after":{…`` compact, schemas off): a signal's ``event_type`` must equal one of
    the rules' (``classify`` compares exactly), so a value whose first ``"event_type":"…"`` holds another plain
    text is no signal — and ``route`` dead-letters a value whose decoded event type differs from that first text
    (a duplicate key, escaped or not: ambiguous JSON), so the two can never disagree about a signal. An escape in
    it, or another layout, takes the full marker scan above.
    """

    def __init__(self, rules: DetectionRules, watch: bool = False) -> None:
        #: prevention on: every change of a watched table is decoded (they are few next to the event stream)
        self._watch = watch
        # per rule, the most selective text it requires (an empty marker matches everything: still sound)
        markers = {rules.hold.event_type, *(rule.contains or rule.event_type for rule in rules.failures)}
        # an ASCII letter can only be escaped as \u00XX; a non-ASCII marker needs any \u escape considered
        escape = b"\\u00" if all(m.isascii() for m in markers) else b"\\u"
        self.needles = (*sorted(m.encode() for m in markers), escape)
        kinds = {rules.hold.event_type, *(rule.event_type for rule in rules.failures)}
        self._kinds = frozenset(k.encode() for k in kinds)
        #: the event-type shortcut is sound only for plain, non-empty event types
        self._fast = all(k and k.isascii() and '"' not in k and "\\" not in k for k in kinds)
        self._topics: dict[str, bool] = {}
        self._watched: dict[str, bool] = {}
        self._kind_tuple = tuple(sorted(self._kinds))
        #: False runs the Python twin (the specification) even where the C byte test is built
        self.native = native is not None

    def signal_topic(self, topic: str) -> bool:
        """Whether ``topic`` carries the platform's ``observability_events`` (signals come from it only)."""
        known = self._topics.get(topic)
        if known is None:
            known = self._topics[topic] = table_of_topic(topic) == ObservabilityEvent.table
        return known

    def _watched_topic(self, topic: str) -> bool:
        known = self._watched.get(topic)
        if known is None:
            known = self._watched[topic] = self._watch and table_of_topic(topic) in WATCHED_TABLES
        return known

    def topic_class(self, topic: str) -> int:
        """0: nothing from this topic is wanted; 1: its values take the byte test; 2: every change is wanted."""
        if self.signal_topic(topic):
            return 1
        return 2 if self._watched_topic(topic) else 0

    def select(self, messages: list[Message]) -> Batch:
        """The byte test over a poll batch, the hot loop of ``allocguard run`` and of ``replay``: in C where it is
        built (``consumer/_bytetest.c``: no bytecode per message, only memcmp/memmem on the value), else
        :meth:`select_python`. Both decide exactly as ``__call__`` per message (tested equal); read positions come
        from the consumer once per batch, not per message."""
        if self.native:
            candidates, skipped, errors = native.select(
                messages, self.topic_class, self._fast, _CREATED, _EVENT_TYPE, self._kind_tuple, self.needles
            )
            return Batch(candidates, skipped, errors)
        return self.select_python(messages)

    def select_python(self, messages: list[Message]) -> Batch:
        """The specification of :meth:`select`, with everything bound to locals. A miss costs a prefix check, one
        short ``find``, a set lookup and a counter."""
        batch = Batch()
        candidates, skipped, errors = batch.candidates, batch.skipped, batch.errors
        watched = self._watched_topic
        kinds, fast, needles = self._kinds, self._fast, self.needles
        current: str | None = None
        signal_topic = False
        count = 0
        for message in messages:
            if message.error() is not None:
                errors.append(message)
                continue
            topic = message.topic() or ""
            if topic != current:
                if count:
                    skipped[current or ""] = skipped.get(current or "", 0) + count
                    count = 0
                current = topic
                signal_topic = self.signal_topic(topic)
            value = message.value()
            if value is None:
                count += 1
                continue
            if signal_topic:
                if fast and value.startswith(_CREATED):
                    at = value.find(_EVENT_TYPE, 24)
                    if at >= 0:
                        end = value.find(b'"', at + 14)
                        if end >= 0:
                            kind = value[at + 14 : end]
                            if kind not in kinds and b"\\" not in kind:
                                count += 1
                                continue
                for needle in needles:
                    if needle in value:
                        candidates.append(message)
                        break
                else:
                    count += 1
                continue
            if watched(topic):
                candidates.append(message)
                continue
            count += 1
        if count:
            skipped[current or ""] = skipped.get(current or "", 0) + count
        return batch

    def __call__(self, topic: str, value: bytes | None) -> bool:
        """True when the message may be a signal or, with prevention on, is a watched change (decode it); False
        when it cannot be either."""
        if value is None:
            return False
        if not self.signal_topic(topic):
            return self._watched_topic(topic)
        if self._fast:
            kind = first_event_type(value)
            if kind is not None and kind not in self._kinds:
                return False
        for needle in self.needles:  # noqa: SIM110 (a plain loop: no generator on the hot path)
            if needle in value:
                return True
        return False


#: the cyclic collector's first threshold while a hot loop runs: ten poll batches of 1,000 messages
GC_GEN0 = 10_000


class _Collector:
    """How many hot loops run in this process, and the thresholds from before the first of them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loops = 0
        self.before = gc.get_threshold()


_collector = _Collector()


@contextmanager
def poll_batches_gc(gen0: int = GC_GEN0) -> Iterator[None]:
    """The collector tuned for a loop that holds 1,000 ``Message`` objects at a time (``allocguard run``,
    ``replay``). With the default first threshold (700 tracked objects) every poll batch set off a collection
    that found the batch alive and promoted it into the older generations, so those were collected often too:
    ≈ 460 collections and ≈ 0.15 s per 500k messages, about an eighth of the loop's time at 1 % signals. Here
    what exists before the loop (modules, models, settings) is frozen — never scanned again — and generation 0
    waits for ten batches; the messages themselves are still freed by reference counting, so memory is not held
    longer (the soak's RSS says so). The first loop in a process sets it, the last one to end restores it
    (tests and benches run many loops in one process, some at once)."""
    with _collector.lock:
        if not _collector.loops:
            _collector.before = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(gen0, *_collector.before[1:])
        _collector.loops += 1
    try:
        yield
    finally:
        with _collector.lock:
            _collector.loops -= 1
            if not _collector.loops:
                gc.set_threshold(*_collector.before)
                gc.unfreeze()
