"""End-to-end tests drive allocguard only through its CLI and subprocesses, which connect as allocguard's
least-privilege login role (``ALLOCGUARD_PG_DSN``). What the tests themselves do — play the platform, check its
tables — is the platform's part: here ``connect`` is the platform's back-end role, never the cluster's owner."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest


@pytest.fixture
def connect(platform_connect: Callable[[], psycopg.Connection[Any]]) -> Callable[[], psycopg.Connection[Any]]:
    return platform_connect
