"""Clock skew: allocguard's process clock 10 minutes ahead of PostgreSQL's, or behind, changes no verdict and no due
time — grace, hold expiry and wake-ups are judged on the database's clock (Debian's faketime on the CLI process; the
planner is the same code ``allocguard run`` calls)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from consumer.local.simulator import PlatformApp, orphan_by_reseat
from tests.support.process import run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]
SKEWS = ("+0", "+10m", "-10m")


def plan_under(skew: str, victim: str, grace_s: int) -> dict[str, Any]:
    faketime = shutil.which("faketime")
    assert faketime is not None, "faketime is installed by .ci/run (apt)"
    env = {**os.environ, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    done = run_cli("diagnose", victim, "--json", "--grace-s", str(grace_s), env=env, prefix=[faketime, "-f", skew])
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    return {
        "decision": doc["decision"],
        "recheck_at": doc["recheck_at"],
        "evidence": sorted((e["allocation_id"], e["verdict"], e["why"]) for e in doc["evidence"]),
    }


@pytest.mark.parametrize(
    ("grace_s", "decision"),
    [(25 * 60, "prune_and_retry"), (45 * 60, "wait")],
    ids=["30-minute-old orphan, 25-minute grace", "inside a 45-minute grace"],
)
def test_the_same_plan_whatever_the_process_clock(
    platform_connect: Callable[[], Conn], grace_s: int, decision: str
) -> None:
    with platform_connect() as conn:
        victim = orphan_by_reseat(PlatformApp(conn), job_attempts=0).victim_id  # its orphan is 30 minutes old
    plans = {skew: plan_under(skew, str(victim), grace_s) for skew in SKEWS}
    assert plans["+0"]["decision"] == decision, plans["+0"]
    assert plans["+10m"] == plans["+0"], "10 minutes ahead"
    assert plans["-10m"] == plans["+0"], "10 minutes behind"
