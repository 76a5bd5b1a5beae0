"""Hostile networks between allocguard and PostgreSQL (tests/support/pgproxy.py), each while a real incident is
handled by ``allocguard run``; each ends with the orphan archived once, the remediation recorded once and the
victim seated:

- a connection cut after the prune's COMMIT reached the server and before its reply came back — the commit is in
  doubt for allocguard: the next attempt must find the truth on committed state, not guess;
- a connection cut in the middle of the prune's transaction (its COMMIT never sent: the server rolls back);
- 200 ms added each way to everything allocguard exchanges with PostgreSQL;
- every established connection stalled (nothing moves either way) while the failure arrives: no verdict during the
  stall, the victim seated within 10 s of the network healing. 10 s in CI, 30 s in ``make chaos``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from consumer.local.settings import StackSettings
from consumer.local.simulator import PlatformApp, ScenarioResult, orphan_by_reseat
from tests.chaos.test_chaos import LONG
from tests.e2e.test_shutdown import status_of
from tests.support.pgproxy import PgProxy
from tests.support.platform import confirmed
from tests.support.process import RuntimeProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]
ARCHIVE_INSERT = b"INSERT INTO public.allocations_archive"
STALL_S = 30.0 if LONG else 10.0
HEALED_S = 10.0


@pytest.fixture
def proxy(stack_settings: StackSettings) -> Iterator[PgProxy]:
    instance = PgProxy(stack_settings.pg_port)
    yield instance
    instance.close()


def through(stack_settings: StackSettings, proxy: PgProxy) -> dict[str, str]:
    return {"ALLOCGUARD_PG_DSN": make_conninfo(stack_settings.pg_dsn, port=str(proxy.port))}


def play(platform_connect: Callable[[], Conn]) -> ScenarioResult:
    """The seed's incident, written by the platform directly (not through the proxy)."""
    with platform_connect() as conn:
        scenario = orphan_by_reseat(PlatformApp(conn), job_attempts=0)
    assert scenario.victim_id is not None
    return scenario


def handled_once(connect: Callable[[], Conn], scenario: ScenarioResult) -> None:
    victim = scenario.victim_id
    with connect() as conn:
        remediations = conn.execute(
            "SELECT count(*) FROM allocguard.remediations r JOIN allocguard.incidents i ON i.id = r.incident_id"
            " WHERE i.booking_id = %s AND r.mode = 'auto'",
            (victim,),
        ).fetchone()
        owner_rows = conn.execute(
            "SELECT (SELECT count(*) FROM public.allocations_archive WHERE booking_id = %s AND resource_id = %s),"
            " (SELECT count(*) FROM public.allocations WHERE booking_id = %s AND resource_id = %s)",
            (scenario.ids["owner"], scenario.ids["table"], scenario.ids["owner"], scenario.ids["table"]),
        ).fetchone()
    assert remediations == (1,), "recorded once"
    assert owner_rows == (1, 0), "the orphan archived once and gone"


def test_a_commit_in_doubt_is_resolved_on_committed_state(
    stack_settings: StackSettings,
    proxy: PgProxy,
    platform_connect: Callable[[], Conn],
    connect: Callable[[], Conn],
    runtimes: Callable[..., RuntimeProcess],
    unique: str,
) -> None:
    runtime = runtimes("run", f"in-doubt-{unique}", env=through(stack_settings, proxy))
    runtime.wait_ready()
    proxy.cut_commit_after(ARCHIVE_INSERT)
    scenario = play(platform_connect)
    victim = scenario.victim_id
    assert victim is not None
    wait_for("the victim seated after the in-doubt commit", lambda: confirmed(connect, victim), timeout=60)
    assert proxy.cuts == 1, "the prune's COMMIT reply was dropped once"
    handled_once(connect, scenario)
    log = runtime.log()
    print("\n".join(line for line in log.splitlines() if "booking" in line or "recovered" in line))
    assert "holding back" in log or "database busy" in log or "infrastructure" in log, log[-3000:]


def test_a_cut_in_the_middle_of_the_prune_rolls_back_and_is_done_once(
    stack_settings: StackSettings,
    proxy: PgProxy,
    platform_connect: Callable[[], Conn],
    connect: Callable[[], Conn],
    runtimes: Callable[..., RuntimeProcess],
    unique: str,
) -> None:
    runtime = runtimes("run", f"mid-tx-{unique}", env=through(stack_settings, proxy))
    runtime.wait_ready()
    proxy.cut_before_commit_after(ARCHIVE_INSERT)
    scenario = play(platform_connect)
    victim = scenario.victim_id
    assert victim is not None
    wait_for("the victim seated after the cut", lambda: confirmed(connect, victim), timeout=60)
    assert proxy.cuts == 1, "the prune's transaction was cut once, before its COMMIT"
    handled_once(connect, scenario)
    log = runtime.log()
    assert "holding back" in log or "database busy" in log or "infrastructure" in log, log[-3000:]
    assert "Traceback" not in log


def test_200_ms_each_way(
    stack_settings: StackSettings,
    proxy: PgProxy,
    platform_connect: Callable[[], Conn],
    connect: Callable[[], Conn],
    runtimes: Callable[..., RuntimeProcess],
    unique: str,
) -> None:
    runtime = runtimes("run", f"latency-{unique}", env=through(stack_settings, proxy))
    runtime.wait_ready()
    proxy.latency_s = 0.2  # from here: a start-up at 400 ms a round trip takes ≈ 45 s of preflight reads
    started = time.monotonic()
    scenario = play(platform_connect)
    victim = scenario.victim_id
    assert victim is not None
    wait_for("the victim seated over a slow network", lambda: confirmed(connect, victim), timeout=120)
    print(f"200 ms each way: the victim seated {time.monotonic() - started:.1f}s after the failure was written")
    handled_once(connect, scenario)
    assert "Traceback" not in runtime.log()


def test_a_stall_of_every_connection_new_ones_too(
    stack_settings: StackSettings,
    proxy: PgProxy,
    platform_connect: Callable[[], Conn],
    connect: Callable[[], Conn],
    runtimes: Callable[..., RuntimeProcess],
    unique: str,
) -> None:
    runtime = runtimes("run", f"stall-{unique}", env=through(stack_settings, proxy))
    runtime.wait_ready()
    # the connections opened meanwhile too: with only the established ones stalled, the pool grows (a wake-up or
    # a worker finds none idle) and its new connection gets through — a verdict during the stall, rightly
    proxy.stall(new_too=True)
    stalled = time.monotonic()
    try:
        scenario = play(platform_connect)
        victim = scenario.victim_id
        assert victim is not None
        while time.monotonic() - stalled < STALL_S:  # poll: the stall itself lasts this long
            incident, seated = status_of(connect, victim)
            assert incident != "resolved", "no verdict while every connection allocguard had is stalled"
            assert not seated
            time.sleep(1)  # poll: look again while the stall lasts
    finally:
        proxy.heal()
    healed = time.monotonic()
    wait_for("the victim seated after the stall", lambda: confirmed(connect, victim), timeout=60, interval=0.05)
    recovered = time.monotonic() - healed
    print(f"every connection stalled {STALL_S:.0f}s: the victim seated {recovered:.2f}s after the network healed")
    assert recovered <= HEALED_S
    handled_once(connect, scenario)
    assert runtime.process.poll() is None
    assert "Traceback" not in runtime.log()
