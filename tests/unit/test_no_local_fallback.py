"""Commands that talk to production never guess: with the settings unset, each says which (variable and flag) and
exits 2 before connecting anywhere — listeners on the ports a local-stack fallback would reach get no connection."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.listener import Listener
from tests.support.process import run_cli

VICTIM = "d99ceb12-193a-4e80-840e-35cb236d9452"
PLAN = "00000000-0000-4000-8000-000000000001"
DSN = "missing ALLOCGUARD_PG_DSN (or --dsn)"
KAFKA = "missing ALLOCGUARD_KAFKA_BOOTSTRAP (or --kafka-bootstrap)"
COMMANDS: list[tuple[list[str], list[str]]] = [
    (["run"], [DSN, KAFKA]),
    (["check"], [DSN, KAFKA]),
    (["diagnose", VICTIM], [DSN]),
    (["remediate", VICTIM], [DSN]),
    (["reconcile"], [DSN]),
    (["plans", "list"], [DSN]),
    (["plans", "show", PLAN], [DSN]),
    (["plans", "approve", PLAN, "--by", "sre"], [DSN]),
    (["plans", "reject", PLAN, "--by", "sre"], [DSN]),
    (["replay", "--since", "2000-01-01T00:00"], [DSN, KAFKA]),
    (["capture", "--since", "2000-01-01T00:00", "--out", "/dev/null"], [KAFKA]),
    (["dlq", "replay"], [DSN, KAFKA]),
    (["dlq", "list"], [DSN, KAFKA]),
    (["dlq", "show", "0@0"], [DSN, KAFKA]),
    (["dlq", "park", "0@0"], [DSN]),
    (["dlq", "unpark", "0@0"], [DSN]),
    (["db", "init"], ["missing ALLOCGUARD_ADMIN_DSN (or --dsn)"]),
    (["undo", PLAN], ["missing ALLOCGUARD_UNDO_DSN (or --dsn)"]),
    (["unpin", PLAN], ["missing ALLOCGUARD_UNDO_DSN (or --dsn)"]),
]


@pytest.fixture(scope="module")
def local_ports() -> Iterator[dict[str, Listener]]:
    listeners = {name: Listener() for name in ("PG", "KAFKA", "CONNECT")}
    yield listeners
    for listener in listeners.values():
        listener.close()


@pytest.mark.parametrize(("args", "named"), COMMANDS, ids=[" ".join(args[:2]) for args, _ in COMMANDS])
def test_unset_settings_are_named_and_nothing_is_contacted(
    args: list[str], named: list[str], local_ports: dict[str, Listener]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALLOCGUARD_", "OTEL_"))}
    env.update({f"ALLOCGUARD_{name}_PORT": str(listener.port) for name, listener in local_ports.items()})
    done = run_cli(*args, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("configuration error: ")]
    assert [line.removeprefix("configuration error: ").split(":")[0] for line in lines] == named, done.stderr
    assert "Traceback" not in done.stderr
    assert {name: listener.accepted for name, listener in local_ports.items()} == {"PG": 0, "KAFKA": 0, "CONNECT": 0}
