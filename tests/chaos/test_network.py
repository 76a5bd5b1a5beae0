"""Hostile networks between allocguard and PostgreSQL (tests/support/pgproxy.py): a connection cut after the prune's
COMMIT reached the server and before its reply came back — the commit is in doubt for allocguard. The next attempt
must find the truth on committed state, not guess: the prune is not done twice, not recorded twice, and the victim
is seated."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from consumer.local.settings import StackSettings
from consumer.local.simulator import PlatformApp, orphan_by_reseat
from tests.support.pgproxy import PgProxy
from tests.support.platform import confirmed
from tests.support.process import RuntimeProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]


@pytest.fixture
def proxy(stack_settings: StackSettings) -> Iterator[PgProxy]:
    instance = PgProxy(stack_settings.pg_port)
    yield instance
    instance.close()


def test_a_commit_in_doubt_is_resolved_on_committed_state(
    stack_settings: StackSettings,
    proxy: PgProxy,
    platform_connect: Callable[[], Conn],
    connect: Callable[[], Conn],
    runtimes: Callable[..., RuntimeProcess],
    unique: str,
) -> None:
    through_proxy = make_conninfo(stack_settings.pg_dsn, port=str(proxy.port))
    runtime = runtimes("run", f"in-doubt-{unique}", env={"ALLOCGUARD_PG_DSN": through_proxy})
    runtime.wait_ready()
    proxy.cut_commit_after(b"INSERT INTO public.allocations_archive")
    with platform_connect() as conn:
        scenario = orphan_by_reseat(PlatformApp(conn), job_attempts=0)
    victim = scenario.victim_id
    assert victim is not None
    wait_for("the victim seated after the in-doubt commit", lambda: confirmed(connect, victim), timeout=60)
    assert proxy.cuts == 1, "the prune's COMMIT reply was dropped once"
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
    log = runtime.log()
    print("\n".join(line for line in log.splitlines() if "booking" in line or "recovered" in line))
    assert "holding back" in log or "database busy" in log or "infrastructure" in log, log[-3000:]
