"""The replication slot lost, as after a primary failover (PostgreSQL 16 and before keep no logical slot on a
promoted standby; an invalidated slot — ``wal_status`` lost — is recovered the same way): in a database, slot and
connector of their own, with ``allocguard run`` on them.

While the slot is gone, a failure the platform commits never reaches Kafka. ``check`` says the database has no slot
(and the connector is gone); the operator re-creates the connector (docs/runbook.md, AllocguardSlotLost): a new
slot and a new snapshot, whose reads carry every ``observability_events`` row — the failure nobody saw is handled
from it, and what was handled before the loss is not handled twice."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from consumer.local.settings import StackSettings
from consumer.local.simulator import PlatformApp, ScenarioResult, orphan_by_reseat
from consumer.local.stack import LocalStack, captured_topics, connector_config
from consumer.operations import migrations as db
from consumer.operations.connector import request
from tests.chaos.test_chaos import dead_letters
from tests.chaos.test_network import handled_once
from tests.support.platform import confirmed, drop_slot
from tests.support.process import RuntimeProcess, run_cli, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]


class Site:
    """A platform database of its own, with its own connector, slot and topic prefix."""

    def __init__(self, settings: StackSettings, unique: str) -> None:
        self.database = f"slot_{unique}"
        self.prefix = f"slot{unique}"
        self.connector = f"slot-{unique}"
        self.settings = settings
        self.stack = LocalStack(settings, log=lambda line: None)
        self.config = connector_config(settings, database=self.database, topic_prefix=self.prefix)
        self.slot = self.config["slot.name"]
        self.admin_dsn = settings.dsn_for(self.database)
        self.platform_dsn = settings.dsn_for(self.database, settings.platform_dsn)
        self.app_dsn = settings.dsn_for(self.database, settings.pg_dsn)

    def platform(self) -> Conn:
        return psycopg.connect(self.platform_dsn, autocommit=True)

    def play(self) -> ScenarioResult:
        with self.platform() as conn:
            scenario = orphan_by_reseat(PlatformApp(conn), job_attempts=0)
        assert scenario.victim_id is not None
        return scenario

    def env(self, group: str) -> dict[str, str]:
        return {
            "ALLOCGUARD_PG_DSN": self.app_dsn,
            "ALLOCGUARD_TOPIC_PREFIX": self.prefix,
            "ALLOCGUARD_CONNECT_URL": self.settings.connect_url,
            "ALLOCGUARD_CONNECTOR_NAME": self.connector,
            "ALLOCGUARD_DLQ_TOPIC": f"{group}-dlq",
        }

    def connect(self, method: str, action: str) -> None:
        """Kafka Connect's REST API on this site's connector (``stop``, ``resume``, ``offsets``)."""
        status, body = request(method, f"{self.settings.connect_url}/connectors/{self.connector}/{action}", None, 30)
        assert status < 300, (method, action, status, body)

    def state(self) -> str:
        _, body = request("GET", f"{self.settings.connect_url}/connectors/{self.connector}/status", None, 10)
        return str(body.get("connector", {}).get("state")) if isinstance(body, dict) else "?"

    def check(self, group: str) -> dict[str, dict[str, str]]:
        done = run_cli("check", "--json", env={**os.environ, **self.env(group)}, timeout=120)
        items: dict[str, dict[str, str]] = {}
        for item in json.loads(done.stdout):
            if item["status"] != "OK" or item["name"] not in items:
                items[item["name"]] = item
        return items


@pytest.fixture
def site(stack_settings: StackSettings, unique: str) -> Iterator[Site]:
    env = Site(stack_settings, unique)
    admin = stack_settings.dsn_for("postgres")
    db.ensure_database(admin, env.database)
    db.init_database(env.admin_dsn, with_reference_schema=True, with_cdc=True)
    db.ensure_local_roles(env.admin_dsn, app_user=stack_settings.app_user)  # the simulator's clock, the records
    env.stack.ensure_topics(captured_topics(env.prefix))
    yield env
    env.stack.delete_connector(env.connector)
    drop_slot(admin, env.slot)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{env.database}" WITH (FORCE)')


def test_a_lost_slot_is_recovered_by_re_creating_the_connector(
    site: Site, runtimes: Callable[..., RuntimeProcess], unique: str
) -> None:
    site.stack.register_connector(site.connector, site.config)
    site.stack.wait_connector_running(site.connector)
    group = f"slot-{unique}"
    runtime = runtimes("run", group, env=site.env(group))
    runtime.wait_ready()

    before = site.play()  # handled live, before the loss
    assert before.victim_id is not None
    wait_for("the first victim seated", lambda: confirmed(site.platform, before.victim_id), timeout=90)

    # the failover: the connector stops, the new primary has no slot
    site.connect("PUT", "stop")
    wait_for("the connector stopped", lambda: site.state() == "STOPPED", timeout=60)
    drop_slot(site.settings.dsn_for("postgres"), site.slot)
    unseen = site.play()  # committed while nothing streams: never in Kafka
    assert unseen.victim_id is not None
    items = site.check(group)
    assert items["replication slot"]["status"] == "WARN", items["replication slot"]
    assert "no logical replication slot" in items["replication slot"]["detail"]
    assert items["connector"]["status"] == "FAIL", items["connector"]
    assert not confirmed(site.platform, unseen.victim_id)

    # the runbook: the connector's stored position (an LSN the new slot never had) reset, then resumed — a new slot,
    # a new snapshot of every captured row (resuming with the old position fails the task: "no longer available")
    site.connect("DELETE", "offsets")
    site.connect("PUT", "resume")
    site.stack.wait_connector_running(site.connector)
    wait_for("the unseen victim seated from the snapshot", lambda: confirmed(site.platform, unseen.victim_id), 120)
    items = site.check(group)
    assert items["replication slot"]["status"] == "OK", items["replication slot"]

    handled_once(site.platform, before)  # the snapshot read its failures again: nothing redone
    handled_once(site.platform, unseen)
    assert dead_letters(site.settings.kafka_bootstrap, f"{group}-dlq") == 0
    log = runtime.log()
    assert "Traceback" not in log
    print("\n".join(line for line in log.splitlines() if "booking" in line))
