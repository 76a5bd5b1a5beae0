"""Replay a time range of the real topic: incidents found and explained (already fixed, fixed now, resolved by
someone else), the live group untouched, nothing written by a dry run, and the same report from a captured file."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from consumer.cli import main
from consumer.local.settings import StackSettings
from consumer.local.simulator import PlatformApp, ScenarioResult, orphan_by_reseat
from tests.support.cdc import CdcReader, committed
from tests.support.platform import confirmed
from tests.support.process import RuntimeProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]
PLATFORM_TABLES = [
    "bookings",
    "booking_table_assignments",
    "allocations",
    "allocations_archive",
    "booking_assignment_idempotency",
    "booking_state_history",
    "observability_events",
]


def digest(connect: Callable[[], Conn], restaurants: list[uuid.UUID]) -> dict[str, str]:
    """Every platform row of these restaurants with its xmin: any write, even a no-op update, changes it."""
    found = {}
    with connect() as conn:
        for table in PLATFORM_TABLES:
            where = (
                "restaurant_id = ANY(%s)"
                if table in ("bookings", "allocations", "allocations_archive", "observability_events")
                else "booking_id IN (SELECT id FROM bookings WHERE restaurant_id = ANY(%s))"
            )
            row = conn.execute(
                f"SELECT count(*), md5(string_agg(t.xmin::text || t::text, ',' ORDER BY t::text)) FROM {table} t"  # noqa: S608
                f" WHERE {where}",
                (restaurants,),
            ).fetchone()
            found[table] = str(row)
    return found


def play(connect: Callable[[], Conn], reader: CdcReader) -> ScenarioResult:
    with connect() as conn:
        scenario = orphan_by_reseat(PlatformApp(conn), job_attempts=0)
    victim = scenario.victim_id
    assert victim is not None
    reader.collect(
        lambda m: str(victim) in (m.key or b"").decode() and b"allocations_no_overlap" in (m.value or b""), 1
    )
    return scenario


def committed_offsets(settings: StackSettings, group: str, topic: str) -> dict[int, int]:
    return committed(settings.kafka_bootstrap, group, topic, list(range(settings.topic_partitions)))


def replay(*args: str) -> tuple[str, dict[str, Any]]:
    result = CliRunner().invoke(main, ["replay", *args])
    assert result.exit_code == 0, (result.output, result.exception)
    report = next(a for i, a in enumerate(args) if i and args[i - 1] == "--report")
    return result.output, json.loads(Path(report).read_text())


def outcomes(report: dict[str, Any]) -> dict[str, str]:
    return {item["booking_id"]: item["outcome"] for item in report["incidents"]}


def test_replay_a_time_range(
    stack_settings: StackSettings,
    connect: Callable[[], Conn],
    runtimes: Callable[..., RuntimeProcess],
    unique: str,
    tmp_path: Path,
) -> None:
    topic = f"{stack_settings.topic_prefix}.public.observability_events"
    reader = CdcReader(stack_settings.kafka_bootstrap, [topic])
    group = f"e2e-live-{unique}"
    live = runtimes("live", group)
    live.wait_ready()
    # the range starts once the live consumer is up, right before this test's first event: a second earlier, it
    # took in the events an earlier test of the session wrote on the shared topic (two bookings allocguard had
    # fixed there were counted once in CI)
    since = datetime.now(UTC) - timedelta(milliseconds=50)
    fixed = play(connect, reader)  # the live consumer fixes this one
    assert fixed.victim_id is not None
    wait_for("the live consumer fixed the first incident", lambda: confirmed(connect, fixed.victim_id), timeout=60)
    assert live.stop()[0] == 0
    live_offsets = committed_offsets(stack_settings, group, topic)
    open_one = play(connect, reader)  # nobody runs: still blocked
    superseded = play(connect, reader)  # then cancelled by the platform: resolved by someone else
    with connect() as conn:
        conn.execute("UPDATE bookings SET status = 'cancelled' WHERE id = %s", (superseded.victim_id,))
    until = datetime.now(UTC) + timedelta(milliseconds=200)
    wait_for("time to pass the range's end", lambda: datetime.now(UTC) > until + timedelta(milliseconds=50), 5)
    outside = play(connect, reader)  # after the range: not part of the replay
    reader.close()
    restaurants = [s.restaurant_id for s in (fixed, open_one, superseded, outside)]
    window = ["--since", since.isoformat(), "--until", until.isoformat()]

    before = digest(connect, restaurants)
    output, dry = replay(*window, "--dry-run", "--report", str(tmp_path / "dry.json"))
    assert digest(connect, restaurants) == before, "a dry run writes nothing to the platform's tables"
    assert outcomes(dry) == {
        str(fixed.victim_id): "already_fixed",
        str(open_one.victim_id): "dry_run",
        str(superseded.victim_id): "not_needed",
    }, output
    assert "already fixed by allocguard" in output
    assert "resolved by someone else" in output
    assert dry["summary"]["incidents_found"] == 3

    capture = CliRunner().invoke(main, ["capture", *window, "--out", str(tmp_path / "range.jsonl")])
    assert capture.exit_code == 0, capture.output
    _, from_file = replay(
        "--from-file", str(tmp_path / "range.jsonl"), "--dry-run", "--report", str(tmp_path / "f.json")
    )
    assert outcomes(from_file) == outcomes(dry), "capture → replay --from-file reproduces the Kafka replay"
    assert from_file["summary"]["messages"] == dry["summary"]["messages"]

    _, applied = replay(*window, "--apply", "--report", str(tmp_path / "apply.json"))
    assert outcomes(applied) == {
        str(fixed.victim_id): "already_fixed",
        str(open_one.victim_id): "resolved",
        str(superseded.victim_id): "not_needed",
    }
    assert open_one.victim_id is not None
    assert outside.victim_id is not None
    assert confirmed(connect, open_one.victim_id)
    assert not confirmed(connect, outside.victim_id), "outside the range: untouched"
    _, again = replay(*window, "--apply", "--report", str(tmp_path / "again.json"))
    assert outcomes(again)[str(open_one.victim_id)] == "already_fixed", "a second replay redoes nothing"
    assert committed_offsets(stack_settings, group, topic) == live_offsets, "the live group's offsets are untouched"
