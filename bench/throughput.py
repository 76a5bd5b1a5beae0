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
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from bench import local_stack, scratch_topics, statements, traffic
from consumer.config import RuntimeSettings
from consumer.local.settings import StackSettings
from consumer.local.stack import LocalStack
from consumer.runtime.loop import Runtime
from tests.support.clock import hold_window, iso_from_now
from tests.support.process import RuntimeProcess, free_port

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
    batch = messages(count, ratio, prefix)
    write(bootstrap, topic, batch)
    return sum(b'"auto_assign.attempt.' not in value for _, value in batch)


def write(bootstrap: str, topic: str, batch: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1_000_000})
    for key, value in batch:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.5)
        producer.poll(0)
    producer.flush(120)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set so far (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def process_consume(prefix: str, topic: str, count: int, folder: Path) -> tuple[float, float]:
    """``allocguard run`` as its own process, black box: its group's committed offsets read every 50 ms, from the
    first commit to the one that covers the whole topic (events/s; it commits every 100 ms here), and the
    process's peak RSS (MB)."""
    group = f"bench-run-{uuid.uuid4().hex[:8]}"
    runtime = RuntimeProcess(
        folder / f"{group}.log",
        group,
        env={
            "ALLOCGUARD_TOPIC_PREFIX": prefix,
            "ALLOCGUARD_AUTO_OFFSET_RESET": "earliest",
            "ALLOCGUARD_DLQ_TOPIC": f"{prefix}.dlq",
            "OTEL_TRACES_EXPORTER": "none",
            # commits every 100 ms instead of 1 s: the resolution of this black-box measurement
            "ALLOCGUARD_KAFKA_CONFIG": json.dumps({"auto.commit.interval.ms": "100"}),
        },
    )
    watcher = Consumer({"bootstrap.servers": os.environ["ALLOCGUARD_KAFKA_BOOTSTRAP"], "group.id": group})
    try:
        partitions = [TopicPartition(topic, p) for p in watcher.list_topics(topic, timeout=10).topics[topic].partitions]
        first = last = 0.0
        first_done = 0
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            done = sum(max(0, p.offset) for p in watcher.committed(partitions, timeout=10))
            now = time.monotonic()
            if done and not first:
                first, first_done = now, done
            if done >= count:
                last = now
                break
            if runtime.process.poll() is not None:
                raise RuntimeError(f"allocguard run exited early: see {runtime.log_path}")
            time.sleep(0.05)  # a sampling interval, not a wait for something
        assert last, f"allocguard run committed {done} of {count} in time"
        return (count - first_done) / max(last - first, 1e-3), peak_rss_mb(runtime.process.pid)
    finally:
        watcher.close()
        runtime.stop()


def measure(
    stack: StackSettings,
    batch: list[tuple[bytes, bytes]],
    signals: int,
    args: argparse.Namespace,
    fresh: Callable[[int], list[tuple[bytes, bytes]]] | None = None,
) -> dict[str, object]:
    """One topic: raw, allocguard in process, ``allocguard run`` as its own process, the Quix app — interleaved,
    ``--repeats`` times; medians and ratios. With ``fresh`` (a mix that writes incidents: the storm), each
    allocguard run reads a topic of its own, written just before it from another seed — the same shape, other
    bookings and event ids (a topic read twice would meet its own processed events) — and the in-process runs
    count the statements and transactions per incident and per duplicate event."""
    with scratch_topics(stack) as written:
        return _measure(stack, batch, signals, args, fresh, written)


def _measure(
    stack: StackSettings,
    batch: list[tuple[bytes, bytes]],
    signals: int,
    args: argparse.Namespace,
    fresh: Callable[[int], list[tuple[bytes, bytes]]] | None,
    written: list[str],
) -> dict[str, object]:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.public.observability_events"
    LocalStack(stack, log=lambda line: None).ensure_topics([topic])
    written.append(topic)
    count = len(batch)
    write(stack.kafka_bootstrap, topic, batch)
    runs: dict[str, list[float]] = {"raw": [], "allocguard": [], "allocguard_run_process": [], "quix": []}
    peaks: list[float] = []
    counts: list[dict[str, object]] = []

    def own_topic() -> tuple[str, str, int]:
        if fresh is None:
            return prefix, topic, count
        own = f"bench{uuid.uuid4().hex[:8]}"
        own_topic = f"{own}.public.observability_events"
        LocalStack(stack, log=lambda line: None).ensure_topics([own_topic])
        written.append(own_topic)
        messages = fresh(random.randrange(8, 1 << 30))  # never the main topic's 7, never a past run's
        write(stack.kafka_bootstrap, own_topic, messages)
        return own, own_topic, len(messages)

    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            runs["raw"].append(raw_consume(stack.kafka_bootstrap, topic, count))
            own, _, own_count = own_topic()
            if fresh is not None:
                with statements.counted() as counted:
                    runs["allocguard"].append(allocguard_consume(own, own_count)[0])
                counts.append(counted.report())
            else:
                runs["allocguard"].append(allocguard_consume(own, own_count)[0])
            if args.process:
                own, own_name, own_count = own_topic()
                rate, peak = process_consume(own, own_name, own_count, Path(folder))
                runs["allocguard_run_process"].append(rate)
                peaks.append(peak)
            if args.quix:
                runs["quix"].append(quix_consume(stack.kafka_bootstrap, topic, count))
    raw = statistics.median(runs["raw"])
    entry: dict[str, object] = {"messages": count, "signals": signals, "raw_events_per_s": round(raw)}
    for name in ("allocguard", "allocguard_run_process", "quix"):
        if runs[name]:
            median = statistics.median(runs[name])
            entry[f"{name}_events_per_s"] = round(median)
            entry[f"{name}_vs_raw"] = round(median / raw, 3)
    if runs["quix"]:
        quix = statistics.median(runs["quix"])
        entry["allocguard_vs_quix"] = round(statistics.median(runs["allocguard"]) / quix, 2)
        if runs["allocguard_run_process"]:
            entry["allocguard_run_process_vs_quix"] = round(statistics.median(runs["allocguard_run_process"]) / quix, 2)
    if peaks:
        entry["allocguard_run_peak_rss_mb"] = round(max(peaks), 1)
    if counts:
        entry["database_work"] = counts
    entry["runs"] = {k: [round(v) for v in vs] for k, vs in runs.items() if vs}
    return entry


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=500_000)
    parser.add_argument(
        "--mixes",
        default="",
        help=f"the platform's traffic (bench/traffic.py), comma-separated: {', '.join(traffic.MIXES)}",
    )
    parser.add_argument("--ratios", default="", help="synthetic signal ratios (half failures, half holds)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quix", action="store_true", help="also run the Quix Streams app (its own venv)")
    parser.add_argument("--process", action="store_true", help="also run `allocguard run` as its own process")
    args = parser.parse_args()
    if not args.mixes and not args.ratios:
        args.mixes = "quiet,healthy"
    logging.basicConfig(level=logging.WARNING)
    stack = local_stack()
    results: list[dict[str, object]] = []
    for mix in [m for m in args.mixes.split(",") if m]:
        batch, signals = traffic.messages(args.messages, mix, "bench")
        fresh = None
        if mix == "storm":  # each allocguard run reads storms of its own (its incidents are written)

            def fresh(seed: int, mix: str = mix) -> list[tuple[bytes, bytes]]:
                return traffic.messages(args.messages, mix, "bench", seed=seed)[0]

        entry = {"mix": mix, **measure(stack, batch, signals, args, fresh)}
        results.append(entry)
        print(json.dumps(entry), flush=True)
    for ratio in [float(r) for r in args.ratios.split(",") if r]:
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        batch = messages(args.messages, ratio / 2, prefix)  # half failures, half holds
        signals = sum(b'"auto_assign.attempt.' not in value for _, value in batch)
        entry = {
            "mix": {
                "signal_ratio": ratio,
                "failures": ratio / 2,
                "hold_announcements": ratio / 2,
                "hold_windows": "valid: start a day after the topic is written",
                "other": 1 - ratio,
            },
            **measure(stack, batch, signals, args),
        }
        results.append(entry)
        print(json.dumps(entry), flush=True)
    print(json.dumps({"benchmark": "throughput", "results": results}, indent=2))


if __name__ == "__main__":
    main()
