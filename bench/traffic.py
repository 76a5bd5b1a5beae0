"""The platform's real traffic, as Debezium writes it to the ``observability_events`` topic (../shared/domain.md §3):
per booking a 10-event lifecycle — ``auto_assign.started``, a ≈ 2.5 KB ``capacity.selector.quote``, one
``capacity.hold.created`` with a valid window, ``transaction.started``/``succeeded``, ``capacity.hold.confirmed``,
``auto_assign.attempt``/``succeeded``/``summary``, ``capacity.assignment.synchronized`` — so one event in ten is a
signal (a hold announcement).

Mixes:

- ``quiet``: the lifecycle without the hold announcement (a ``capacity.hold.extended`` in its place): 0 signals;
- ``healthy``: the lifecycle as it is (10 % signals);
- ``storm``: healthy, and ``--fail`` of the bookings (1 %) fail: four attempts, each announcing its hold, each
  emitting three ``allocations_no_overlap`` failure events (``transaction.failed``, ``auto_assign.quote`` with a
  planner error, ``auto_assign.attempt_error``) — 12 per failed booking, 11 of them more events of the same
  incident. The failed bookings do not exist in the bench's database: each incident is recorded and settled
  without a prune.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.clock import hold_window, iso_from_now

FIXTURE = (
    Path(__file__).resolve().parent.parent / "tests/fixtures/debezium/schemas_off/observability_events_lifecycle.json"
)
MIXES = ("quiet", "healthy", "storm")


class Traffic:
    def __init__(self, prefix: str, seed: int = 7) -> None:
        self.start, self.end = hold_window()  # relative to now: announced holds are valid when consumed
        self.created = iso_from_now()
        template = json.loads(json.loads(FIXTURE.read_text())[0]["value"])
        template["source"]["name"] = prefix
        self.template = template
        self.rng = random.Random(seed)
        self.restaurants = [self.uuid() for _ in range(20)]
        self.tables = {r: [self.uuid() for _ in range(12)] for r in self.restaurants}
        self.lsn = 100_000_000

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def event(self, booking: str, restaurant: str, source: str, kind: str, severity: str, context: Any) -> bytes:
        self.lsn += 512
        after = dict(
            self.template["after"],
            id=self.uuid(),
            created_at=self.created,
            source=source,
            event_type=kind,
            severity=severity,
            context=json.dumps(context),
            restaurant_id=restaurant,
            booking_id=booking,
        )
        # source.sequence as Debezium writes it: compact (["100001024","100001536"])
        sequence = json.dumps([str(self.lsn - 512), str(self.lsn)], separators=(",", ":"))
        block = dict(self.template["source"], lsn=self.lsn, sequence=sequence)
        value = dict(self.template, after=after, source=block)
        return json.dumps(value, separators=(",", ":")).encode()  # compact, as JsonConverter writes it

    def quote(self, booking: str, restaurant: str, hold: str, tables: list[str]) -> dict[str, Any]:
        """The selector's quote: the largest event of the lifecycle (≈ 2.5 KB of context)."""
        candidates = [
            {
                "tableIds": [t],
                "tableNumbers": [f"T{n}"],
                "totalCapacity": 4,
                "slack": 1,
                "score": round(self.rng.random(), 4),
                "scoreBreakdown": {"slack": 0.2, "adjacency": 0, "zone": 0.1, "balance": 0.05},
            }
            for n, t in enumerate(self.tables[restaurant][:5])
        ]
        return {
            "restaurantId": restaurant,
            "bookingId": booking,
            "partySize": 3,
            "window": {"start": self.start, "end": self.end},
            "selected": {
                "tableIds": tables,
                "tableNumbers": ["T1"],
                "totalCapacity": 4,
                "tableCount": 1,
                "slack": 1,
                "score": 0.91,
                "adjacencyStatus": "single",
                "scoreBreakdown": {"slack": 0.2, "adjacency": 0, "zone": 0.1, "balance": 0.05},
            },
            "candidates": candidates,
            "durationMs": 41,
            "featureFlags": {"plannerCache": True, "retryPolicyV2": True, "adjacencyV2": False},
            "timing": {"loadMs": 12, "planMs": 21, "holdMs": 8},
            "plannerConfig": {"maxTables": 3, "requireAdjacency": False, "bufferPreMin": 15, "bufferPostMin": 15},
            "diagnostics": {"considered": 12, "rejected": {"capacity": 3, "busy": 1}},
            "holdId": hold,
            "expiresAt": self.end,
            "type": "auto",
        }

    def hold(self, booking: str, restaurant: str, hold: str, tables: list[str], kind: str) -> bytes:
        return self.event(
            booking,
            restaurant,
            "capacity.hold",
            kind,
            "info",
            {
                "holdId": hold,
                "bookingId": booking,
                "restaurantId": restaurant,
                "zoneId": restaurant,
                "tableIds": tables,
                "startAt": self.start,
                "endAt": self.end,
                "expiresAt": self.end,
                "actorId": None,
                "metadata": {"requireAdjacency": False, "policyVersion": "v2"},
            },
        )

    def booking(self, mix: str, fails: bool) -> Iterator[tuple[bytes, bytes]]:
        booking, restaurant = self.uuid(), self.rng.choice(self.restaurants)
        key = json.dumps({"booking_id": booking}, separators=(",", ":")).encode()
        tables = [self.rng.choice(self.tables[restaurant])]
        hold = self.uuid()
        kind = "capacity.hold.extended" if mix == "quiet" else "capacity.hold.created"

        def ev(source: str, event_type: str, severity: str, context: Any) -> tuple[bytes, bytes]:
            return key, self.event(booking, restaurant, source, event_type, severity, context)

        def attempt(hold: str, announced: str) -> Iterator[tuple[bytes, bytes]]:
            """An attempt's start: the quote, the hold it announces, the confirm transaction begun."""
            yield ev(
                "capacity.selector", "capacity.selector.quote", "info", self.quote(booking, restaurant, hold, tables)
            )
            yield key, self.hold(booking, restaurant, hold, tables, announced)
            yield ev(
                "capacity.atomic_confirm",
                "transaction.started",
                "info",
                {"holdId": hold, "idempotencyKey": f"auto-{booking}"},
            )

        yield ev("auto_assign", "auto_assign.started", "info", {"trigger": "creation", "attempt_index": 0})
        if fails:
            for index in range(4):
                hold = self.uuid()
                yield from attempt(hold, "capacity.hold.created")
                yield ev(
                    "capacity.atomic_confirm",
                    "transaction.failed",
                    "error",
                    {"holdId": hold, "idempotencyKey": f"auto-{booking}", "error": "allocations_no_overlap"},
                )
                yield ev(
                    "auto_assign",
                    "auto_assign.quote",
                    "warning",
                    {
                        "planner_success": False,
                        "planner_reason": "AssignTablesRpcError",
                        "attempt_index": index,
                        "planner_error": "allocations_no_overlap",
                    },
                )
                yield ev(
                    "auto_assign",
                    "auto_assign.attempt_error",
                    "warning",
                    {"attempt_index": index, "error": "allocations_no_overlap", "reasonCode": "transient.rpc_error"},
                )
            yield ev("auto_assign", "auto_assign.summary", "info", {"attemptsUsed": 4, "result": "exhausted"})
            return
        yield from attempt(hold, kind)
        yield ev(
            "capacity.atomic_confirm",
            "transaction.succeeded",
            "info",
            {"holdId": hold, "idempotencyKey": f"auto-{booking}"},
        )
        yield ev("capacity.hold", "capacity.hold.confirmed", "info", {"holdId": hold, "bookingId": booking})
        yield ev("auto_assign", "auto_assign.attempt", "info", {"attempt_index": 0, "trigger": "creation"})
        yield ev("auto_assign", "auto_assign.succeeded", "info", {"attempt_index": 0, "tableIds": tables})
        yield ev("auto_assign", "auto_assign.summary", "info", {"attemptsUsed": 1, "result": "succeeded"})
        yield ev(
            "capacity.sync", "capacity.assignment.synchronized", "info", {"bookingId": booking, "tableIds": tables}
        )


def messages(
    count: int, mix: str, prefix: str, fail: float = 0.01, seed: int = 7
) -> tuple[list[tuple[bytes, bytes]], int]:
    """``count`` messages of the mix (whole bookings, the last one cut), and how many are signals. Another ``seed``
    gives other bookings and event ids of the same shape (a storm read twice would meet its own processed
    events)."""
    if mix not in MIXES:
        raise ValueError(f"unknown mix {mix!r}: one of {', '.join(MIXES)}")
    traffic = Traffic(prefix, seed)
    out: list[tuple[bytes, bytes]] = []
    while len(out) < count:
        fails = mix == "storm" and traffic.rng.random() < fail
        out.extend(traffic.booking(mix, fails))
    del out[count:]
    signals = sum(b'"capacity.hold.created"' in v or b"allocations_no_overlap" in v for _, v in out)
    return out, signals
