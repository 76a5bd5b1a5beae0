"""Outages allocguard must ride out, timed: work resumes within 5 s of PostgreSQL coming back, and a database that
is down when ``allocguard run`` starts is waited for (``/readyz`` 503 with the reason, one log line), never a
crash loop. Runs in CI (one PostgreSQL outage each); the long chaos run (``make chaos``) keeps PostgreSQL down
30 s."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from consumer.local.settings import StackSettings
from consumer.local.simulator import PlatformApp, orphan_by_reseat
from consumer.local.stack import LocalStack
from consumer.runtime.offsets import watermarks
from tests.chaos.test_chaos import LONG
from tests.e2e.test_shutdown import member, played_while_stopped, status_of
from tests.support.process import RuntimeProcess, run_cli, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]
#: long enough for the pool's old back-off (1, 2, 4, 8, 16 s between attempts) to show
DOWN_S = 30.0 if LONG else 20.0
RESUME_S = 5.0


def accepting(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=1):
            return True
    except psycopg.OperationalError:
        return False


def back_up(stack: LocalStack, dsn: str) -> float:
    """Start PostgreSQL (the stack also waits for the connector, in a thread); the moment it accepts connections."""
    starter = threading.Thread(target=stack.start_component, args=("postgres",), daemon=True)
    starter.start()
    wait_for("PostgreSQL accepting connections", lambda: accepting(dsn), timeout=60, interval=0.05)
    back = time.monotonic()
    starter.join(timeout=120)
    return back


def failure_readable(stack_settings: StackSettings, victim: object, unique: str) -> float:
    """The moment the victim's failure can be read from the topic (Debezium delivers it once it has reconnected
    after an outage: Connect's time, not allocguard's)."""
    topic = f"{stack_settings.topic_prefix}.public.observability_events"
    reader = Consumer({"bootstrap.servers": stack_settings.kafka_bootstrap, "group.id": f"probe-{unique}"})
    try:
        starts = [
            TopicPartition(tp.topic, tp.partition, max(high - 200, low))
            for tp, (low, high) in watermarks(reader, [topic]).items()
        ]
        reader.assign(starts)

        def readable() -> bool:
            message = reader.poll(0.2)
            value = message.value() if message is not None and message.error() is None else None
            return value is not None and str(victim).encode() in value and b"allocations_no_overlap" in value

        wait_for("the failure delivered", readable, timeout=120, interval=0)
        return time.monotonic()
    finally:
        reader.close()


def what_the_member_saw(
    stack_settings: StackSettings, runtime: RuntimeProcess, group: str, status: tuple[str | None, bool]
) -> str:
    """For a failure message: the incident's status, the member's /readyz and gauges, the group as the broker
    describes it, and its committed offsets against the topic's ends."""
    lines = [f"incident status, victim confirmed: {status}"]
    try:
        lines.append(f"/readyz: {runtime.get('/readyz')}")
        exposition = runtime.get("/metrics")[1]
        wanted = ("paused", "in_flight", "lag", "outage", "gap", "rejoin", "stall")
        lines += [
            line
            for line in str(exposition).splitlines()
            if line.startswith("allocguard_") and "_bucket" not in line and any(w in line.split("{")[0] for w in wanted)
        ]
    except Exception as exc:  # the failure message must still be written
        lines.append(f"/metrics unavailable: {exc!r}")
    topic = f"{stack_settings.topic_prefix}.public.observability_events"
    admin = AdminClient({"bootstrap.servers": stack_settings.kafka_bootstrap})
    try:
        described = admin.describe_consumer_groups([group], request_timeout=10)[group].result(10)
        if described is not None:
            lines.append(f"group {group}: state {described.state}, type {getattr(described, 'type', '?')}")
            for m in described.members:
                assigned = [f"{tp.topic}[{tp.partition}]" for tp in m.assignment.topic_partitions]
                lines.append(f"  member {m.member_id} assigned {assigned}")
        reader = Consumer({"bootstrap.servers": stack_settings.kafka_bootstrap, "group.id": group})
        try:
            ends = watermarks(reader, [topic])
            committed = reader.committed(list(ends), timeout=10)
            lines += [f"  {tp.topic}[{tp.partition}] committed {tp.offset}, end {ends[tp][1]}" for tp in committed]
        finally:
            reader.close()
    except Exception as exc:
        lines.append(f"group unavailable: {exc!r}")
    return "\n".join(lines)


#: one-shot commands that read the database, run during a real stop of it (the CLI contract's closed-port and
#: silent-listener cases are in tests/unit/test_cli_contract.py)
DB_COMMANDS = [["check"], ["diagnose"], ["remediate"], ["reconcile"], ["plans", "list"]]


def one_shot_commands_say_unavailable(victim: str) -> None:
    """With PostgreSQL really stopped: exit 3, one line on stderr and no traceback; with ``--json`` the error as
    JSON (``check``'s answer is its report, the database's items FAIL)."""
    for command in DB_COMMANDS:
        args = [*command, victim] if command[0] in ("diagnose", "remediate") else command
        done = run_cli(*args, timeout=60)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 3, f"{args}: {done.returncode}\n{done.stdout}{done.stderr}"
        assert "Traceback" not in done.stderr, f"{args}: {done.stderr}"
        assert len(lines) == 1, f"{args}: {done.stderr}"
        done = run_cli(*args, "--json", timeout=60)
        assert done.returncode == 3, f"{args} --json: {done.returncode}\n{done.stdout}{done.stderr}"
        printed = json.loads(done.stdout)
        if command == ["check"]:
            assert any(item["status"] == "FAIL" and "database" in json.dumps(item).lower() for item in printed), printed
        else:
            assert printed["error"]["exit_code"] == 3, printed
            assert printed["error"]["kind"] == "dependency unavailable", printed


def test_work_resumes_within_seconds_of_postgres_coming_back(
    stack_settings: StackSettings,
    platform_connect: Callable[[], Conn],
    runtimes: Callable[..., RuntimeProcess],
    unique: str,
) -> None:
    """An incident in flight (its owner's row locked) when PostgreSQL goes down for DOWN_S: held back, not judged;
    confirmed within RESUME_S of PostgreSQL accepting connections again. Meanwhile the one-shot commands say the
    database is unavailable (exit 3, one line)."""
    stack = LocalStack(stack_settings, log=lambda line: None)
    group = f"chaos-pgdown-{unique}"
    scenario, owner = played_while_stopped(platform_connect, runtimes, group)
    victim = scenario.victim_id
    assert victim is not None
    blocker = psycopg.connect(stack_settings.platform_dsn)
    blocker.execute("SELECT 1 FROM bookings WHERE id = %s FOR UPDATE", (owner,))
    runtime = member(runtimes, "run", group)
    runtime.wait_ready()
    wait_for("the prune backing off", lambda: f"booking {victim}: database busy" in runtime.log(), timeout=30)
    stack.stop_component("postgres")  # the lock goes with the blocker's connection
    blocker.close()
    down = time.monotonic()
    one_shot_commands_say_unavailable(str(victim))
    time.sleep(max(0.0, DOWN_S - (time.monotonic() - down)))  # poll: the outage itself lasts this long
    try:
        assert "holding back booking" in runtime.log(), "the outage held the work back"
        back = back_up(stack, stack_settings.platform_dsn)
    finally:
        if not accepting(stack_settings.platform_dsn):
            stack.start_component("postgres")
    wait_for("the victim confirmed", lambda: status_of(platform_connect, victim) == ("resolved", True), timeout=60)
    resumed = time.monotonic() - back
    print(f"PostgreSQL down {DOWN_S:.0f}s: the incident resolved {resumed:.2f}s after it accepted connections again")
    assert resumed <= RESUME_S
    assert runtime.process.poll() is None
    assert "Traceback" not in runtime.log()
    assert runtime.stop()[0] == 0


def test_run_waits_for_a_database_that_is_down_at_start(
    stack_settings: StackSettings,
    platform_connect: Callable[[], Conn],
    runtimes: Callable[..., RuntimeProcess],
    unique: str,
) -> None:
    """Started while PostgreSQL is down: no exit, /readyz 503 naming the database, one log line however long it
    waits; PostgreSQL back → it starts and remediates what was waiting, within seconds."""
    stack = LocalStack(stack_settings, log=lambda line: None)
    group = f"chaos-start-{unique}"
    scenario, _ = played_while_stopped(platform_connect, runtimes, group)
    victim = scenario.victim_id
    assert victim is not None
    stack.stop_component("postgres")
    try:
        runtime = member(runtimes, "run", group)
        waiting: list[str] = []

        def says_waiting() -> bool:
            if runtime.process.poll() is not None:
                raise AssertionError(f"allocguard run exited with {runtime.process.returncode}:\n{runtime.log()}")
            try:
                status, body = runtime.get("/readyz")
            except OSError:
                return False
            waiting[:] = body.get("reasons", [])
            return status == 503 and any(r.startswith("waiting for database") for r in waiting)

        wait_for("/readyz 503 waiting for the database", says_waiting, timeout=30, interval=0.2)
        started = time.monotonic()
        wait_for("several attempts", lambda: time.monotonic() - started > 8 and says_waiting(), timeout=30)
        assert runtime.log().count("waiting for database") == 1, "one line per state change, not per attempt"
        assert runtime.process.poll() is None
        back = back_up(stack, stack_settings.platform_dsn)
    finally:
        if not accepting(stack_settings.platform_dsn):
            stack.start_component("postgres")
    readable = failure_readable(stack_settings, victim, unique)
    wait_for("the victim confirmed", lambda: status_of(platform_connect, victim) == ("resolved", True), timeout=60)
    resumed = time.monotonic() - max(back, readable)
    print(
        f"started during an outage: the failure readable {max(0.0, readable - back):.1f}s after PostgreSQL was back "
        f"(Debezium reconnecting); the incident resolved {resumed:.2f}s after both"
    )
    assert resumed <= RESUME_S
    assert "Traceback" not in runtime.log()
    assert runtime.stop()[0] == 0


def test_work_resumes_within_seconds_of_the_broker_coming_back(
    stack_settings: StackSettings,
    platform_connect: Callable[[], Conn],
    runtimes: Callable[..., RuntimeProcess],
    unique: str,
) -> None:
    """The broker down while an incident is committed: Debezium delivers the failure once the broker is back, and
    allocguard — which rode the outage out without exiting — confirms the victim within RESUME_S of the
    failure being readable again (what Connect takes to reconnect is Connect's, and printed)."""
    stack = LocalStack(stack_settings, log=lambda line: None)
    group = f"chaos-brokerdown-{unique}"
    runtime = member(runtimes, "run", group)
    runtime.wait_ready()
    stack.stop_component("kafka")
    try:
        with platform_connect() as conn:
            victim = orphan_by_reseat(PlatformApp(conn), job_attempts=0).victim_id
        assert victim is not None
        time.sleep(DOWN_S / 2)  # poll: the outage itself lasts this long
        wait_for("/readyz 503 with the broker down", lambda: runtime.get("/readyz")[0] == 503, timeout=15)
    finally:
        restarted = time.monotonic()
        stack.start_component("kafka")
    readable = failure_readable(stack_settings, victim, unique)
    try:
        wait_for("the victim confirmed", lambda: status_of(platform_connect, victim) == ("resolved", True), timeout=60)
    except AssertionError as exc:
        seen = what_the_member_saw(stack_settings, runtime, group, status_of(platform_connect, victim))
        raise AssertionError(f"{exc}\n{seen}\nallocguard run's log:\n{runtime.log()}") from None
    resumed = time.monotonic() - readable
    print(
        f"broker down ≈{DOWN_S / 2:.0f}s: the failure readable {readable - restarted:.1f}s after the broker was "
        f"started again (Connect reconnecting); the incident resolved {resumed:.2f}s after that"
    )
    assert resumed <= RESUME_S
    assert runtime.process.poll() is None
    assert runtime.stop()[0] == 0
