"""``allocguard serve``: the approval API, its own process and port — decide from anywhere, with an identity.

- ``GET /api/plans[?status=…]`` the plans, newest first; ``GET /api/plans/<id>`` one, with its evidence;
  ``GET /api/incidents[?status=…]`` incidents that need a person (``awaiting_approval``, ``manual_review`` by
  default); ``POST /api/plans/<id>/approve`` and ``…/reject`` (JSON body ``{"note": "…"}``) — approving executes the
  plan through the same executor and re-check as ``allocguard plans approve``; the decision records the operator.
- **Who**: ``Authorization: Bearer <token>`` (``allocguard tokens add``: hashed in ``allocguard.api_tokens``, which
  only the owner writes); or, behind an authenticating proxy only, a trusted identity header
  (``--identity-header``, e.g. ``X-Forwarded-User``: every request must come through the proxy, which must strip
  the header from clients). No identity → 401; a ``viewer`` deciding → 403; an unknown plan → 404; a plan already
  decided or expired → 409.
- Runs as allocguard's runtime login (``ALLOCGUARD_PG_DSN``): the same grants as ``run``; no guest data is read.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

import psycopg

from consumer.config import RuntimeSettings
from consumer.operations import console, tokens
from consumer.operations.plans import decide
from handlers import store
from handlers.pipeline import PlanDecisionError, SelfApprovalError

log = logging.getLogger("allocguard.serve")

_PLAN = re.compile(r"^/api/plans/([0-9a-fA-F-]{36})$")
_DECISION = re.compile(r"^/api/plans/([0-9a-fA-F-]{36})/(approve|reject)$")
_PAGE = re.compile(r"^/plans/([0-9a-fA-F-]{36})$")
_FORM = re.compile(r"^/plans/([0-9a-fA-F-]{36})/(approve|reject)$")
_CHALLENGE = (("WWW-Authenticate", 'Bearer realm="allocguard"'),)
#: the console's cookies: the operator's token (HttpOnly), and the CSRF token its forms carry
SESSION_COOKIE = "agtoken"
#: pages run no script, load nothing from elsewhere, post only here, and are never framed
_CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
CSRF_COOKIE = "agcsrf"
#: incidents that need a person
NEEDS_A_PERSON = ("awaiting_approval", "manual_review")


@dataclass(frozen=True)
class Answer:
    status: int
    #: JSON, or a page's HTML (a str)
    body: Any
    headers: tuple[tuple[str, str], ...] = ()


def _html(status: int, text: str, *headers: tuple[str, str]) -> Answer:
    return Answer(status, text, headers)


def _see(location: str, *headers: tuple[str, str]) -> Answer:
    return Answer(303, "", (("Location", location), *headers))


def _cookies(headers: dict[str, str]) -> dict[str, str]:
    jar: dict[str, str] = {}
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            jar[name] = value
    return jar


def _cookie(name: str, value: str, *, http_only: bool, secure: bool) -> tuple[str, str]:
    flags = "; HttpOnly" if http_only else ""
    flags += "; Secure" if secure else ""
    return ("Set-Cookie", f"{name}={value}; Path=/; SameSite=Strict{flags}")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


class Api:
    """The routes, independent of the HTTP server (one database connection per request)."""

    def __init__(
        self,
        settings: RuntimeSettings,
        *,
        artifacts_dir: Path | None,
        identity_header: str | None = None,
        connect: Callable[[], psycopg.Connection[Any]] | None = None,
    ) -> None:
        self._settings = settings
        self._artifacts = artifacts_dir
        self._identity_header = identity_header
        self._connect = connect or (lambda: psycopg.connect(settings.resolved_dsn(), autocommit=True))

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Answer:
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path == "/healthz":
            return Answer(200, {"status": "ok"})
        if not url.path.startswith("/api/"):
            with self._connect() as conn:
                return self._console(conn, method, url.path, {k.lower(): v for k, v in headers.items()}, body)
        with self._connect() as conn:
            operator = self._operator(conn, headers)
            if operator is None:
                return Answer(
                    401, {"error": "an identity is needed"}, (("WWW-Authenticate", 'Bearer realm="allocguard"'),)
                )
            if method == "GET":
                return self._read(conn, url.path, query)
            decision = _DECISION.match(url.path)
            if method == "POST" and decision is not None:
                if not operator.may_decide:
                    return Answer(403, {"error": f"{operator.name} may read, not decide ({operator.role})"})
                return self._decide(conn, UUID(decision.group(1)), decision.group(2) == "approve", operator, body)
        return Answer(405 if url.path.startswith("/api/plans") else 404, {"error": f"no {method} {url.path}"})

    def _operator(self, conn: psycopg.Connection[Any], headers: dict[str, str]) -> tokens.Operator | None:
        lowered = {k.lower(): v for k, v in headers.items()}
        if self._identity_header:
            name = lowered.get(self._identity_header.lower(), "").strip()
            return tokens.Operator(name, tokens.TokenRole.APPROVER) if name else None
        given = lowered.get("authorization", "")
        if given.lower().startswith("bearer "):
            return tokens.verify(conn, given[7:].strip())
        kept = _cookies(lowered).get(SESSION_COOKIE)  # the console's sign-in
        return tokens.verify(conn, kept) if kept else None

    # -- the console (consumer/operations/console.py) --

    def _console(
        self, conn: psycopg.Connection[Any], method: str, path: str, headers: dict[str, str], body: bytes
    ) -> Answer:
        secure = headers.get("x-forwarded-proto", "").lower() == "https"
        if path == "/login":
            if method == "POST":
                given = parse_qs(body.decode(errors="replace")).get("token", [""])[-1].strip()
                if tokens.verify(conn, given) is None:
                    return _html(401, console.login("That token is not valid (unknown or revoked)."))
                return _see("/", _cookie(SESSION_COOKIE, given, http_only=True, secure=secure))
            return _html(200, console.login())
        operator = self._operator(conn, headers)
        if operator is None:
            return _see("/login")
        jar = _cookies(headers)
        csrf = jar.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        fresh = () if CSRF_COOKIE in jar else (_cookie(CSRF_COOKIE, csrf, http_only=False, secure=secure),)
        decision = _FORM.match(path)
        if method == "POST" and decision is not None:
            form = {k: v[-1] for k, v in parse_qs(body.decode(errors="replace")).items()}
            origin = headers.get("origin")
            host = headers.get("host", "")
            if (
                not jar.get(CSRF_COOKIE)
                or form.get("csrf") != jar[CSRF_COOKIE]
                or (origin and origin.split("://", 1)[-1] != host)
            ):
                return _html(403, console.page("refused", operator.name, "<p>The form is stale or not ours.</p>"))
            if not operator.may_decide:
                return _html(403, console.page("refused", operator.name, "<p>Your token may read, not decide.</p>"))
            plan_id = UUID(decision.group(1))
            answer = self._decide(conn, plan_id, decision.group(2) == "approve", operator, b"{}", form.get("note"))
            if answer.status == 404:
                return _html(404, console.page("not found", operator.name, "<p>No such plan.</p>"))
            if answer.status == 403:
                return _html(403, console.page("refused", operator.name, f"<p>{console.esc(answer.body['error'])}</p>"))
            return _see(f"/plans/{plan_id}")
        if method != "GET":
            return _html(405, console.page("not allowed", operator.name, ""))
        if path == "/":
            store.expire_plans(conn)
            plans = store.plan_rows(conn, "pending")
            decided = [p for p in store.plan_rows(conn, None, limit=50) if p["status"] != "pending"][:20]
            incidents = conn.execute(
                "SELECT id, booking_id, status, status_reason FROM allocguard.incidents WHERE status = 'manual_review'"
                " ORDER BY updated_at DESC LIMIT 50"
            ).fetchall()
            keys = ("id", "booking_id", "status", "status_reason")
            listed = [dict(zip(keys, row, strict=True)) for row in incidents]
            return _html(200, console.index(operator.name, plans, listed, decided), *fresh)
        page = _PAGE.match(path)
        if page is not None:
            store.expire_plans(conn)
            row = store.plan_row(conn, UUID(page.group(1)))
            if row is None:
                return _html(404, console.page("not found", operator.name, "<p>No such plan.</p>"))
            found = conn.execute("SELECT status FROM allocguard.incidents WHERE id = %s", (row["incident_id"],))
            incident = found.fetchone()
            text = console.plan_page(
                operator.name,
                operator.may_decide,
                row,
                incident[0] if incident else None,
                self._settings.trace_link(row.get("trace_id")),
                csrf,
            )
            return _html(200, text, *fresh)
        return _html(404, console.page("not found", operator.name, ""))

    def _read(self, conn: psycopg.Connection[Any], path: str, query: dict[str, str]) -> Answer:
        if path == "/api/plans":
            store.expire_plans(conn)
            return Answer(200, _plain(store.plan_rows(conn, query.get("status"))))
        found = _PLAN.match(path)
        if found is not None:
            store.expire_plans(conn)
            row = store.plan_row(conn, UUID(found.group(1)))
            return Answer(404, {"error": "no such plan"}) if row is None else Answer(200, _plain(row))
        if path == "/api/incidents":
            wanted = [query["status"]] if "status" in query else list(NEEDS_A_PERSON)
            rows = conn.execute(
                "SELECT id, booking_id, restaurant_id, status, status_reason, mode, event_count, created_at,"
                " updated_at, trace_id FROM allocguard.incidents WHERE status = ANY(%s)"
                " ORDER BY updated_at DESC LIMIT 200",
                (wanted,),
            ).fetchall()
            keys = ("id", "booking_id", "restaurant_id", "status", "reason", "mode", "event_count", "created_at",
                    "updated_at", "trace_id")  # fmt: skip
            return Answer(200, [_plain(dict(zip(keys, row, strict=True))) for row in rows])
        return Answer(404, {"error": "not found"})

    def _decide(
        self,
        conn: psycopg.Connection[Any],
        plan_id: UUID,
        approve: bool,
        operator: tokens.Operator,
        body: bytes,
        note: str | None = None,
    ) -> Answer:
        try:
            note = note or json.loads(body or b"{}").get("note")
        except (ValueError, AttributeError):
            return Answer(400, {"error": 'the body is JSON: {"note": "…"}'})
        store.expire_plans(conn)
        row = store.plan_row(conn, plan_id)
        if row is None:
            return Answer(404, {"error": "no such plan"})
        if row["status"] != "pending":
            return Answer(409, {"error": f"plan {plan_id} is already {row['status']}", "decided_by": row["decided_by"]})
        try:
            result = decide(self._settings, plan_id, approve, operator.name, note, self._artifacts)
        except SelfApprovalError as exc:  # four eyes: the plan's requester may not approve it alone
            return Answer(403, {"error": str(exc)})
        except PlanDecisionError as exc:  # decided by someone else in between
            return Answer(409, {"error": str(exc)})
        log.info("plan %s %s by %s", plan_id, "approved" if approve else "rejected", operator.name)
        if result is None:
            return Answer(200, {"plan": str(plan_id), "status": "rejected", "by": operator.name})
        return Answer(
            200,
            {"plan": str(plan_id), "by": operator.name, "outcome": result.status, "reason": result.reason},
        )


def serve(api: Api, host: str, port: int, stop: threading.Event | None = None) -> ThreadingHTTPServer:
    """Serve ``api`` on a thread; returns the server (``shutdown()`` ends it)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "allocguard"

        def _answer(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(min(length, 65536)) if length else b""
            try:
                answer = api.handle(method, self.path, dict(self.headers.items()), body)
            except psycopg.OperationalError as exc:
                answer = Answer(503, {"error": f"database unavailable: {type(exc).__name__}"})
            except Exception as exc:  # one request fails, the server stays up; the cause is logged, not sent
                log.warning("%s %s failed: %s: %s", method, self.path.split("?")[0], type(exc).__name__, exc)
                answer = Answer(500, {"error": "internal error (logged)"})
            is_page = isinstance(answer.body, str)
            payload = answer.body.encode() if is_page else json.dumps(answer.body).encode()
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", "text/html; charset=utf-8" if is_page else "application/json")
                if is_page:
                    self.send_header(
                        "Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
                    )
                    self.send_header("X-Frame-Options", "DENY")
                    self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in answer.headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                return

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def log_message(self, format: str, *args: object) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="allocguard-serve", daemon=True).start()
    return server
