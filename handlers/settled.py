"""Incidents this process saw settled for good, so that the next failure events of the same attempt are answered
without a round trip.

A failed platform attempt emits 12 or 13 ``allocations_no_overlap`` events (``../shared/domain.md`` §3): the first is
the incident, the rest are more events of it. On the database path each of those costs three statements and three
commits (its first steps, the fold into the incident, the processed marker) — under a failure storm, the bound on
the whole stream. Here the outcome of such an event is known in memory: its hold (:class:`~handlers.holds.HoldMemory`,
in stream order) names the incident's window, and this memory says the incident of that (booking, window) is
settled for good. Its effect — the incident's count and sources, the processed marker — is still written, many
events per statement (:func:`handlers.store.fold_duplicates`), before its offset is committed.

Only final statuses are kept (``resolved``, ``not_needed``, ``manual_review``, ``rejected``): nothing moves an
incident out of them, so no other process can make an answer here wrong. ``awaiting_approval`` is not final (its
plan may expire, and the next failure plans afresh). Only incidents whose window came from a hold are kept: a
booking's window is read from the platform and may have changed since. The hold must still have been valid when
the failure happened (event time, never the local clock).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from handlers.detect import FailureSeen, HoldNote
from schemas.records import Incident

#: statuses nothing moves an incident out of
FINAL = frozenset({"resolved", "not_needed", "manual_review", "rejected"})

#: incidents kept: ≈ 250 bytes each (≈ 5 MB)
SETTLED_SIZE = 20_000

Key = tuple[str, datetime, datetime]


@dataclass(frozen=True, slots=True)
class Settled:
    """An incident settled for good, and the span that handled it (later events link to it)."""

    incident_id: UUID
    trace: tuple[str, str] | None


class SettledMemory:
    """The latest ``size`` incidents settled for good, by (booking, window). Written by the thread that settled the
    incident; read by the stream's thread and the booking's later work (single dict operations, atomic under the
    GIL)."""

    def __init__(self, size: int = SETTLED_SIZE) -> None:
        self._size = size
        self._settled: OrderedDict[Key, Settled] = OrderedDict()

    def __len__(self) -> int:
        return len(self._settled)

    def note(self, incident: Incident, incident_id: UUID, status: str, trace: tuple[str, str] | None = None) -> None:
        """An incident's status as it was just read or written: kept when it is final and its window a hold's."""
        window = incident.window
        if status not in FINAL or incident.window_source != "hold" or window.bounds != "[)":
            return
        if window.lower is None or window.upper is None:
            return
        key = (str(incident.booking_id), window.lower, window.upper)
        settled = self._settled
        settled.pop(key, None)
        settled[key] = Settled(incident_id, trace)
        if len(settled) > self._size:
            settled.popitem(last=False)

    def answer(self, failure: FailureSeen, hold: HoldNote | None) -> Settled | None:
        """The settled incident this failure is one more event of, when the hold it recalls says so; None when only
        the database path can tell."""
        if hold is None or hold.expires_at <= failure.created_at:
            return None
        booking = str(failure.booking_id)
        if hold.booking_id is not None and hold.booking_id != booking:
            return None
        if failure.restaurant_id is None and hold.restaurant_id is None:
            return None
        return self._settled.get((booking, hold.start, hold.end))

    def forget(self, incident_id: UUID) -> None:
        """An incident that is gone (deleted by an operator): the database path answers its events again."""
        for key in [k for k, v in self._settled.items() if v.incident_id == incident_id]:
            del self._settled[key]
