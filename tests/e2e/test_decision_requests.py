"""A decision arrives where people are (consumer/runtime/notify.py): a plan waiting for a person is announced to a
JSON webhook and a Slack-compatible one — once each, with its evidence, the trace and console links and no guest
data; a warning before it expires; a receiver that is down gets it when it is back; two replicas send each request
once. Real ``allocguard run`` processes (mode approve), real incidents, a local HTTP receiver."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest

from consumer.local.simulator import PlatformApp, ScenarioResult, orphan_by_reseat
from tests.support.process import RuntimeProcess, free_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]
CONSOLE = "https://allocguard.example"
TRACES = "https://jaeger.example/trace/{trace_id}"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Receiver:
    """Records every POST; answers 200."""

    port: int
    got: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length))
                owner.got.append(Received(self.path, dict(self.headers.items()), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def at(self, path: str, kind: str | None = None, plans: set[str] | None = None) -> list[Received]:
        """What arrived at ``path`` (of a kind; about these plans only: the database is shared with other tests,
        whose pending plans a sender announces too)."""
        return [
            r
            for r in list(self.got)
            if r.path == path and (kind is None or _kind(r) == kind) and (plans is None or _plan(r) in plans)
        ]

    def plans(self, path: str, kind: str = "plan_pending", of: set[str] | None = None) -> list[str]:
        return [_plan(r) for r in self.at(path, kind, of)]


def _plan(received: Received) -> str:
    if "plan" in received.body:
        return str(received.body["plan"]["id"])
    found = re.search(r"plan `([0-9a-f-]{36})`", received.body.get("text", ""))
    return found.group(1) if found else ""


def _kind(received: Received) -> str:
    if "kind" in received.body:
        return str(received.body["kind"])
    return "plan_expiring" if "expires at" in received.body.get("text", "").split(":")[1] else "plan_pending"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    instance = Receiver(free_port()).start()
    yield instance
    instance.stop()


def env_for(port: int, **extra: str) -> dict[str, str]:
    return {
        "ALLOCGUARD_MODE": "approve",
        "ALLOCGUARD_DECISION_WEBHOOK_URL": f"http://127.0.0.1:{port}/hook?token=s3cret",
        "ALLOCGUARD_DECISION_SLACK_WEBHOOK_URL": f"http://127.0.0.1:{port}/slack",
        "ALLOCGUARD_CONSOLE_URL": CONSOLE,
        "ALLOCGUARD_TRACE_UI_URL": TRACES,
        **extra,
    }


def play(platform_connect: Callable[[], Conn]) -> ScenarioResult:
    with platform_connect() as conn:
        scenario = orphan_by_reseat(PlatformApp(conn), job_attempts=0)
    assert scenario.victim_id is not None
    return scenario


def pending_plan(connect: Callable[[], Conn], victim: uuid.UUID) -> str | None:
    with connect() as conn:
        row = conn.execute(
            "SELECT id FROM allocguard.plans WHERE booking_id = %s AND status = 'pending'", (victim,)
        ).fetchone()
    return str(row[0]) if row else None


def outbox_rows(connect: Callable[[], Conn], plan_id: str) -> list[tuple[str, str | None, list[str], int]]:
    with connect() as conn:
        return [
            (str(kind), outcome, list(targets), int(attempts))
            for kind, outcome, targets, attempts in conn.execute(
                "SELECT kind, outcome, delivered_to, attempts FROM allocguard.outbox WHERE plan_id = %s ORDER BY id",
                (plan_id,),
            ).fetchall()
        ]


def test_a_pending_plan_is_announced_once_to_each_target_with_its_evidence_and_links(
    receiver: Receiver,
    platform_connect: Callable[[], Conn],
    connect: Callable[[], Conn],
    runtimes: Callable[..., RuntimeProcess],
    unique: str,
) -> None:
    # a plan expires in an hour and the warning comes two hours before: the warning is due at once
    env = env_for(receiver.port, ALLOCGUARD_PLAN_TTL_S="3600", ALLOCGUARD_DECISION_WARN_BEFORE_S="7200")
    runtime = runtimes("run", f"decide-{unique}", env=env)
    runtime.wait_ready()
    scenario = play(platform_connect)
    victim = scenario.victim_id
    assert victim is not None
    wait_for("the plan waiting", lambda: pending_plan(connect, victim) is not None, timeout=60)
    plan_id = pending_plan(connect, victim)
    assert plan_id is not None
    ours = {plan_id}
    wait_for("both announced", lambda: len(receiver.at("/slack", None, ours)) >= 2, timeout=30, interval=0.1)
    wait_for("and warned", lambda: len(receiver.at("/hook?token=s3cret", None, ours)) >= 2, timeout=30, interval=0.1)

    (generic,) = receiver.at("/hook?token=s3cret", "plan_pending", ours)
    body = generic.body
    assert body["type"] == "allocguard.decision_request"
    assert body["plan"]["id"] == plan_id
    assert body["plan"]["booking_id"] == str(victim)
    assert body["plan"]["status"] == "pending"
    assert len(body["plan"]["allocation_ids"]) == 1, "the orphan left by the re-seat"
    (orphan,) = [item for item in body["evidence"] if item["allocation_id"] in body["plan"]["allocation_ids"]]
    assert orphan["owner_booking_id"] == scenario.ids["owner"]
    assert orphan["verdict"] == "orphan"
    assert body["links"]["page"] == f"{CONSOLE}/plans/{plan_id}"
    with connect() as conn:
        row = conn.execute("SELECT trace_id FROM allocguard.plans WHERE id = %s", (plan_id,)).fetchone()
    trace_id = row[0] if row else None  # recorded when spans are exported (no collector here: none)
    assert body["links"]["trace"] == (TRACES.replace("{trace_id}", trace_id) if trace_id else None)
    assert body["decide"]["approve"] == f"allocguard plans approve {plan_id} --by <you>"
    assert generic.headers["Idempotency-Key"] == f"allocguard-{body['delivery']}-webhook"

    (slack,) = receiver.at("/slack", "plan_pending", ours)
    assert plan_id in slack.body["text"]
    assert f"<{CONSOLE}/plans/{plan_id}|console>" in slack.body["blocks"][0]["text"]["text"]
    (warning,) = receiver.at("/hook?token=s3cret", "plan_expiring", ours)
    assert warning.body["plan"]["id"] == plan_id
    assert len(receiver.at("/slack", "plan_expiring", ours)) == 1

    # no guest data in anything sent
    with platform_connect() as conn:
        guest = conn.execute(
            "SELECT customer_name, customer_email, customer_phone FROM bookings WHERE id = %s", (victim,)
        ).fetchone()
    sent = json.dumps([r.body for r in receiver.got])  # everything: this test's plan and any other
    for value in guest or ():
        if value:
            assert str(value) not in sent
    assert "s3cret" not in runtime.log(), "the webhook's URL is a secret"
    assert outbox_rows(connect, plan_id) == [
        ("plan_pending", "delivered", ["webhook", "slack"], 1),
        ("plan_expiring", "delivered", ["webhook", "slack"], 1),
    ]
    # nothing more is sent later
    time.sleep(3)  # poll: three more sender turns, in which nothing may be sent again
    assert len(receiver.at("/hook?token=s3cret", None, ours)) == 2
    assert len(receiver.at("/slack", None, ours)) == 2


def test_a_receiver_that_is_down_gets_it_once_it_is_back(
    platform_connect: Callable[[], Conn],
    connect: Callable[[], Conn],
    runtimes: Callable[..., RuntimeProcess],
    unique: str,
) -> None:
    port = free_port()  # nothing listens yet
    runtime = runtimes("run", f"decide-down-{unique}", env=env_for(port))
    runtime.wait_ready()
    scenario = play(platform_connect)
    victim = scenario.victim_id
    assert victim is not None
    wait_for("the plan waiting", lambda: pending_plan(connect, victim) is not None, timeout=60)
    plan_id = pending_plan(connect, victim)
    assert plan_id is not None
    wait_for(
        "a failed attempt recorded",
        lambda: any(attempts >= 1 and outcome is None for _, outcome, _, attempts in outbox_rows(connect, plan_id)),
        timeout=30,
    )
    assert "not delivered yet" in runtime.log()
    receiver = Receiver(port).start()
    try:
        ours = {plan_id}
        wait_for(
            "delivered once the receiver is back",
            lambda: (
                len(receiver.at("/slack", None, ours)) >= 1 and len(receiver.at("/hook?token=s3cret", None, ours)) >= 1
            ),
            timeout=60,
            interval=0.1,
        )
        wait_for(
            "recorded as delivered",
            lambda: [o for _, o, _, _ in outbox_rows(connect, plan_id)] == ["delivered"],
            timeout=30,
        )
        assert receiver.plans("/hook?token=s3cret", of=ours) == [plan_id]
        assert len(receiver.at("/slack", None, ours)) == 1
    finally:
        receiver.stop()
    assert runtime.process.poll() is None


def test_two_replicas_send_each_request_once(
    receiver: Receiver,
    platform_connect: Callable[[], Conn],
    connect: Callable[[], Conn],
    runtimes: Callable[..., RuntimeProcess],
    unique: str,
) -> None:
    group = f"decide-two-{unique}"
    first = runtimes("run", group, env=env_for(receiver.port))
    second = runtimes("run", group, env=env_for(receiver.port))
    first.wait_ready()
    second.wait_ready()
    victims = [play(platform_connect).victim_id for _ in range(4)]
    plans: list[str] = []
    for victim in victims:
        assert victim is not None
        wait_for("the plan waiting", lambda v=victim: pending_plan(connect, v) is not None, timeout=60)
        plan = pending_plan(connect, victim)
        assert plan is not None
        plans.append(plan)
    wait_for(
        "every request delivered",
        lambda: all([o for _, o, _, _ in outbox_rows(connect, p)] == ["delivered"] for p in plans),
        timeout=60,
    )
    ours = set(plans)
    assert sorted(receiver.plans("/hook?token=s3cret", of=ours)) == sorted(plans), "each plan once, by one replica"
    assert len(receiver.at("/slack", None, ours)) == len(plans)
    senders = {p.log().count("delivered to") for p in (first, second)}
    assert sum(senders) >= 1
