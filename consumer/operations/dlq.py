"""``allocguard dlq``: look at dead letters one by one (``list``, ``show``: guest data redacted), park the ones a
person has dealt with (``park``/``unpark``: a triage table keyed by the dead letter's place in the topic, which is
never rewritten), and re-drive them through the normal path after a fix (``replay``, all or ``--only`` some; parked
ones are skipped).

The dead-letter topic keeps each message's original key, value and headers plus the reason
(``allocguard.error.*``) and where it came from (``allocguard.source.*``). Replay reads it up to the end offsets
taken when it starts, decodes each message again and hands what is now a signal to the same remediator as
``allocguard run``. That path is idempotent (processed markers, unique plan keys), so replaying twice, or
replaying what the live consumer already handled, changes nothing. Progress is committed under its own group
(never the live one), so a second run continues where the first stopped; ``--from-beginning`` re-reads all.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition

from consumer.config import RuntimeSettings
from consumer.operations import standalone_remediator
from consumer.runtime.health import kafka_log
from consumer.runtime.offsets import watermarks
from handlers import store
from handlers.pipeline import Remediator
from schemas import ChangeEvent, decode_message
from schemas.errors import CdcDecodeError
from schemas.records import Mode
from schemas.rows import ObservabilityEvent


@dataclass
class DlqReplaySummary:
    read: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    #: messages that still do not decode, with their coordinates and the reason
    still_bad: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [f"{self.read} dead-lettered message(s) read"]
        lines += [f"  {name:<22} {count}" for name, count in sorted(self.outcomes.items())]
        lines += [f"  still undecodable: {text}" for text in self.still_bad]
        return lines


#: keys whose values are a guest's data wherever they appear in a dead letter's value
GUEST_KEYS = frozenset(
    {
        "customer_name",
        "customer_email",
        "customer_phone",
        "notes",
        "details",
        "email",
        "phone",
        "first_name",
        "last_name",
        "full_name",
        "guest_name",
    }
)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
#: an international number in free text (a bare run of digits would also catch ids and timestamps)
_PHONE = re.compile(r"\+\d[\d ().-]{7,}\d")
_REDACTED = "<redacted>"


def redact_guest_data(value: Any) -> Any:
    """A copy with guest data replaced: the values of :data:`GUEST_KEYS` anywhere, and anything shaped like an email
    address or a phone number in any string (JSON kept as a string — a ``context`` column — is redacted inside)."""
    if isinstance(value, dict):
        return {k: _REDACTED if k in GUEST_KEYS and v is not None else redact_guest_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_guest_data(v) for v in value]
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in ("{", "[") and len(text) < 1_000_000:
            try:
                return json.dumps(redact_guest_data(json.loads(text)), separators=(",", ":"))
            except (ValueError, RecursionError):
                pass
        return _PHONE.sub(_REDACTED, _EMAIL.sub(_REDACTED, value))
    return value


@dataclass
class DeadLetter:
    """One dead letter: where it sits in the dead-letter topic (``id``: ``<partition>@<offset>``), why it is there."""

    id: str
    partition: int
    offset: int
    at: str | None
    source: str
    error_class: str
    field: str | None
    reason: str
    truncated: bool
    size: int
    parked: dict[str, Any] | None = None

    def line(self) -> str:
        mark = "  [parked]" if self.parked else ""
        where = f" {self.field}:" if self.field else ""
        return f"{self.id:<10} {self.at or '-':<25} {self.source}  {self.error_class}{where} {self.reason[:100]}{mark}"


def parse_id(text: str) -> tuple[int, int]:
    """``<partition>@<offset>`` → (partition, offset)."""
    partition, sep, offset = text.partition("@")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise ValueError(f"{text!r}: a dead letter's id is <partition>@<offset>, as dlq list prints it")
    return int(partition), int(offset)


def _read(settings: RuntimeSettings) -> Iterator[Any]:
    """Every message of the dead-letter topic up to its end now; a reader of its own (no group, nothing
    committed)."""
    topic = settings.resolved_dlq()
    reader = Consumer(
        {
            "bootstrap.servers": settings.resolved_bootstrap(),
            **settings.librdkafka(),
            "group.id": f"allocguard-dlq-read-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "logger": kafka_log,
        }
    )
    try:
        marks = watermarks(reader, [topic])
        ends = {tp.partition: high for tp, (low, high) in marks.items() if high > low}
        lows = {tp.partition: low for tp, (low, _) in marks.items()}
        reader.assign([TopicPartition(topic, p, lows[p]) for p in ends])
        remaining = dict(ends)
        while remaining:
            message = reader.poll(5.0)
            if message is None:
                raise TimeoutError(f"{topic}: nothing read for 5 s before its end offsets {remaining}")
            if message.error() is not None:
                continue
            partition, offset = message.partition() or 0, message.offset() or 0
            if partition not in remaining or offset >= remaining[partition]:
                continue
            yield message
            if offset + 1 >= remaining[partition]:
                del remaining[partition]
    finally:
        reader.close()


def _dead_letter(message: Any, parked: dict[tuple[int, int], dict[str, Any]]) -> DeadLetter:
    partition, offset = message.partition() or 0, message.offset() or 0
    kind, stamp = message.timestamp()
    at = datetime.fromtimestamp(stamp / 1000, UTC).isoformat(timespec="milliseconds") if kind and stamp > 0 else None
    source = _header(message, "allocguard.source.topic") or "?"
    value = message.value() or b""
    return DeadLetter(
        id=f"{partition}@{offset}",
        partition=partition,
        offset=offset,
        at=at,
        source=f"{source}[{_header(message, 'allocguard.source.partition')}]"
        f"@{_header(message, 'allocguard.source.offset')}",
        error_class=_header(message, "allocguard.error.class") or "?",
        field=_header(message, "allocguard.error.field"),
        reason=redact_guest_data(_header(message, "allocguard.error.reason") or ""),
        truncated=_header(message, "allocguard.dlq.truncated") is not None,
        size=len(value),
        parked=parked.get((partition, offset)),
    )


def _parked(settings: RuntimeSettings) -> dict[tuple[int, int], dict[str, Any]]:
    with psycopg.connect(settings.resolved_dsn(), autocommit=True, **settings.pg_connect_kwargs()) as conn:
        return store.parked(conn, settings.resolved_dlq())


def list_dead_letters(
    settings: RuntimeSettings,
    *,
    reason: str | None = None,
    source_topic: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    parked: bool | None = None,
) -> list[DeadLetter]:
    """The dead letters that match every filter given (``reason``: a case-insensitive fragment of the reason or the
    error class; ``parked``: only parked (True) or only not parked (False))."""
    marks = _parked(settings)
    found = []
    for message in _read(settings):
        letter = _dead_letter(message, marks)
        if reason and reason.lower() not in f"{letter.error_class} {letter.reason}".lower():
            continue
        if source_topic and not letter.source.startswith(f"{source_topic}["):
            continue
        stamp = datetime.fromisoformat(letter.at) if letter.at else None
        if (since and (stamp is None or stamp < since)) or (until and (stamp is None or stamp >= until)):
            continue
        if parked is not None and bool(letter.parked) is not parked:
            continue
        found.append(letter)
    return found


def show_dead_letter(settings: RuntimeSettings, letter_id: str) -> dict[str, Any]:
    """One dead letter in full, guest data redacted: its headers, key and value (JSON decoded when it is JSON)."""
    partition, offset = parse_id(letter_id)
    for message in _read(settings):
        if (message.partition(), message.offset()) != (partition, offset):
            continue
        letter = _dead_letter(message, _parked(settings))
        raw = message.value()
        try:
            value: Any = redact_guest_data(json.loads(raw)) if raw is not None else None
        except (ValueError, RecursionError):
            value = f"<{len(raw or b'')} bytes, not JSON: not shown (it may hold guest data)>"
        headers = {
            name: redact_guest_data(v.decode(errors="replace") if isinstance(v, bytes) else str(v))
            for name, v in message.headers() or []
        }
        key = message.key()
        return {
            **asdict(letter),
            "headers": headers,
            "key": redact_guest_data(key.decode(errors="replace")) if key else None,
            "value": value,
        }
    raise LookupError(f"no dead letter {letter_id} in {settings.resolved_dlq()}")


def set_parked(
    settings: RuntimeSettings, letter_ids: Iterable[str], *, by: str, note: str | None, park: bool
) -> list[str]:
    """Park (or unpark) these dead letters; the ids whose state changed."""
    topic = settings.resolved_dlq()
    places = [(text, *parse_id(text)) for text in letter_ids]
    changed = []
    with psycopg.connect(settings.resolved_dsn(), autocommit=True, **settings.pg_connect_kwargs()) as conn:
        for text, partition, offset in places:
            done = (
                store.park(conn, topic, partition, offset, by, note)
                if park
                else store.unpark(conn, topic, partition, offset)
            )
            if done:
                changed.append(text)
    return changed


def _header(message: Any, name: str) -> str | None:
    for key, value in message.headers() or []:
        if key == name:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return None


def replay_dlq(
    settings: RuntimeSettings,
    *,
    group: str | None = None,
    from_beginning: bool = False,
    only: Iterable[str] | None = None,
    echo: Callable[[str], None] = print,
) -> DlqReplaySummary:
    """Up to the topic's end now: every dead letter not replayed yet under the replay's group (``from_beginning``:
    all), or ``only`` the ones named (wherever the group is; its position does not move). Parked ones are skipped."""
    topic = settings.resolved_dlq()
    chosen = {parse_id(text) for text in only} if only is not None else None
    marks = _parked(settings)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.resolved_bootstrap(),
            **settings.librdkafka(),
            "group.id": group or f"{settings.group_id}-dlq-replay",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "logger": kafka_log,
        }
    )
    remediator, connections = standalone_remediator(
        settings, Mode(settings.mode), "allocguard-dlq-replay", settings.artifacts_dir
    )
    summary = DlqReplaySummary()
    try:
        ends = {tp: high for tp, (_, high) in watermarks(consumer, [topic]).items()}
        committed = {(p.topic, p.partition): p.offset for p in consumer.committed(list(ends), timeout=10)}
        starts = []
        for tp in ends:
            done = committed[(tp.topic, tp.partition)]
            begin = 0 if from_beginning or done < 0 or chosen is not None else done
            starts.append(TopicPartition(tp.topic, tp.partition, begin))
        remaining = {(tp.topic, tp.partition): ends[tp] for tp in ends}
        for start in starts:
            if start.offset >= remaining[(start.topic, start.partition)]:
                del remaining[(start.topic, start.partition)]
        consumer.assign(starts)
        while remaining:
            message = consumer.poll(1.0)
            if message is None or message.error() is not None:
                continue
            where = (message.topic() or "", message.partition() or 0)
            if where not in remaining or (message.offset() or 0) >= remaining[where]:
                continue
            place = (message.partition() or 0, message.offset() or 0)
            if chosen is None or place in chosen:
                summary.read += 1
                outcome = "parked" if place in marks else _redrive(remediator, message, summary)
                summary.outcomes[outcome] += 1
            if chosen is None:
                consumer.commit(message=message, asynchronous=False)
            if (message.offset() or 0) + 1 >= remaining[where]:
                del remaining[where]
    finally:
        consumer.close()
        connections.close()
    for line in summary.lines():
        echo(line)
    return summary


def _redrive(remediator: Remediator, message: Any, summary: DlqReplaySummary) -> str:
    source = _header(message, "allocguard.source.topic") or ""
    partition = int(_header(message, "allocguard.source.partition") or -1)
    offset = int(_header(message, "allocguard.source.offset") or -1)
    try:
        record = decode_message(source, partition, offset, message.key(), message.value())
    except CdcDecodeError as exc:
        # a decoder's reason may quote the bad value: guest data is redacted
        summary.still_bad.append(redact_guest_data(f"{source}[{partition}]@{offset}: {exc.field}: {exc.reason}"))
        return "still_undecodable"
    if not isinstance(record, ChangeEvent) or not isinstance(record.after, ObservabilityEvent):
        return "not_a_signal"
    result = remediator.observe(record.after)
    return "hold_remembered" if result is None else result.status
