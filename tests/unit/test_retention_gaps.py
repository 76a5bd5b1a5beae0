"""A partition librdkafka stopped fetching mid-run (retention ran past its position) is positioned again at the
earliest retained record: what may be committed there follows from where reading resumed, not from what the
tracker saw before the gap — else a partition that gets nothing new keeps its commit below the gap after the
backfill, and every restart finds the same gap again (the chaos file ``test_retention_gap.py`` plays it live)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import TopicPartition

from consumer.config import RuntimeSettings
from consumer.operations.reconcile import Sweep
from consumer.runtime import backfill
from consumer.runtime.backfill import Backfill
from consumer.runtime.gaps import Gap
from consumer.runtime.health import Health
from consumer.runtime.offsets import OffsetTracker
from consumer.runtime.retention import Gaps
from consumer.telemetry import Metrics
from handlers import store
from handlers.detect import DetectionRules
from tests.support.process import wait_for

TOPIC = "platform.public.observability_events"


class Consumer:
    """What :meth:`Gaps.reposition` asks of the consumer: the log's range, the group's commit, an assignment."""

    def __init__(self, low: int, high: int, committed: int) -> None:
        self.marks, self.commit = (low, high), committed
        self.assigned: list[TopicPartition] = []

    def get_watermark_offsets(self, where: TopicPartition, timeout: float) -> tuple[int, int]:
        return self.marks

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(p.topic, p.partition, self.commit) for p in partitions]

    def incremental_unassign(self, partitions: list[TopicPartition]) -> None:
        pass

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned += partitions


def repositioned(tracker: OffsetTracker, requested: int, low: int) -> tuple[Consumer, list[Gap]]:
    consumer = Consumer(low, low + 5, committed=requested - 10)
    found: list[Gap] = []
    gaps = Gaps(
        consumer,  # type: ignore[arg-type]
        Health(),
        tracker,
        Metrics(),
        latest=True,
        handled_ms=lambda key: int(time.time() * 1000),
        on_gap=found.append,
    )
    gaps.out_of_range(TOPIC, 0, requested)
    gaps.reposition()
    return consumer, found


def test_reading_resumes_past_a_gap_and_the_commit_follows_it() -> None:
    tracker = OffsetTracker()
    for offset in range(30, 38):  # read and done before the cut
        tracker.started(TOPIC, 0, offset)
        tracker.completed(TOPIC, 0, offset)
    consumer, found = repositioned(tracker, requested=38, low=41)
    assert [(g.lost_from, g.lost_to) for g in found] == [(38, 41)]
    assert [(p.partition, p.offset) for p in consumer.assigned] == [(0, 41)]
    assert tracker.position(TOPIC, 0) == 41, "nothing in flight: the commit may move to where reading resumed"


def test_work_in_flight_from_before_the_gap_still_holds_the_commit() -> None:
    tracker = OffsetTracker()
    tracker.started(TOPIC, 0, 36)  # a slow signal, still in flight
    tracker.started(TOPIC, 0, 37)
    tracker.completed(TOPIC, 0, 37)
    _, found = repositioned(tracker, requested=38, low=41)
    assert len(found) == 1
    assert tracker.position(TOPIC, 0) == 36, "the slow signal holds its partition's commit"
    tracker.completed(TOPIC, 0, 36)
    assert tracker.position(TOPIC, 0) == 41


def test_the_gaps_of_one_cut_are_filled_by_one_read_and_one_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cut reaches every partition the group lags on, and the source's rows carry no partition: the gaps found
    together are filled by one read of their joint time range and one reconcile sweep (they were a read and a
    sweep each), and each gap's commit moves on after it."""
    reads: list[tuple[datetime, datetime]] = []
    sweeps: list[str] = []
    now = datetime.now(UTC)
    retained = {0: now - timedelta(minutes=3), 1: now - timedelta(minutes=1), 2: now - timedelta(minutes=2)}
    retained |= {3: now, 4: now}
    filled: list[Gap] = []
    broken: list[bool] = []  # the next read raises (a bug, not the database)

    def read(conn: object, since: datetime, until: datetime, kinds: object) -> list[object]:
        reads.append((since, until))
        if broken:
            broken.clear()
            raise RuntimeError("a bug in the fill")
        return []

    def sweep(settings: object, **kwargs: object) -> Sweep:
        sweeps.append(str(kwargs["actor"]))
        return Sweep()

    monkeypatch.setattr(backfill, "first_retained_time", lambda config, topic, partition, offset: retained[partition])
    monkeypatch.setattr(store, "signal_events_between", read)
    monkeypatch.setattr(backfill, "reconcile", sweep)

    class Ride:
        def until_through(self, work: Callable[[], object], what: str) -> object:
            return work()

    fill = Backfill(
        RuntimeSettings(),
        {},
        lambda: nullcontext(object()),  # type: ignore[arg-type]
        DetectionRules(),
        None,  # type: ignore[arg-type]  # no event to hand to the scheduler
        lambda event, key: None,
        Ride(),  # type: ignore[arg-type]
        Metrics(),
        threading.Event(),
        filled=filled.append,
    )
    found = [Gap(TOPIC, p, 10, 20, now - timedelta(minutes=10 - p)) for p in range(3)]
    for gap in found:
        fill.start(gap)
    wait_for("every gap filled", lambda: len(filled) == 3, timeout=10, interval=0.02)
    assert sorted(g.partition for g in filled) == [0, 1, 2], "each gap's commit moves on"
    assert len(reads) == 1, reads
    assert len(sweeps) == 1, sweeps
    margin = timedelta(minutes=1)
    assert reads == [(now - timedelta(minutes=10) - margin, now - timedelta(minutes=1) + margin)], "the joint range"

    broken.append(True)
    fill.start(Gap(TOPIC, 3, 10, 20, now))
    wait_for("the broken fill tried", lambda: len(reads) == 2, timeout=10, interval=0.02)
    fill.start(Gap(TOPIC, 4, 10, 20, now))
    wait_for("a later gap filled", lambda: len(filled) == 4, timeout=10, interval=0.02)
    assert [g.partition for g in filled[3:]] == [4], "the gap whose fill failed stays open; the next one fills"
