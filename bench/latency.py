"""Latency: failure committed in PostgreSQL → victim confirmed, through real Debezium and ``allocguard run``
(a subprocess), p50/p99 over many incidents; the CDC floor (commit → confluent-kafka ``poll``) is measured in
the same run, and the consumer's resident memory is read at the end.

    python -m bench.latency --incidents 100 [--stream-rate 500]

``--stream-rate N`` writes the platform's healthy traffic (bench/traffic.py: every booking's lifecycle, one hold
announcement in ten events) to the same topic at N events/s while the incidents play — the issue's "10 times the
normal rate" is 500 — and reports the rate it held.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from datetime import time as dtime
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, Producer

from bench import local_stack, traffic
from consumer.local.platform import create_booking, create_venue
from consumer.local.settings import StackSettings
from consumer.local.simulator import Hold, PlatformApp, tomorrow
from consumer.runtime.offsets import end_positions
from tests.support.process import RuntimeProcess

Conn = psycopg.Connection[Any]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "mean_ms": round(statistics.fmean(ms), 1),
        "max_ms": round(max(ms), 1),
    }


def cdc_floor(settings: StackSettings, conn: Conn, samples: int) -> list[float]:
    """One observability row autocommitted → the same row returned by poll (not a signal: allocguard ignores it)."""
    topic = f"{settings.topic_prefix}.public.observability_events"
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"floor-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
        }
    )
    consumer.assign(end_positions(consumer, [topic]))
    latencies = []
    for _ in range(samples):
        marker = str(uuid.uuid4())
        conn.execute(
            "INSERT INTO observability_events (source, event_type, context, booking_id)"
            " VALUES ('bench', 'bench.floor', jsonb_build_object('marker', %s::text), %s)",
            (marker, uuid.uuid4()),
        )
        committed = time.monotonic()
        while True:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None and marker.encode() in (message.value() or b""):
                latencies.append(time.monotonic() - committed)
                break
    consumer.close()
    return latencies


def blocked_victim(app: PlatformApp) -> tuple[uuid.UUID, Hold, uuid.UUID]:
    """A venue of one table that an hour-old orphan allocation still blocks, and a victim quoted on it: (victim,
    its hold, the restaurant)."""
    conn = app.conn
    venue = create_venue(conn, tables=1, capacity=2)
    owner = create_booking(conn, venue, day=tomorrow(), start=dtime(19), end=dtime(21))
    app.reseat_direct(owner, [venue.table_ids[0]])
    conn.execute("DELETE FROM booking_table_assignments WHERE booking_id = %s", (owner,))
    app.age_allocations(owner, timedelta(hours=1))
    victim = create_booking(conn, venue, day=tomorrow(), start=dtime(19, 30), end=dtime(21))
    hold = app.quote(victim, tables=[venue.table_ids[0]])
    assert hold is not None
    return victim, hold, venue.restaurant_id


def incidents(app: PlatformApp, count: int) -> list[float]:
    """Each: an orphan on the only free table, a victim whose confirm fails on it; time until confirmed."""
    conn = app.conn
    latencies = []
    for _ in range(count):
        victim, hold, _ = blocked_victim(app)
        # the failure event commits inside confirm(), before it releases the hold: start the clock just after
        result = app.confirm(hold, key=f"api-{victim}", reason="api_inline_auto_assign", source="api-inline")
        failed = time.monotonic()
        assert not result.ok
        deadline = failed + 30
        while time.monotonic() < deadline:
            row = conn.execute("SELECT status::text FROM bookings WHERE id = %s", (victim,)).fetchone()
            if row == ("confirmed",):
                latencies.append(time.monotonic() - failed)
                break
            time.sleep(0.001)
        else:
            raise AssertionError(f"victim {victim} not confirmed within 30s")
    return latencies


class Stream:
    """The platform's healthy traffic written to the topic at ``rate`` events/s, in 20 ms steps, on a thread."""

    def __init__(self, settings: StackSettings, rate: float) -> None:
        self._topic = f"{settings.topic_prefix}.public.observability_events"
        self._producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})
        self._messages, _ = traffic.messages(max(10_000, int(rate * 120)), "healthy", settings.topic_prefix)
        self._rate = rate
        self._stop = threading.Event()
        self.sent = 0
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="bench-stream", daemon=True)

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._producer.flush(10)

    def _run(self) -> None:
        began = time.monotonic()
        while not self._stop.wait(0.02):
            due = int((time.monotonic() - began) * self._rate)
            while self.sent < due:
                key, value = self._messages[self.sent % len(self._messages)]
                self._producer.produce(self._topic, key=key, value=value)
                self.sent += 1
            self._producer.poll(0)
        self.seconds = time.monotonic() - began


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--incidents", type=int, default=100)
    parser.add_argument("--floor-samples", type=int, default=200)
    parser.add_argument("--stream-rate", type=float, default=0.0, help="healthy traffic beside it, events/s")
    parser.add_argument(
        "--warmup", type=int, default=3, help="incidents played first and reported apart (the process's first ones)"
    )
    args = parser.parse_args()
    settings = local_stack()
    with tempfile.TemporaryDirectory() as folder:
        runtime = RuntimeProcess(Path(folder) / "run.log", f"bench-latency-{uuid.uuid4().hex[:8]}")
        try:
            runtime.wait_ready()
            stream = Stream(settings, args.stream_rate) if args.stream_rate else None
            with psycopg.connect(settings.platform_dsn, autocommit=True) as conn:
                floor = cdc_floor(settings, conn, args.floor_samples)
                # the first incidents of a fresh process pay its warm-up (connections, prepared statements, lazy
                # imports): reported apart, as the first ones, not mixed into the steady state's percentiles
                first = incidents(PlatformApp(conn), args.warmup)
                if stream is not None:
                    with stream:
                        remediation = incidents(PlatformApp(conn), args.incidents)
                else:
                    remediation = incidents(PlatformApp(conn), args.incidents)
            resident = rss_mb(runtime.process.pid)
        finally:
            runtime.stop()
    floor_s, rem_s = summary(floor), summary(remediation)
    print(
        json.dumps(
            {
                "benchmark": "latency",
                "cdc_floor_commit_to_poll": floor_s,
                "failure_committed_to_victim_confirmed": rem_s,
                "p99_above_floor_ms": round(rem_s["p99_ms"] - floor_s["p99_ms"], 1),
                "p50_above_floor_ms": round(rem_s["p50_ms"] - floor_s["p50_ms"], 1),
                "first_incidents_ms": [round(v * 1000, 1) for v in first],
                "target_p99_above_floor_ms": 100 if stream is not None else 30,
                "stream_events_per_s": round(stream.sent / stream.seconds, 1) if stream and stream.seconds else 0,
                "allocguard_run_rss_mb_after": round(resident, 1),
                "target_rss_mb": 150,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
