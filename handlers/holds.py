"""The hold memory: announced holds kept in this process, written to the database only when a failure needs one.

Every booking attempt announces a hold, and almost every attempt succeeds: writing each announcement down cost
PostgreSQL ≈ 40 µs of CPU (a JSON row parsed, a row and three index entries written) — on two cores, the bound on
healthy traffic. A hold matters only when a failure of its booking arrives, usually seconds later, on the same
partition (the topic is keyed by booking). So the announcement is kept here (:class:`HoldMemory`, bounded), and a
failure's first steps write the hold they recall into ``allocguard.hold_observations`` in the same round trip as
before — where its expiry is judged on the database's clock, and where the incident's later steps and the trace
links read it.

What this process never saw, or no longer holds (a restart, a rebalance, an eviction under a long backlog), is
still durable: the announcement is a row of the platform's ``observability_events``, which the CDC read it from.
:meth:`Remediator._holds_for` reads the booking's announcements there (the booking index) and classifies them as
the stream would have — so an offset committed for a hold announcement never loses the hold.
"""

from __future__ import annotations

from collections import OrderedDict

from handlers.detect import FailureSeen, HoldNote

#: holds kept: ≈ 600 bytes each (≈ 12 MB); at the platform's normal rate (≈ 5 bookings/s) about an hour of them
MEMORY_SIZE = 20_000


class HoldMemory:
    """The latest ``size`` hold announcements this process saw, by hold id, and each booking's latest.

    One writer (the thread that reads the stream, or a booking's own work item, in the booking's order); readers
    on other threads only look up (single dict reads, atomic under the GIL)."""

    def __init__(self, size: int = MEMORY_SIZE) -> None:
        self._size = size
        self._holds: OrderedDict[str, HoldNote] = OrderedDict()
        self._latest: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._holds)

    def remember(self, hold: HoldNote) -> None:
        holds = self._holds
        holds.pop(hold.hold_id, None)
        holds[hold.hold_id] = hold
        if hold.booking_id is not None:
            self._latest[hold.booking_id] = hold.hold_id
        if len(holds) > self._size:
            _, old = holds.popitem(last=False)
            if old.booking_id is not None and self._latest.get(old.booking_id) == old.hold_id:
                del self._latest[old.booking_id]

    def recall(self, failure: FailureSeen) -> HoldNote | None:
        """The hold the failure names; for a failure that names none (``auto_assign`` events), its booking's latest.
        None when not held here (the caller looks in the platform's rows)."""
        if failure.hold_id is not None:
            return self._holds.get(str(failure.hold_id))
        hold_id = self._latest.get(str(failure.booking_id))
        return None if hold_id is None else self._holds.get(hold_id)
