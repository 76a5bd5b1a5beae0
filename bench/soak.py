"""Soak: ``allocguard run --mode auto --prevention`` (a subprocess) under steady traffic for ``--minutes``; its
resident memory sampled every 10 s, the slope fitted, and every played incident checked at the end.

Traffic: one orphan-by-reseat incident every ``--every`` seconds (its own restaurant, the platform's job left out
so that allocguard is the one that seats the victim), which also exercises prevention on the re-seat. With
``--burst-messages N``, every ``--burst-every`` seconds a backlog of N Debezium-shaped ``observability_events``
(1 % signals: failures of unknown bookings and hold announcements, as in ``bench/throughput.py``) is written to
the same topic, so that the batched signal path runs too.

    python -m bench.soak --minutes 60 --every 2 [--burst-messages 50000 --burst-every 60]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from bench import local_stack
from bench.latency import rss_mb
from bench.throughput import produce
from consumer.local.simulator import PlatformApp, orphan_by_reseat
from tests.support.process import RuntimeProcess


def slope_mb_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB), per hour."""
    if len(samples) < 2:
        return 0.0
    xs, ys = [s[0] for s in samples], [s[1] for s in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 3600


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between incidents")
    parser.add_argument("--burst-messages", type=int, default=0, help="a backlog of this many events every burst")
    parser.add_argument("--burst-every", type=float, default=60.0)
    args = parser.parse_args()
    settings = local_stack()
    played: list[uuid.UUID] = []
    samples: list[tuple[float, float]] = []
    failures_to_play = 0
    with tempfile.TemporaryDirectory() as folder:
        runtime = RuntimeProcess(
            Path(folder) / "run.log",
            f"bench-soak-{uuid.uuid4().hex[:8]}",
            env={"ALLOCGUARD_PREVENTION": "true"},
        )
        try:
            runtime.wait_ready()
            started = time.monotonic()
            next_sample = started
            next_play = started
            end = started + args.minutes * 60
            bursts = 0
            stop_bursts = threading.Event()
            if args.burst_messages:

                def burst() -> None:
                    nonlocal bursts
                    topic = f"{settings.topic_prefix}.public.observability_events"
                    while not stop_bursts.wait(args.burst_every):
                        produce(settings.kafka_bootstrap, topic, args.burst_messages, 0.005, settings.topic_prefix)
                        bursts += 1

                threading.Thread(target=burst, name="bursts", daemon=True).start()
            with psycopg.connect(settings.platform_dsn, autocommit=True) as conn:
                app = PlatformApp(conn)
                while time.monotonic() < end:
                    now = time.monotonic()
                    if now >= next_sample:
                        samples.append((now - started, rss_mb(runtime.process.pid)))
                        next_sample += 10.0
                    if now >= next_play:
                        try:
                            scenario = orphan_by_reseat(app, job_attempts=0)
                            if scenario.victim_id is not None:
                                played.append(scenario.victim_id)
                        except psycopg.Error:
                            failures_to_play += 1
                        next_play += args.every
                    time.sleep(max(0.0, min(next_sample, next_play) - time.monotonic()))  # the schedule itself
                stop_bursts.set()
                deadline = time.monotonic() + 60
                pending = set(played)
                while pending and time.monotonic() < deadline:
                    rows = conn.execute(
                        "SELECT id FROM bookings WHERE id = ANY(%s) AND status = 'confirmed'", (list(pending),)
                    ).fetchall()
                    pending -= {r[0] for r in rows}
                    time.sleep(0.5)  # the last incidents settle
            samples.append((time.monotonic() - started, rss_mb(runtime.process.pid)))
        finally:
            code, _ = runtime.stop()
        tracebacks = runtime.log().count("Traceback")
    rss = [s[1] for s in samples]
    first_10 = [s[1] for s in samples if s[0] <= 600] or rss[:1]
    after_10 = [s[1] for s in samples if s[0] > 600]
    doc: dict[str, Any] = {
        "benchmark": "soak",
        "minutes": args.minutes,
        "incidents_played": len(played),
        "incidents_not_confirmed": len(pending),
        "could_not_play": failures_to_play,
        "bursts": {"count": bursts, "messages_each": args.burst_messages, "signal_ratio": 0.01},
        "exit_code": code,
        "tracebacks": tracebacks,
        "rss_mb": {
            "start": round(rss[0], 1),
            "peak": round(max(rss), 1),
            "end": round(rss[-1], 1),
            "slope_mb_per_hour_all": round(slope_mb_per_hour(samples), 2),
            "slope_mb_per_hour_after_10_min": round(slope_mb_per_hour([s for s in samples if s[0] > 600]), 2),
            "mean_first_10_min": round(statistics.fmean(first_10), 1),
            "mean_after_10_min": round(statistics.fmean(after_10), 1) if after_10 else None,
            "samples": len(samples),
            # per 10 minutes: the mean, and the least (between backlogs: where a leak would show first)
            "by_10_min": [
                {"mean": round(statistics.fmean(w), 1), "least": round(min(w), 1)}
                for w in (
                    [s[1] for s in samples if n * 600 <= s[0] < (n + 1) * 600]
                    for n in range(int(args.minutes // 10) + 1)
                )
                if w
            ],
        },
        "target_rss_mb": 150,
    }
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
