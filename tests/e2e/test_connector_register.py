"""``connector register`` against the real Kafka Connect: the file's connector, posted with per-site values only,
streams; registering it again with a different value prints the diff and changes nothing without ``--yes``."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from consumer.local.settings import StackSettings
from consumer.local.stack import LocalStack, captured_topics, dlq_topic, heartbeat_topic
from consumer.operations.connector import current_config
from tests.support.platform import drop_slot
from tests.support.process import run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.stack]


def register(settings: StackSettings, *args: str, host: str = "127.0.0.1") -> subprocess.CompletedProcess[str]:
    site = ["--connect-url", settings.connect_url, "--kafka-bootstrap", settings.kafka_bootstrap]
    site += ["--db-host", host, "--db-port", str(settings.pg_port), "--db-name", settings.pg_database]
    return run_cli("connector", "register", *site, *args, timeout=180)


@pytest.fixture
def site(stack_settings: StackSettings, unique: str) -> Iterator[tuple[str, str, str]]:
    """A connector name, topic prefix and slot of this test's own; its topics made first (the file asks Connect
    for three replicas, which one local broker cannot give)."""
    name, prefix, slot = f"register-{unique}", f"register{unique}", f"allocguard_register_{unique}"
    local = LocalStack(stack_settings, log=lambda line: None)
    local.ensure_topics([*captured_topics(prefix), heartbeat_topic(prefix), dlq_topic(prefix)])
    yield name, prefix, slot
    local.delete_connector(name)
    drop_slot(stack_settings.dsn_for("postgres"), slot)


def test_register_streams_and_a_change_needs_yes(stack_settings: StackSettings, site: tuple[str, str, str]) -> None:
    name, prefix, slot = site
    first = register(stack_settings, "--name", name, "--topic-prefix", prefix, "--slot-name", slot)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"connector {name} is streaming" in first.stdout
    posted = current_config(stack_settings.connect_url, name)
    assert posted is not None
    written = json.loads(register(stack_settings, "--dry-run", "--topic-prefix", prefix, "--slot-name", slot).stdout)
    assert {k: v for k, v in posted.items() if k != "name"} == written, "Connect holds exactly what was posted"

    # the same server by another name: a harmless change a site could make
    moved = ("--name", name, "--topic-prefix", prefix, "--slot-name", slot)
    again = register(stack_settings, *moved, host="localhost")
    assert again.returncode == 1
    assert "- database.hostname: 127.0.0.1" in again.stdout
    assert "+ database.hostname: localhost" in again.stdout
    assert again.stdout.count("\n  ") == 2, "only what changes is shown (its old and new line)"
    assert "run again with --yes" in again.stderr
    assert current_config(stack_settings.connect_url, name) == posted, "nothing changed without --yes"

    applied = register(stack_settings, *moved, "--yes", host="localhost")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    changed = current_config(stack_settings.connect_url, name)
    assert changed is not None
    assert changed["database.hostname"] == "localhost"
