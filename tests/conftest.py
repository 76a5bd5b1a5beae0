"""Session-wide real services: the local stack is started once (or an already running one is used).

- With ``ALLOCGUARD_KAFKA_BOOTSTRAP`` (and ``ALLOCGUARD_PG_DSN``, ``ALLOCGUARD_CONNECT_URL``) set, the tests use
  those services and start nothing.
- Otherwise they run ``allocguard stack up`` (idempotent) and stop at the end only what they started.
- A stack that cannot start **fails** the tests that need it; nothing is skipped.
- A test that uses the stack's fixtures carries the ``stack`` marker, or the run stops at collection: ``make unit``
  (``-m "not stack"``) is then sure to need no service.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from consumer.local.settings import StackSettings
from consumer.local.stack import LocalStack, StackError, captured_topics
from tests.support.cdc import CdcReader
from tests.support.process import RuntimeProcess

#: fixtures that start or reach the local stack; any fixture built on them is a stack fixture too
STACK_FIXTURES = frozenset({"stack_settings", "runtimes"})


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Markers enforced, not trusted: before ``-m`` deselects anything, every test that needs the stack (through
    its fixtures, or as an end-to-end test) must say so with ``@pytest.mark.stack``."""
    unmarked = sorted(
        item.nodeid
        for item in items
        if item.get_closest_marker("stack") is None
        and (STACK_FIXTURES.intersection(getattr(item, "fixturenames", ())) or item.get_closest_marker("e2e"))
    )
    if unmarked:
        listed = "\n  ".join(unmarked)
        raise pytest.UsageError(
            f"{len(unmarked)} test(s) need the stack but are not marked stack (add pytestmark = pytest.mark.stack):"
            f"\n  {listed}"
        )


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[StackSettings]:
    settings = StackSettings()
    if settings.external:
        yield settings
        return
    local = LocalStack(settings, log=lambda line: print(f"[stack] {line}"))
    already_running = all(c.running for c in local.status())
    try:
        local.up()
    except StackError as exc:
        pytest.fail(f"the local stack could not start: {exc}", pytrace=False)
    # allocguard's commands have no defaults: the tests and the processes they start say where the stack is (the
    # two settings every production command requires; the owner's and the platform's logins and the Connect URL
    # stay the fixtures' business, so a test's own StackSettings is not pointed elsewhere)
    os.environ.update(local.required_env())
    yield settings
    if not already_running and os.environ.get("ALLOCGUARD_KEEP_STACK") != "1":
        local.down()


@pytest.fixture(autouse=True)
def _stack_env(request: pytest.FixtureRequest) -> None:
    """A test marked stack has the stack's settings in the environment, whichever fixtures it asks for."""
    if request.node.get_closest_marker("stack") is not None:
        request.getfixturevalue("stack_settings")


@pytest.fixture
def pg(stack_settings: StackSettings) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """The platform's back-end role (BYPASSRLS, like the hosting service's service_role): the simulator writes
    and the tests check with it. Autocommit; use ``with conn.transaction()``."""
    with psycopg.connect(stack_settings.platform_dsn, row_factory=dict_row, autocommit=True) as conn:
        yield conn


@pytest.fixture
def platform_connect(stack_settings: StackSettings) -> Callable[[], psycopg.Connection[Any]]:
    """Autocommit connections as the platform's back-end role (the simulator, the tests' checks)."""

    def factory() -> psycopg.Connection[Any]:
        return psycopg.connect(stack_settings.platform_dsn, autocommit=True)

    return factory


@pytest.fixture
def operator_connect(stack_settings: StackSettings) -> Callable[[], psycopg.Connection[Any]]:
    """The database owner, only to inject the faults an operator could cause (a grant revoked and restored, a
    policy dropped): never to run allocguard or to check its results."""

    def factory() -> psycopg.Connection[Any]:
        return psycopg.connect(stack_settings.admin_dsn, autocommit=True)

    return factory


@pytest.fixture
def connect(stack_settings: StackSettings) -> Callable[[], psycopg.Connection[Any]]:
    """Autocommit connections as allocguard: the login role that is only a member of allocguard_remediator,
    under the reference model's row-level security — never the owner."""

    def factory() -> psycopg.Connection[Any]:
        return psycopg.connect(stack_settings.pg_dsn, autocommit=True)

    return factory


@pytest.fixture
def cdc(stack_settings: StackSettings) -> Iterator[CdcReader]:
    """Reads the platform connector's topics from their current end (isolation: a fresh group, own ids)."""
    reader = CdcReader(stack_settings.kafka_bootstrap, captured_topics(stack_settings.topic_prefix))
    yield reader
    reader.close()


@pytest.fixture(scope="session")
def capture_dir() -> Path | None:
    """Set ALLOCGUARD_CAPTURE_DIR to save the real messages e2e tests see as unit-test fixtures."""
    value = os.environ.get("ALLOCGUARD_CAPTURE_DIR")
    return Path(value) if value else None


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def runtimes(tmp_path: Path) -> Iterator[Callable[..., RuntimeProcess]]:
    """Starts ``allocguard run`` subprocesses (``name``, ``group``, then RuntimeProcess's keywords); whatever a test
    leaves running is killed afterwards."""
    started: list[RuntimeProcess] = []

    def start(name: str, group: str, **kwargs: Any) -> RuntimeProcess:
        process = RuntimeProcess(tmp_path / f"{name}.log", group, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.process.poll() is None:
            process.kill()
