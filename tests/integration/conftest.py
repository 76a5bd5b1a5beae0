"""Fixtures for tests that drive the remediation core against the stack's real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from consumer.local.simulator import PlatformApp

Conn = psycopg.Connection[Any]


@pytest.fixture
def app(platform_connect: Callable[[], Conn]) -> Iterator[PlatformApp]:
    with platform_connect() as conn:
        yield PlatformApp(conn)
