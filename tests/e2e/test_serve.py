"""Decide over HTTP with an identity (``allocguard serve``, consumer/operations/serve.py): a real incident left
waiting by ``allocguard run`` in mode approve is read and approved over real HTTP with an operator's bearer token;
no token → 401, a viewer deciding → 403, an unknown plan → 404, a second decision → 409, a revoked token → 401; the
runtime's role cannot mint a token; behind a proxy, its identity header instead."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from consumer.local.settings import StackSettings
from consumer.local.simulator import PlatformApp, orphan_by_reseat
from tests.support.platform import confirmed
from tests.support.process import RuntimeProcess, free_port, run_cli, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]


class Server:
    def __init__(self, log: Path, *args: str) -> None:
        self.port = free_port()
        self.log_path = log
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "consumer.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port), *args],
            env=os.environ.copy(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for("serve listening", lambda: self.call("GET", "/healthz")[0] == 200, timeout=30, interval=0.1)

    def call(
        self, method: str, path: str, token: str | None = None, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        given = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method, headers=given)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (http to this test's server)
                return response.status, json.loads(response.read() or b"null"), dict(response.headers.items())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null"), dict(exc.headers.items())
        except OSError:
            return 0, None, {}

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=15)
        self._log.close()
        assert "Traceback" not in self.log_path.read_text(errors="replace"), self.log_path.read_text()[-3000:]
        return code


def as_owner(stack_settings: StackSettings) -> dict[str, str]:
    return {**os.environ, "ALLOCGUARD_ADMIN_DSN": stack_settings.admin_dsn}


def token(stack_settings: StackSettings, name: str, role: str) -> str:
    done = run_cli("tokens", "add", name, "--role", role, env=as_owner(stack_settings))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    instance = Server(tmp_path / "serve.log")
    yield instance
    assert instance.stop() == 0


def test_decide_over_http_with_an_identity(
    server: Server,
    stack_settings: StackSettings,
    platform_connect: Callable[[], Conn],
    connect: Callable[[], Conn],
    runtimes: Callable[..., RuntimeProcess],
    unique: str,
) -> None:
    alice, bob = f"alice-{unique}", f"bob-{unique}"
    approver, viewer = token(stack_settings, alice, "approver"), token(stack_settings, bob, "viewer")
    runtime = runtimes("run", f"serve-{unique}", env={"ALLOCGUARD_MODE": "approve"})
    runtime.wait_ready()
    with platform_connect() as conn:
        scenario = orphan_by_reseat(PlatformApp(conn), job_attempts=0)
    victim = scenario.victim_id
    assert victim is not None

    def waiting() -> str | None:
        status, plans, _ = server.call("GET", "/api/plans?status=pending", viewer)
        assert status == 200
        return next((p["id"] for p in plans if p["booking_id"] == str(victim)), None)

    wait_for("the plan waiting", lambda: waiting() is not None, timeout=60)
    plan = waiting()
    assert plan is not None

    status, _, headers = server.call("GET", "/api/plans")
    assert (status, headers.get("WWW-Authenticate")) == (401, 'Bearer realm="allocguard"')
    assert server.call("GET", "/api/plans", "agt_not-a-token")[0] == 401
    status, shown, _ = server.call("GET", f"/api/plans/{plan}", viewer)
    assert status == 200
    assert shown["status"] == "pending"
    assert {e["verdict"] for e in shown["plan"]["evidence"]} >= {"orphan"}
    status, incidents, _ = server.call("GET", "/api/incidents", viewer)
    assert status == 200
    assert any(i["booking_id"] == str(victim) and i["status"] == "awaiting_approval" for i in incidents)

    assert server.call("POST", f"/api/plans/{plan}/approve", viewer)[0] == 403, "a viewer may not decide"
    assert server.call("POST", f"/api/plans/{uuid.uuid4()}/approve", approver)[0] == 404
    status, decided, _ = server.call("POST", f"/api/plans/{plan}/approve", approver, {"note": "checked the floor"})
    assert status == 200, decided
    assert decided["by"] == alice
    assert decided["outcome"] == "resolved"
    assert confirmed(connect, victim)
    status, again, _ = server.call("POST", f"/api/plans/{plan}/reject", approver)
    assert status == 409, again
    assert again["decided_by"] == alice
    with connect() as conn:
        row = conn.execute("SELECT status, decided_by, note FROM allocguard.plans WHERE id = %s", (plan,)).fetchone()
    assert row == ("executed", alice, "checked the floor")

    done = run_cli("tokens", "revoke", alice, env=as_owner(stack_settings))
    assert done.returncode == 0, done.stderr
    assert server.call("GET", "/api/plans", approver)[0] == 401, "revoked at once"

    # allocguard's runtime login reads tokens to verify them and can never mint one
    with (
        psycopg.connect(stack_settings.pg_dsn, autocommit=True) as app,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        app.execute("INSERT INTO allocguard.api_tokens (name, token_sha256, role) VALUES ('mallory', 'x', 'approver')")


def test_behind_a_proxy_its_identity_header(tmp_path: Path) -> None:
    proxied = Server(tmp_path / "proxied.log", "--identity-header", "X-Forwarded-User")
    try:
        assert proxied.call("GET", "/api/plans")[0] == 401
        status, _, _ = proxied.call("GET", "/api/plans", headers={"X-Forwarded-User": "carol"})
        assert status == 200
    finally:
        assert proxied.stop() == 0


def test_the_person_who_asked_for_a_plan_may_not_approve_it_alone(
    server: Server,
    stack_settings: StackSettings,
    platform_connect: Callable[[], Conn],
    connect: Callable[[], Conn],
    unique: str,
) -> None:
    """Four eyes: ``allocguard remediate --mode approve`` run by carol makes a plan carol may not approve herself
    (403, nothing touched); dave may. ``ALLOCGUARD_ALLOW_SELF_APPROVAL`` would allow it."""
    carol, dave = f"carol-{unique}", f"dave-{unique}"
    carols, daves = token(stack_settings, carol, "approver"), token(stack_settings, dave, "approver")
    with platform_connect() as conn:
        scenario = orphan_by_reseat(PlatformApp(conn), job_attempts=0)
    victim = scenario.victim_id
    assert victim is not None
    asked = run_cli("remediate", str(victim), "--mode", "approve", env={**os.environ, "ALLOCGUARD_OPERATOR": carol})
    assert asked.returncode == 0, asked.stdout + asked.stderr
    with connect() as conn:
        row = conn.execute(
            "SELECT id, requested_by FROM allocguard.plans WHERE booking_id = %s AND status = 'pending'", (victim,)
        ).fetchone()
    assert row is not None
    plan, requester = str(row[0]), row[1]
    assert requester == carol
    status, refused, _ = server.call("POST", f"/api/plans/{plan}/approve", carols)
    assert status == 403, refused
    assert "another person must approve it" in refused["error"]
    assert not confirmed(connect, victim), "nothing touched"
    status, decided, _ = server.call("POST", f"/api/plans/{plan}/approve", daves)
    assert status == 200, decided
    assert decided["by"] == dave
    assert confirmed(connect, victim)
