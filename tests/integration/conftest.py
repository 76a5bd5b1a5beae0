"""Fixtures for tests that drive the remediation core against the stack's real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from consumer.config import StackSettings
from consumer.simulator import PlatformApp

Conn = psycopg.Connection[Any]


@pytest.fixture
def connect(stack_settings: StackSettings) -> Callable[[], Conn]:
    """Autocommit connections, as the remediator and the simulator need them."""

    def factory() -> Conn:
        return psycopg.connect(stack_settings.pg_dsn, autocommit=True)

    return factory


@pytest.fixture
def app(connect: Callable[[], Conn]) -> Iterator[PlatformApp]:
    with connect() as conn:
        yield PlatformApp(conn)
