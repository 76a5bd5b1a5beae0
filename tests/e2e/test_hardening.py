"""Secrets never printed, settings validated: every command with a typo'd DSN, a URL with credentials, and
settings out of range — one clear line, the right exit code, no traceback, no password."""

from __future__ import annotations

import os
import subprocess

import pytest

from consumer.local.settings import StackSettings
from tests.support.process import run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
SECRET = "s3cr3t-Pw"
TYPO = f"postgresq://allocguard_app:{SECRET}@127.0.0.1:5/platform"
VICTIM = "d99ceb12-193a-4e80-840e-35cb236d9452"


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env={**os.environ, **(env or {})}, timeout=timeout)


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--once", "--health-port", "0"],
        ["check"],
        ["diagnose", VICTIM],
        ["remediate", VICTIM],
        ["dlq", "replay"],
        ["simulate", "seed-incident"],
        ["db", "init"],
    ],
    ids=lambda a: a[0] if a[0] != "dlq" else "dlq-replay",
)
def test_a_typod_dsn_is_never_echoed(args: list[str]) -> None:
    env = {"ALLOCGUARD_PG_DSN": TYPO, "ALLOCGUARD_PLATFORM_DSN": TYPO, "ALLOCGUARD_ADMIN_DSN": TYPO}
    done = cli(*args, env=env)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert SECRET not in output, output
    assert "Traceback" not in output, output
    assert "***" in output or "cannot connect" in output, output


def test_credentials_in_the_assign_endpoint_stay_hidden(stack_settings: StackSettings) -> None:
    endpoint = f"http://ops:{SECRET}@127.0.0.1:9/assign"
    env = {"ALLOCGUARD_STRATEGY": "http", "ALLOCGUARD_ASSIGN_ENDPOINT": endpoint, "ALLOCGUARD_GROUP_ID": "hardening"}
    done = cli("run", "--once", "--health-port", "0", env=env, timeout=90)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "http://ops:***@127.0.0.1:9/assign" in output, "the start-up log shows the endpoint, redacted"
    assert SECRET not in output


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ALLOCGUARD_MODE": "AUTOMATIC"}, "ALLOCGUARD_MODE: Input should be 'dry_run', 'auto' or 'approve'"),
        ({"ALLOCGUARD_STRATEGY": "grpc"}, "ALLOCGUARD_STRATEGY: Input should be 'sql' or 'http'"),
        ({"ALLOCGUARD_GRACE_S": "-1"}, "ALLOCGUARD_GRACE_S: Input should be greater than or equal to 0"),
        ({"ALLOCGUARD_WORKERS": "0"}, "ALLOCGUARD_WORKERS: Input should be greater than or equal to 1"),
        ({"ALLOCGUARD_STRATEGY": "http"}, "strategy http needs ALLOCGUARD_ASSIGN_ENDPOINT"),
        ({"ALLOCGUARD_SHUTDOWN_TIMEOUT_S": "0"}, "ALLOCGUARD_SHUTDOWN_TIMEOUT_S: Input should be greater than 0"),
    ],
)
def test_settings_are_validated_with_one_line_each(env: dict[str, str], expected: str) -> None:
    done = cli("run", "--once", env=env)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if line.startswith("configuration error")]) == 1


def test_mode_is_case_insensitive() -> None:
    from consumer.config import RuntimeSettings

    assert RuntimeSettings(mode="AUTO").mode == "auto"
