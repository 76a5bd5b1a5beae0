"""Replay speed: ``allocguard replay --dry-run`` over a pre-produced topic of ≥ 500k Debezium-shaped events with a few
dozen incidents among them, against a raw confluent-kafka read of the same range and a Quix Streams app reading it,
interleaved, medians, ratios (the replay shares the live path's byte test).

    python -m bench.replay --messages 500000 --signals 50 --repeats 3 [--quix]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import local_stack, scratch_topics, traffic
from bench.throughput import produce, quix_consume, raw_consume, write
from consumer.config import RuntimeSettings
from consumer.local.settings import StackSettings
from consumer.local.stack import LocalStack
from consumer.operations.replay import Window, read_range, replay
from consumer.runtime.routing import Relevance
from handlers.detect import DetectionRules


def replay_dry_run(prefix: str, count: int) -> tuple[float, float, dict[str, object]]:
    """(events/s from the first message read to the report, as the raw read is timed; events/s of the whole
    command, connecting and finding the range included; the report's summary)"""
    settings = RuntimeSettings(topic_prefix=prefix, artifacts_dir=None)
    started = time.monotonic()
    tally: dict[str, int] = {}
    keep = Relevance(DetectionRules())
    source = read_range(settings, Window(), lambda done, total: None, keep=keep, tally=tally)
    report = replay(settings, source, apply=False, tally=tally)
    ended = time.monotonic()
    assert report.messages == count, report.summary()
    reading = ended - tally["first_read_ns"] / 1e9
    return count / reading, count / (ended - started), report.summary()


#: runs a command as its only child and prints the child's peak resident set (KB) last
_PEAK = (
    "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
    " sys.stdout.write(done.stdout); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss);"
    " sys.exit(done.returncode)"
)


def replay_process(prefix: str, count: int) -> tuple[float, float]:
    """``allocguard replay --dry-run --json`` as its own process over the whole topic: (events/s of the whole
    command, its peak RSS in MB)."""
    allocguard = str(Path(sys.executable).with_name("allocguard"))
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()  # before the topic was written: all of it
    env = {**os.environ, "ALLOCGUARD_TOPIC_PREFIX": prefix, "OTEL_TRACES_EXPORTER": "none"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, allocguard, "replay", "--since", since, "--dry-run", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=1800,
    )
    took = time.monotonic() - started
    lines = done.stdout.strip().splitlines()
    report = json.loads("\n".join(lines[:-1]))
    assert report["summary"]["messages"] == count, report["summary"]
    return count / took, int(lines[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=500_000)
    parser.add_argument("--signals", type=int, default=50, help="hold announcements and failures among them")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quix", action="store_true")
    parser.add_argument("--mix", choices=traffic.MIXES, help="the platform's traffic instead (bench/traffic.py)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    stack = local_stack()
    prefix = f"replay{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.public.observability_events"
    with scratch_topics(stack) as written:
        written.append(topic)
        LocalStack(stack, log=lambda line: None).ensure_topics([topic])
        result = _run(stack, prefix, topic, args)
    print(json.dumps(result, indent=2))


def _run(stack: StackSettings, prefix: str, topic: str, args: argparse.Namespace) -> dict[str, object]:
    if args.mix:
        write(stack.kafka_bootstrap, topic, traffic.messages(args.messages, args.mix, prefix)[0])
    else:
        produce(stack.kafka_bootstrap, topic, args.messages, args.signals / args.messages / 2, prefix)
    runs: dict[str, list[float]] = {"raw": [], "replay": [], "replay_whole_command": [], "quix": []}
    summary: dict[str, object] = {}
    for _ in range(args.repeats):
        runs["raw"].append(raw_consume(stack.kafka_bootstrap, topic, args.messages))
        rate, whole, summary = replay_dry_run(prefix, args.messages)
        runs["replay"].append(rate)
        runs["replay_whole_command"].append(whole)
        if args.quix:
            runs["quix"].append(quix_consume(stack.kafka_bootstrap, topic, args.messages))
    process_rate, peak_mb = replay_process(prefix, args.messages)
    raw, ours = statistics.median(runs["raw"]), statistics.median(runs["replay"])
    result: dict[str, object] = {
        "benchmark": "replay",
        "messages": args.messages,
        "report": summary,
        "raw_events_per_s": round(raw),
        "replay_dry_run_events_per_s": round(ours),
        "replay_vs_raw": round(ours / raw, 3),
        "replay_whole_command_events_per_s": round(statistics.median(runs["replay_whole_command"])),
        "replay_process_whole_command_events_per_s": round(process_rate),
        "replay_process_peak_rss_mb": round(peak_mb, 1),
        "runs": {k: [round(v) for v in vs] for k, vs in runs.items() if vs},
    }
    if runs["quix"]:
        result["quix_events_per_s"] = round(statistics.median(runs["quix"]))
        result["replay_vs_quix"] = round(ours / statistics.median(runs["quix"]), 2)
    return result


if __name__ == "__main__":
    main()
