"""Throughput: raw confluent-kafka consume vs allocguard's runtime vs a Quix Streams app, on the same pre-produced
topics of realistic Debezium messages (observability_events change events as Debezium writes them), at several
signal ratios (failure signatures and hold announcements, which reach the database; the rest are irrelevant).
Repetitions are interleaved (raw, allocguard, quix, raw, …) and every figure is a median; ratios are the point.

The mix at ``--ratios r``: r/2 of the events are ``allocations_no_overlap`` failures (each of its own booking, naming
a hold nobody announced: no window, so settled without an incident), r/2 are ``capacity.hold.created`` announcements
whose windows start a day after the topic is written (valid when consumed: they are remembered, not ignored as
expired), and the rest are ``auto_assign.attempt.*`` events no rule looks at. Each result line states its mix.

    python -m bench.throughput --messages 500000 --ratios 0,0.0001,0.01 --repeats 3 [--quix]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer

from bench import local_stack, pgbase
from consumer.config import RuntimeSettings
from consumer.local.stack import LocalStack
from consumer.runtime.loop import Runtime
from tests.support.clock import hold_window, iso_from_now
from tests.support.process import free_port

FIXTURE = (
    Path(__file__).resolve().parent.parent / "tests/fixtures/debezium/schemas_off/observability_events_lifecycle.json"
)


def messages(count: int, failure_ratio: float, prefix: str) -> list[tuple[bytes, bytes]]:
    start, end = hold_window()  # relative to now: a hold announced for a past window would be an expired hold
    created = iso_from_now()  # the fixture's recorded created_at would make every event days old
    template = json.loads(json.loads(FIXTURE.read_text())[0]["value"])
    template["source"]["name"] = prefix
    rng = random.Random(7)
    out = []
    for i in range(count):
        booking = str(uuid.UUID(int=rng.getrandbits(128)))
        after = dict(template["after"])
        after.update(id=str(uuid.UUID(int=rng.getrandbits(128))), booking_id=booking, created_at=created)
        roll = rng.random()
        if roll < failure_ratio:
            after.update(
                source="capacity.atomic_confirm",
                event_type="transaction.failed",
                severity="error",
                context=json.dumps({"holdId": str(uuid.uuid4()), "error": "allocations_no_overlap"}),
            )
        elif roll < 2 * failure_ratio:
            after.update(
                source="capacity.hold",
                event_type="capacity.hold.created",
                severity="info",
                context=json.dumps(
                    {
                        "holdId": str(uuid.uuid4()),
                        "tableIds": [str(uuid.uuid4())],
                        "startAt": start,
                        "endAt": end,
                    }
                ),
            )
        else:
            after.update(
                source="auto_assign",
                event_type=f"auto_assign.attempt.{i % 7}",
                severity="info",
                context=json.dumps({"attempt_index": i % 4, "trigger": "creation"}),
            )
        value = dict(template, after=after)
        # compact, as Debezium's JsonConverter writes it (no spaces after separators)
        compact = json.dumps(value, separators=(",", ":"))
        out.append((json.dumps({"booking_id": booking}, separators=(",", ":")).encode(), compact.encode()))
    return out


def raw_consume(bootstrap: str, topic: str, count: int) -> float:
    """The floor for Python that looks at every value: the client's consume loop, touching each message once."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-raw-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.queue.backoff.ms": 10,
        }
    )
    consumer.subscribe([topic])
    seen, first, last = 0, 0.0, 0.0
    deadline = time.monotonic() + 300
    while seen < count and time.monotonic() < deadline:
        for message in consumer.consume(500, 0.5):
            if message.error() is None and message.value() is not None:
                if not seen:
                    first = time.monotonic()
                seen += 1
                last = time.monotonic()
    consumer.close()
    assert seen == count, f"raw consumer saw {seen} of {count}"
    return count / (last - first)


def allocguard_consume(prefix: str, count: int) -> tuple[float, dict[str, float]]:
    settings = RuntimeSettings(
        topic_prefix=prefix,
        group_id=f"bench-ag-{uuid.uuid4()}",
        auto_offset_reset="earliest",
        mode="auto",
        health_host="127.0.0.1",
        health_port=free_port(),
        artifacts_dir=None,
    )
    runtime = Runtime(settings, once=True)
    runtime.run()
    stats = runtime.stats
    assert stats["completed"] == count, f"allocguard completed {stats['completed']} of {count}"
    return count / (stats["last_done_at"] - stats["first_at"]), stats


QUIX_VENV = Path(__file__).resolve().parent.parent / ".allocguard" / "bench-quix"


def quix_consume(bootstrap: str, topic: str, count: int) -> float:
    """The same job as a Quix Streams app, in its own virtualenv (created once; quixstreams pins an older
    confluent-kafka than allocguard's)."""
    python = QUIX_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(QUIX_VENV)], check=True)
        subprocess.run([str(QUIX_VENV / "bin" / "pip"), "install", "-q", "quixstreams==3.28.1"], check=True)
    app = Path(__file__).resolve().parent / "quix_app.py"
    done = subprocess.run(
        [str(python), str(app), bootstrap, topic, str(count)], capture_output=True, text=True, check=True, timeout=1800
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["events"] >= count, result
    return float(result["events_per_s"])


def produce(bootstrap: str, topic: str, count: int, ratio: float, prefix: str) -> int:
    """Writes the topic; returns how many of its messages are signals (failures and hold announcements)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1_000_000})
    signals = 0
    for key, value in messages(count, ratio, prefix):
        signals += b'"auto_assign.attempt.' not in value
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.5)
        producer.poll(0)
    producer.flush(120)
    return signals


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=500_000)
    parser.add_argument("--ratios", default="0,0.0001,0.01", help="signal ratios, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quix", action="store_true", help="also run the Quix Streams app (its own venv)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    stack = local_stack()
    results: list[dict[str, object]] = []
    pgbench = pgbase.pgbench_tps(stack.admin_dsn)
    print(json.dumps({"pgbench_tpcb_tps": round(pgbench)}), flush=True)
    for ratio in [float(r) for r in args.ratios.split(",")]:
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        topic = f"{prefix}.public.observability_events"
        LocalStack(stack, log=lambda line: None).ensure_topics([topic])
        signals = produce(stack.kafka_bootstrap, topic, args.messages, ratio / 2, prefix)  # half failures, half holds
        capture = None
        if signals:
            # once, untimed: which statements the signals cost (the same topic, a new group, the same work)
            with pgbase.capturing() as capture:
                allocguard_consume(prefix, args.messages)
        runs: dict[str, list[float]] = {"raw": [], "allocguard": [], "quix": []}
        for _ in range(args.repeats):
            runs["raw"].append(raw_consume(stack.kafka_bootstrap, topic, args.messages))
            runs["allocguard"].append(allocguard_consume(prefix, args.messages)[0])
            if args.quix:
                runs["quix"].append(quix_consume(stack.kafka_bootstrap, topic, args.messages))
        raw, ours = statistics.median(runs["raw"]), statistics.median(runs["allocguard"])
        entry: dict[str, object] = {
            "signal_ratio": ratio,
            "mix": {
                "failures": ratio / 2,
                "hold_announcements": ratio / 2,
                "hold_windows": "valid: start a day after the topic is written",
                "other": 1 - ratio,
            },
            "messages": args.messages,
            "signals": signals,
            "raw_events_per_s": round(raw),
            "allocguard_events_per_s": round(ours),
            "allocguard_vs_raw": round(ours / raw, 3),
            "runs": {k: [round(v) for v in vs] for k, vs in runs.items() if vs},
        }
        if runs["quix"]:
            quix = statistics.median(runs["quix"])
            entry["quix_events_per_s"] = round(quix)
            entry["allocguard_vs_quix"] = round(ours / quix, 2)
        if capture is not None:
            walls = pgbase.back_to_back(pgbase.render(capture, stack.pg_dsn), stack.pg_dsn)
            handled = signals * ours / args.messages  # signals/s at the median event rate
            # no consumer gets signals faster than raw consume delivers the topic: at a low ratio that, not
            # PostgreSQL, is the most any consumer could handle
            delivered = signals * raw / args.messages
            attainable = min(delivered, signals / walls["best"])
            entry.update(
                raw_consume_signals_per_s=round(delivered),
                signals_vs_attainable=round(handled / attainable, 3),
                allocguard_signals_per_s=round(handled),
                postgres_back_to_back_signals_per_s=round(signals / walls["best"]),
                postgres_back_to_back_wall_s={k: round(v, 3) for k, v in walls.items()},
                signals_vs_postgres=round(handled / (signals / walls["best"]), 3),
                signals_vs_postgres_one_client=round(handled / (signals / walls["1"]), 3),
                statements_per_signal=round(capture.statements / signals, 2),
                transactions_per_signal=round(capture.transactions / signals, 2),
            )
        results.append(entry)
        print(json.dumps(entry), flush=True)
    print(json.dumps({"benchmark": "throughput", "pgbench_tpcb_tps": round(pgbench), "results": results}, indent=2))


if __name__ == "__main__":
    main()
