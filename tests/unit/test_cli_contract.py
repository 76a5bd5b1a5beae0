"""The CLI contract scripts rely on: one exit-code table for the one-shot commands — 0 ok, 1 work found or left,
2 usage or configuration, 3 a dependency unavailable — one line on stderr (no traceback), and with ``--json`` the
error as JSON on stdout. Every command runs against closed ports and against a listener that accepts and never
answers; bad flags are usage errors."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.listener import Listener
from tests.support.process import free_port, run_cli

#: exit codes and timeouts, no dates: librdkafka's timed waits hang under libfaketime (make unit-future)
pytestmark = pytest.mark.realclock

VICTIM = "d99ceb12-193a-4e80-840e-35cb236d9452"
PLAN = "00000000-0000-4000-8000-000000000001"
SINCE = ["--since", "2000-01-01T00:00"]
#: (arguments, whether the command takes --json)
COMMANDS: list[tuple[list[str], bool]] = [
    (["check"], True),
    (["diagnose", VICTIM], True),
    (["remediate", VICTIM], True),
    (["reconcile"], True),
    (["plans", "list"], True),
    (["plans", "show", PLAN], True),
    (["plans", "approve", PLAN, "--by", "sre"], True),
    (["plans", "reject", PLAN, "--by", "sre"], True),
    (["replay", *SINCE], True),
    (["capture", *SINCE, "--out", "capture.jsonl"], False),
    (["dlq", "replay"], True),
    (["dlq", "list"], True),
    (["dlq", "show", "0@0"], True),
    (["dlq", "park", "0@0"], True),
    (["db", "init"], False),
    (["undo", PLAN], True),
    (["connector", "register"], False),
    (["tokens", "list"], True),
    (["tokens", "add", "ops"], False),
    (["tokens", "revoke", "ops"], False),
]
IDS = [" ".join(args[:2]) for args, _ in COMMANDS]


def env_for(port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALLOCGUARD_", "OTEL_"))}
    env.update(
        {
            "ALLOCGUARD_PG_DSN": f"postgresql://allocguard_app:secret@127.0.0.1:{port}/platform",
            "ALLOCGUARD_ADMIN_DSN": f"postgresql://owner:secret@127.0.0.1:{port}/platform",
            "ALLOCGUARD_UNDO_DSN": f"postgresql://sre:secret@127.0.0.1:{port}/platform",
            "ALLOCGUARD_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
            "ALLOCGUARD_CONNECT_URL": f"http://127.0.0.1:{port}",
            "PGCONNECT_TIMEOUT": "3",  # libpq's: a database that accepts and never answers
        }
    )
    return env


@pytest.fixture(scope="module")
def silent() -> Iterator[Listener]:
    listener = Listener(hold=True)
    yield listener
    listener.close()


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    assert "secret" not in stderr
    return lines[0]


@pytest.mark.parametrize(("args", "has_json"), COMMANDS, ids=IDS)
def test_a_closed_port_is_exit_3_in_one_line(args: list[str], has_json: bool, tmp_path: object) -> None:
    done = run_cli(*args, env=env_for(free_port()), cwd=str(tmp_path))
    assert done.returncode == 3, done.stdout + done.stderr
    assert "unavailable" in one_line_error(done.stderr)
    assert list(Path(str(tmp_path)).iterdir()) == [], "a failed command leaves no file behind (capture's --out)"
    if has_json:
        done = run_cli(*args, "--json", env=env_for(free_port()), cwd=str(tmp_path))
        assert done.returncode == 3, done.stdout + done.stderr
        printed = json.loads(done.stdout)
        if args[0] == "check":  # the report is the answer: each item, the unreachable ones FAIL
            assert any(item["status"] == "FAIL" for item in printed), printed
        else:
            assert printed["error"]["exit_code"] == 3
            assert printed["error"]["kind"] == "dependency unavailable"


@pytest.mark.parametrize(("args", "has_json"), COMMANDS, ids=IDS)
def test_a_listener_that_never_answers_is_exit_3_within_the_timeout(
    args: list[str], has_json: bool, silent: Listener, tmp_path: object
) -> None:
    done = run_cli(*args, env=env_for(silent.port), cwd=str(tmp_path), timeout=60)
    assert done.returncode == 3, done.stdout + done.stderr
    one_line_error(done.stderr)


@pytest.mark.parametrize("args", [["diagnose"], ["replay", "--offsets", "0:abc"], ["plans", "nope"], ["run", "--x"]])
def test_bad_flags_are_usage_errors(args: list[str]) -> None:
    done = run_cli(*args, env=env_for(free_port()))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
