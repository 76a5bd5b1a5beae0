"""Decision requests go where people are: a plan waiting for a person (mode approve, or a guardrail that turned an
automatic plan into one) and, before it expires, a warning — POSTed to a generic JSON webhook and to a
Slack-compatible one (``ALLOCGUARD_DECISION_WEBHOOK_URL``, ``ALLOCGUARD_DECISION_SLACK_WEBHOOK_URL``).

The request is written to ``allocguard.outbox`` in the plan's own transaction (handlers/store/plans.py); this
sender, a side thread of ``run``, claims due rows with ``FOR UPDATE SKIP LOCKED`` (two replicas never send the same
row at once), sends each to the targets that have not taken it yet, and marks it delivered — or retries it later
with back-off (2 s doubling to 5 min) — in the same transaction. A row whose plan was decided or expired before it
could be sent is moot. A crash between a send and its commit sends that row again: each body carries its delivery
id and an ``Idempotency-Key`` header for receivers that deduplicate. It never blocks the consumer: the poll loop does
not wait for it, and a receiver that hangs costs this thread its timeout.

Paging on stuck work stays with the alert rules; this carries decisions. No guest data: ids, statuses, verdicts and
reasons only."""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

import psycopg

from consumer.config import RuntimeSettings
from consumer.runtime.service import Service
from consumer.telemetry import Metrics
from consumer.version import version
from handlers.store import outbox
from schemas.records import OutboxKind, OutboxOutcome

log = logging.getLogger("allocguard.runtime")

#: (url, body, headers, timeout) → None, or raises OSError/urllib's HTTPError
Post = Callable[[str, bytes, dict[str, str], float], None]


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)  # noqa: S310 (http(s) checked)
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) checked in settings)
        response.read()


def retry_in(attempts: int) -> timedelta:
    return timedelta(seconds=min(2.0 * 2**attempts, 300.0))


class Notifier(Service):
    name = "notifier"

    def __init__(
        self,
        stop: threading.Event,
        connect: Callable[[], AbstractContextManager[psycopg.Connection[Any]]],
        settings: RuntimeSettings,
        metrics: Metrics,
        *,
        every_s: float = 1.0,
        send: Post = post,
        timeout_s: float = 5.0,
    ) -> None:
        super().__init__(stop)
        self._connect = connect
        self._settings = settings
        self._targets = settings.decision_targets()
        self._metrics = metrics
        self._every = every_s
        self._send = send
        self._timeout = timeout_s
        self._warn_before = timedelta(seconds=settings.decision_warn_before_s)
        self._failing: set[int] = set()  # deliveries whose failure was logged (once each)

    def run(self) -> None:
        while not self.stop.wait(self._every):
            try:
                self.turn()
            except psycopg.Error as exc:  # the database is away: the rows wait in the outbox
                log.debug("decision requests not sent this turn: %s", exc)
            except Exception as exc:  # the sender outlives a bad row (it stays in the outbox)
                log.warning("decision requests not sent this turn: %s: %s", type(exc).__name__, exc)

    def turn(self) -> int:
        """Enqueue expiry warnings that fell due, send what is due; returns how many rows were settled."""
        settled = 0
        with self._connect() as conn:
            with conn.transaction():
                outbox.enqueue_expiring(conn, self._warn_before)
            with conn.transaction():
                for row in outbox.claim_due(conn):
                    settled += self._deliver(conn, row)
        return settled

    def _deliver(self, conn: psycopg.Connection[Any], row: dict[str, Any]) -> int:
        delivery, kind = int(row["delivery"]), str(row["kind"])
        done = list(row["delivered_to"] or [])
        if row["status"] != "pending":
            outbox.settled(conn, delivery, OutboxOutcome.MOOT, done)
            self._metrics.decision_requests.add(1, {"kind": kind, "target": "-", "outcome": OutboxOutcome.MOOT})
            return 1
        errors = []
        for target, url in self._targets.items():
            if target in done:
                continue
            body = slack_body(row, self._settings) if target == "slack" else generic_body(row, self._settings)
            headers = {
                "Content-Type": "application/json",
                "User-Agent": f"allocguard/{version()}",
                "Idempotency-Key": f"allocguard-{delivery}-{target}",
            }
            try:
                self._send(url, json.dumps(body).encode(), headers, self._timeout)
            except (OSError, ValueError) as exc:  # HTTPError and URLError are OSErrors
                errors.append(f"{target}: {_describe(exc)}")
                self._metrics.decision_requests.add(1, {"kind": kind, "target": target, "outcome": "failed"})
                continue
            done.append(target)
            self._metrics.decision_requests.add(1, {"kind": kind, "target": target, "outcome": OutboxOutcome.DELIVERED})
        if errors:
            outbox.failed(conn, delivery, done, "; ".join(errors), retry_in(int(row["attempts"])))
            if delivery not in self._failing:
                self._failing.add(delivery)
                log.warning("decision request %d (%s, plan %s) not delivered yet: %s", delivery, kind,
                            row["plan_id"], "; ".join(errors))  # fmt: skip
            return 0
        outbox.settled(conn, delivery, OutboxOutcome.DELIVERED, done)
        self._failing.discard(delivery)
        log.info("decision request %d (%s, plan %s) delivered to %s", delivery, kind, row["plan_id"], ", ".join(done))
        return 1


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    reason = getattr(exc, "reason", None)
    return f"{type(exc).__name__}: {reason if reason is not None else exc}"


def _iso(value: object) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None


def links(row: dict[str, Any], settings: RuntimeSettings) -> dict[str, str | None]:
    page = f"{settings.console_url.rstrip('/')}/plans/{row['plan_id']}" if settings.console_url else None
    return {"trace": settings.trace_link(row.get("trace_id")), "page": page}


def evidence_summary(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Each allocation the plan weighed: ids, the owner's status, the verdict and why — never a guest's data."""
    return [
        {
            "allocation_id": item.get("allocation_id"),
            "owner_booking_id": item.get("booking_id"),
            "owner_status": item.get("owner_status"),
            "table_id": item.get("table_id"),
            "verdict": item.get("verdict"),
            "why": item.get("why"),
            "reason": item.get("reason"),
        }
        for item in plan.get("evidence", [])
    ]


def generic_body(row: dict[str, Any], settings: RuntimeSettings) -> dict[str, Any]:
    plan_id = str(row["plan_id"])
    return {
        "type": "allocguard.decision_request",
        "kind": row["kind"],
        "delivery": int(row["delivery"]),
        "plan": {
            "id": plan_id,
            "kind": row["plan_kind"],
            "status": row["status"],
            "restaurant_id": str(row["restaurant_id"]),
            "booking_id": str(row["booking_id"]),
            "allocation_ids": [str(a) for a in row["allocation_ids"]],
            "why_pending": row["why_pending"],
            "created_at": _iso(row["created_at"]),
            "expires_at": _iso(row["expires_at"]),
        },
        "evidence": evidence_summary(row["plan"] or {}),
        "links": links(row, settings),
        "decide": {
            "approve": f"allocguard plans approve {plan_id} --by <you>",
            "reject": f"allocguard plans reject {plan_id} --by <you>",
        },
    }


def slack_body(row: dict[str, Any], settings: RuntimeSettings) -> dict[str, Any]:
    plan_id, booking = str(row["plan_id"]), str(row["booking_id"])
    count = len(row["allocation_ids"])
    verb = "release" if row["plan_kind"] == "release" else "prune"
    expires = _iso(row["expires_at"]) or "?"
    head = (
        f"plan `{plan_id}` expires at {expires} without a decision"
        if row["kind"] == OutboxKind.PLAN_EXPIRING
        else f"plan `{plan_id}` waits for a decision"
    )
    text = (
        f"allocguard: {head}: {verb} {count} allocation(s) blocking booking `{booking}`"
        f" — {row['why_pending']}. Expires at {expires}."
    )
    found = links(row, settings)
    link_text = " · ".join(
        f"<{url}|{name}>" for name, url in (("console", found["page"]), ("trace", found["trace"])) if url
    )
    decide = (
        f"Decide: `allocguard plans approve {plan_id} --by <you>` or `allocguard plans reject {plan_id} --by <you>`"
    )
    section = "\n".join(part for part in (text, link_text, decide) if part)
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": section}}]}
