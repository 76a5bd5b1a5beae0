"""Hold announcements read straight from Debezium's bytes: the hot path of healthy traffic.

On the platform every booking attempt announces a hold, so about one event in ten is a
``capacity.hold.created`` — and the full decode (a pydantic envelope, then :func:`~handlers.detect.classify`)
cost ≈ 50 µs of each one's ≈ 150 µs. :func:`read_hold` makes the :class:`~handlers.detect.HoldNote` directly for
the one shape that matters: a create or snapshot read in the compact form Debezium's JsonConverter writes, every
field plainly what the models expect. The envelope is decoded by ``msgspec`` into typed structs that know every
field Debezium writes (a field it does not know, or a value of another type, is an error: the reader steps aside,
so nothing it skipped unread could have made the models' JSON parser fail); the row's context by ``orjson``, as
the models decode it. For anything else — an unusual but legal spelling (an upper-case uuid, a snapshot flag as a
boolean, a ``transaction`` block, a column the table gained), a missing field, a value the models would reject —
it answers ``None`` and the message takes the full path, whose verdict (skip, signal or dead letter) stands. So it
never decides differently from the models: where it answers, it answers what the full path would
(tests/unit/test_announcements.py drives both with generated messages, valid and broken, and compares).

Before it, the plainest shape of all — compact, every text plain ASCII without an escape, the context as
PostgreSQL's jsonb prints it — is read in one pass in C (``handlers/_holdscan.c``, built where a compiler is):
no envelope or context objects are made, only the texts the note keeps. It answers only where the msgspec reader
answers, and the same (the same tests compare the three); where it is not built, or not sure, the msgspec reader
reads as before.
"""

from __future__ import annotations

import re
from collections.abc import Container
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
import orjson

from handlers.detect import DetectionRules, FailureSeen, HoldNote, hold_expiry
from schemas.rows import ObservabilityEvent, Severity

try:
    from handlers import _holdscan as native
except ImportError:  # pragma: no cover - not compiled here: the msgspec reader reads every announcement
    native = None  # type: ignore[assignment]

#: how a create/read begins in the compact form (no schema wrapper, no before-image)
CREATED = b'{"before":null,"after":{'
#: the canonical text of a uuid, as PostgreSQL prints it: what ``str(UUID(text)) == text`` holds for
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch

#: canonical uuid texts seen before: a venue's restaurant and table ids come back in every announcement of it
_SEEN_UUIDS: set[str] = set()
_SEEN_LIMIT = 50_000


def _known_uuid(value: str) -> bool:
    """:data:`_UUID` for the ids that repeat (restaurants, tables), remembered (a set lookup instead of a regex
    match); the set is emptied when full. ``value`` must be a str."""
    if value in _SEEN_UUIDS:
        return True
    if _UUID(value) is None:
        return False
    if len(_SEEN_UUIDS) >= _SEEN_LIMIT:
        _SEEN_UUIDS.clear()
    _SEEN_UUIDS.add(value)
    return True


_SEVERITIES = frozenset(s.value for s in Severity)
_SCHEMA, _TABLE = ObservabilityEvent.table.split(".")
#: an integer the models surely accept (orjson reads one past 64 bits as a float, which the models refuse;
#: one between 2**63 and 2**64 is left to them too)
Int = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class _Source(msgspec.Struct, forbid_unknown_fields=True):
    """Debezium 3.x's PostgreSQL source block: the fields the model requires as text, the rest as it sends them."""

    version: str
    connector: str
    name: str
    ts_ms: Int
    db: str
    schema: str
    table: str
    snapshot: str = "false"
    sequence: str | None = None
    ts_us: Int | None = None
    ts_ns: Int | None = None
    txId: Int | None = None  # Debezium's spelling
    lsn: Int | None = None
    xmin: Int | None = None
    origin: str | None = None
    origin_lsn: Int | str | None = None


class _Row(msgspec.Struct, forbid_unknown_fields=True):
    """An ``observability_events`` row: its eight columns (shared/domain.md §1.8)."""

    id: str
    created_at: str
    source: str
    event_type: str
    severity: str
    context: str | None = None
    restaurant_id: str | None = None
    booking_id: str | None = None


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    before: None
    after: _Row
    source: _Source
    op: str
    ts_ms: Int | None = None
    ts_us: Int | None = None
    ts_ns: Int | None = None
    transaction: None = None


_decode = msgspec.json.Decoder(_Envelope).decode


def _uuid_or_none(value: str | None) -> bool:
    return value is None or _UUID(value) is not None


def _instant(value: object) -> datetime | None:
    """As ``parse_timestamptz`` reads the plain ISO-8601 forms (its other forms, and its errors: None)."""
    if type(value) is not str:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def read_hold(key: bytes | None, value: bytes, rules: DetectionRules) -> tuple[str, HoldNote] | None:
    """The CDC op and the hold a message of the ``observability_events`` topic announces, or None: not sure — the
    full path decides (it is not a hold announcement in the plain shape, or not one at all)."""
    if native is not None:
        read = scan_hold(key, value, rules)
        if read is not None:
            return read
    return read_hold_decoded(key, value, rules)


#: the scanner's spec per rules (by identity; the rules are kept with it, so an id is not reused under it)
_SPECS: dict[int, tuple[DetectionRules, tuple[Any, ...] | None]] = {}
_PATH_MAX = 8


def _spec(rules: DetectionRules) -> tuple[Any, ...] | None:
    known = _SPECS.get(id(rules))
    if known is not None and known[0] is rules:
        return known[1]
    hold = rules.hold
    path = tuple(part.encode() for part in hold.require_adjacency_path.split("."))
    spec = (
        hold.source.encode(),
        hold.event_type.encode(),
        _SCHEMA.encode(),
        _TABLE.encode(),
        tuple(sorted(s.encode() for s in _SEVERITIES)),
        hold.hold_id_key.encode(),
        hold.table_ids_key.encode(),
        hold.start_key.encode(),
        hold.end_key.encode(),
        hold.expires_key.encode(),
        path,
    )
    _SPECS[id(rules)] = (rules, spec if len(path) <= _PATH_MAX else None)
    return _SPECS[id(rules)][1]


#: a window's texts (start, end, announced expiry) and what :func:`_note` makes of them — start, end, expiry — or
#: None (not a window the reader answers for), by the rules too (the expiry depends on their hold memory). A
#: venue's seatings repeat, so do these texts; bounded, emptied when full.
_Window = tuple[datetime, datetime, datetime] | None
_WINDOWS: dict[tuple[str, str, str | None, int], _Window] = {}
_WINDOWS_LIMIT = 4096


def _window(raw_start: object, raw_end: object, raw_expiry: object, rules: DetectionRules) -> _Window:
    """A hold's window and how long it is remembered, from its context's values; None when the window is not one
    the reader answers for (the full path decides)."""
    start, end = _instant(raw_start), _instant(raw_end)
    if start is None or end is None or start >= end:
        return None
    announced = _instant(raw_expiry)
    try:  # hold_expiry's plain case, inline (its parse and _instant agree on what _instant reads)
        expires = max(announced, end) + rules.hold_memory if announced is not None else None
    except OverflowError:  # past the calendar's end: hold_expiry saturates
        expires = None
    if expires is None:
        expires = hold_expiry(end, raw_expiry, rules.hold_memory)
    return start, end, expires


def scan_hold(key: bytes | None, value: bytes, rules: DetectionRules) -> tuple[str, HoldNote] | None:
    """:func:`read_hold` by the C scanner alone (None where it is not built, or not sure)."""
    spec = _spec(rules) if native is not None else None
    if spec is None:
        return None
    scanned = native.scan(key, value, spec)
    if scanned is None:
        return None
    op, booking_id, restaurant_id, created_at, hold_id, tables, start_text, end_text, raw_expiry, adjacency = scanned
    texts = (start_text, end_text, raw_expiry, id(rules))
    try:
        window = _WINDOWS[texts]
    except KeyError:
        window = _window(start_text, end_text, raw_expiry, rules)
        if len(_WINDOWS) >= _WINDOWS_LIMIT:
            _WINDOWS.clear()
        _WINDOWS[texts] = window
    if window is None or _instant(created_at) is None:
        return None
    start, end, expires = window
    return op, HoldNote(hold_id, booking_id, restaurant_id, tables, start, end, adjacency, expires)


def _plain(
    key: bytes | None, value: bytes, kinds: Container[str | None]
) -> tuple[_Envelope, dict[str, Any], datetime] | None:
    """What both readers require of a message before they read it: a create or snapshot read in the compact
    shape whose first event type is one of ``kinds`` and is the one the structs decode (no duplicate key), the
    key as the models read it, the source block and row as the models accept them (canonical id, an instant with
    its zone, a severity they know, a plain ``source.sequence``), and a context that is a JSON object — the
    envelope, that context and the row's time; None: not sure (the full path decides)."""
    first = _first_event_type(value) if value.startswith(CREATED) else None
    if first not in kinds:
        return None
    try:
        envelope = _decode(value)
        if key is not None:
            key_doc = orjson.loads(key)
            if type(key_doc) is not dict or key_doc.keys() == {"schema", "payload"}:
                return None
    except (ValueError, RecursionError):  # not JSON, not UTF-8, too deep, another type: the full path decides
        return None
    row, source = envelope.after, envelope.source
    if envelope.op not in ("c", "r") or source.schema != _SCHEMA or source.table != _TABLE:
        return None
    if row.severity not in _SEVERITIES or row.event_type != first:  # a duplicate key: the full path names it
        return None
    created_at = _instant(row.created_at)
    if _UUID(row.id) is None or created_at is None or row.context is None:
        return None
    if source.sequence is not None and not _sequence(source.sequence):
        return None
    try:
        context = orjson.loads(row.context)
    except orjson.JSONDecodeError:
        return None
    return (envelope, context, created_at) if type(context) is dict else None


def read_hold_decoded(key: bytes | None, value: bytes, rules: DetectionRules) -> tuple[str, HoldNote] | None:
    """:func:`read_hold` by the msgspec reader alone: the specification the C scanner agrees with."""
    hold = rules.hold
    plain = _plain(key, value, (hold.event_type,))
    if plain is None:
        return None
    envelope, context, _ = plain
    row = envelope.after
    booking_id, restaurant_id = row.booking_id, row.restaurant_id
    if row.source != hold.source:
        return None
    # a hold whose ids come from its context instead: the full path
    if booking_id is None or restaurant_id is None or _UUID(booking_id) is None or not _known_uuid(restaurant_id):
        return None
    note = _note(context, booking_id, restaurant_id, rules)
    return None if note is None else (envelope.op, note)


def read_failure(key: bytes | None, value: bytes, rules: DetectionRules) -> tuple[str, FailureSeen] | None:
    """The CDC op and the ``allocations_no_overlap`` failure a message of the ``observability_events`` topic
    reports, read by the same msgspec structs as a hold announcement (a failure storm brings twelve of them per
    failed booking: route() takes ≈ 26 µs for one instead of ≈ 34 µs through the models) — or None: not sure,
    the full path decides (not the plain shape, not a failure, or anything the models might judge otherwise: an
    id, a time or a hold id in another spelling, a context that is not a JSON object)."""
    plain = _plain(key, value, _failure_kinds(rules))
    if plain is None:
        return None
    envelope, context, created_at = plain
    row = envelope.after
    if row.source == rules.hold.source and row.event_type == rules.hold.event_type:
        return None  # a hold announcement (classify looks for one first)
    booking_id, restaurant_id = row.booking_id, row.restaurant_id
    if booking_id is None or _UUID(booking_id) is None or not (restaurant_id is None or _known_uuid(restaurant_id)):
        return None
    for rule in rules.failures:
        if row.source != rule.source or row.event_type != rule.event_type:
            continue
        text = context.get(rule.context_key)
        if type(text) is str and rule.contains in text:
            hold_id = context.get(rules.failure_hold_id_key)
            if hold_id is not None and (type(hold_id) is not str or _UUID(hold_id) is None):
                return None  # a hold id in another spelling (or none at all): the models judge it
            return envelope.op, FailureSeen(
                event_id=UUID(row.id),
                booking_id=UUID(booking_id),
                restaurant_id=UUID(restaurant_id) if restaurant_id is not None else None,
                hold_id=UUID(hold_id) if hold_id is not None else None,
                source=row.source,
                event_type=row.event_type,
                created_at=created_at,
            )
    return None


#: the event types of the failure rules, per rules (by identity; the rules are kept with them)
_KINDS: dict[int, tuple[DetectionRules, frozenset[str | None]]] = {}


def _failure_kinds(rules: DetectionRules) -> frozenset[str | None]:
    known = _KINDS.get(id(rules))
    if known is None or known[0] is not rules:
        known = _KINDS[id(rules)] = (rules, frozenset(rule.event_type for rule in rules.failures))
    return known[1]


#: Debezium's usual ``source.sequence``: a JSON array of digit strings and nulls (anything else is parsed)
_PLAIN_SEQUENCE = re.compile(r'\[(?:null|"[0-9]*")(?:,(?:null|"[0-9]*"))*\]').fullmatch


def _sequence(text: str) -> bool:
    """``source.sequence`` as the model reads it: a JSON array of texts and nulls."""
    if _PLAIN_SEQUENCE(text) is not None:
        return True
    try:
        parts = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return type(parts) is list and all(p is None or type(p) is str for p in parts)


def _note(context: dict[str, Any], booking_id: str, restaurant_id: str, rules: DetectionRules) -> HoldNote | None:
    hold = rules.hold
    hold_id = context.get(hold.hold_id_key)
    tables = context.get(hold.table_ids_key)
    if type(hold_id) is not str or _UUID(hold_id) is None or type(tables) is not list or not tables:
        return None
    for table in tables:
        if type(table) is not str or not _known_uuid(table):
            return None
    window = _window(context.get(hold.start_key), context.get(hold.end_key), context.get(hold.expires_key), rules)
    if window is None:
        return None
    start, end, expires = window
    adjacency: Any = context
    for part in hold.require_adjacency_path.split("."):
        adjacency = adjacency.get(part) if type(adjacency) is dict else None
    return HoldNote(
        hold_id,
        booking_id,
        restaurant_id,
        tuple(tables),
        start,
        end,
        adjacency if type(adjacency) is bool else None,
        expires,
    )


_EVENT_TYPE = b'"event_type":"'


def _first_event_type(value: bytes) -> str | None:
    """The first ``"event_type":"…"`` text, as the full path's check reads it (None when escaped)."""
    at = value.find(_EVENT_TYPE, len(CREATED))
    if at < 0:
        return None
    begin = at + len(_EVENT_TYPE)
    end = value.find(b'"', begin)
    if end < 0:
        return None
    kind = value[begin:end]
    return None if b"\\" in kind else kind.decode("utf-8", "replace")
