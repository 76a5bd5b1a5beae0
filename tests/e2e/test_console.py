"""A person approves from the console page (``allocguard serve``, consumer/operations/console.py) in a real headless
Chromium (tests/support/cdp.py): signs in with a token, sees the plan a real ``allocguard run`` left waiting with
its evidence table, approves it, and sees the outcome; a forged or cross-site form is refused; opening a link
decides nothing; no guest data on any page. ``ALLOCGUARD_CONSOLE_SCREENSHOTS=DIR`` keeps the screenshots (the docs'
come from here)."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from consumer.local.settings import StackSettings
from consumer.local.simulator import PlatformApp, orphan_by_reseat
from consumer.local.stack import LocalStack, StackError
from tests.e2e.test_serve import Server, token
from tests.support.cdp import Browser
from tests.support.platform import confirmed
from tests.support.process import RuntimeProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]


@pytest.fixture
def browser(stack_settings: StackSettings, tmp_path: Path) -> Iterator[Browser]:
    try:
        chromium = LocalStack(stack_settings, log=lambda line: None).chromium()
    except StackError as exc:
        pytest.fail(str(exc), pytrace=False)
    instance = Browser(chromium, tmp_path / "profile")
    yield instance
    instance.close()


def post_form(port: int, path: str, form: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=form.encode(),
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (this test's server)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_person_approves_from_the_console(
    browser: Browser,
    stack_settings: StackSettings,
    platform_connect: Callable[[], Conn],
    connect: Callable[[], Conn],
    runtimes: Callable[..., RuntimeProcess],
    tmp_path: Path,
    unique: str,
) -> None:
    shots = Path(os.environ.get("ALLOCGUARD_CONSOLE_SCREENSHOTS") or tmp_path)
    alice = f"alice-{unique}"
    secret = token(stack_settings, alice, "approver")
    server = Server(tmp_path / "serve.log")
    try:
        runtime = runtimes("run", f"console-{unique}", env={"ALLOCGUARD_MODE": "approve"})
        runtime.wait_ready()
        with platform_connect() as conn:
            scenario = orphan_by_reseat(PlatformApp(conn), job_attempts=0)
        victim = scenario.victim_id
        assert victim is not None

        def waiting() -> str | None:
            with connect() as conn:
                row = conn.execute(
                    "SELECT id FROM allocguard.plans WHERE booking_id = %s AND status = 'pending'", (victim,)
                ).fetchone()
            return str(row[0]) if row else None

        wait_for("the plan waiting", lambda: waiting() is not None, timeout=60)
        plan = waiting()
        assert plan is not None
        base = f"http://127.0.0.1:{server.port}"

        # 1. signed out: the console sends you to sign in; a wrong token is refused
        browser.open(f"{base}/")
        browser.wait("location.pathname === '/login'")
        browser.evaluate("document.querySelector('input[name=token]').value = 'agt_wrong'")
        browser.evaluate("document.querySelector('form').submit()")
        browser.wait("document.body && document.body.innerText.includes('not valid')")
        browser.evaluate(f"document.querySelector('input[name=token]').value = {secret!r}")
        browser.evaluate("document.querySelector('form').submit()")
        browser.wait("location.pathname === '/' && document.body.innerText.includes('Plans waiting')")
        assert f"signed in as {alice}" in browser.text()
        assert plan[:8] in browser.text()
        browser.screenshot(shots / "console-index.png")

        # 2. the plan's page (what a link in chat opens): its evidence, and opening it decides nothing
        browser.open(f"{base}/plans/{plan}")
        page = browser.text()
        assert "pending" in page
        assert "orphan" in page
        assert str(scenario.ids["owner"]) in page, "the orphan's owner booking in the evidence table"
        browser.screenshot(shots / "console-plan.png")
        with connect() as conn:
            assert conn.execute("SELECT status FROM allocguard.plans WHERE id = %s", (plan,)).fetchone() == ("pending",)
            guest = conn.execute(
                "SELECT customer_name, customer_email, customer_phone FROM bookings WHERE id = %s", (victim,)
            ).fetchone()
        html = str(browser.evaluate("document.documentElement.outerHTML"))
        for value in guest or ():
            if value:
                assert str(value) not in html, "no guest data on the page"

        # 3. forged forms: a cross-site post carries the session cookie but not the CSRF token, or another Origin
        session = f"agtoken={secret}"
        assert post_form(server.port, f"/plans/{plan}/approve", "csrf=guess", {"Cookie": session}) == 403
        csrf = str(browser.evaluate("document.querySelector('input[name=csrf]').value"))
        cookies = f"{session}; agcsrf={csrf}"
        evil = {"Cookie": cookies, "Origin": "https://evil.example"}
        assert post_form(server.port, f"/plans/{plan}/approve", f"csrf={csrf}", evil) == 403
        with connect() as conn:
            assert conn.execute("SELECT status FROM allocguard.plans WHERE id = %s", (plan,)).fetchone() == ("pending",)

        # 4. approve: the note, the button; the outcome on the page
        browser.evaluate("document.querySelector('form.decide input[name=note]').value = 'checked on the floor'")
        browser.evaluate("document.querySelector('button.approve').click()")
        browser.wait("document.getElementById('status') && document.getElementById('status').innerText === 'executed'")
        browser.wait("document.getElementById('incident').innerText === 'resolved'")
        outcome = browser.text()
        assert f"executed by {alice}" in outcome
        assert "checked on the floor" in outcome
        assert "Prune: pruned" in outcome
        browser.screenshot(shots / "console-approved.png")
        assert confirmed(connect, victim)
        with connect() as conn:
            row = conn.execute("SELECT status, decided_by FROM allocguard.plans WHERE id = %s", (plan,)).fetchone()
        assert row == ("executed", alice)

        # 5. the index lists it among past decisions; a second approval from the stale form is refused
        # (urllib follows the 303 to the plan's page: 200, which shows the decision already made)
        assert post_form(server.port, f"/plans/{plan}/approve", f"csrf={csrf}", {"Cookie": cookies}) == 200
        with connect() as conn:
            decided = conn.execute(
                "SELECT count(*) FROM allocguard.remediations r JOIN allocguard.incidents i ON i.id = r.incident_id"
                " WHERE i.booking_id = %s",
                (victim,),
            ).fetchone()
        assert decided == (1,), "decided once"
        browser.open(f"{base}/")
        assert "Past decisions" in browser.text()
    finally:
        assert server.stop() == 0
