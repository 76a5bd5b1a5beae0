"""The console's pages (consumer/operations/console.py): every value escaped, decisions only as forms carrying the
CSRF token, and only for an approver while the plan is pending."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from consumer.operations.console import index, plan_page

PLAN = uuid.uuid4()
ALLOCATION = uuid.uuid4()


def row(status: str = "pending", **overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "id": PLAN,
        "incident_id": uuid.uuid4(),
        "kind": "prune",
        "status": status,
        "restaurant_id": uuid.uuid4(),
        "booking_id": uuid.uuid4(),
        "allocation_ids": [ALLOCATION],
        "why_pending": "mode approve <b>",
        "created_at": now,
        "expires_at": now + timedelta(hours=2),
        "decided_by": None,
        "decided_at": None,
        "note": None,
        "outcome": None,
        "plan": {
            "evidence": [
                {
                    "allocation_id": str(ALLOCATION),
                    "booking_id": str(uuid.uuid4()),
                    "owner_status": "cancelled",
                    "verdict": "orphan",
                    "why": "no_assignment",
                    "reason": "<script>alert(1)</script>",
                }
            ]
        },
        **overrides,
    }


def test_values_are_escaped_and_the_forms_carry_the_csrf_token() -> None:
    html = plan_page("alice", True, row(), "open", "https://t.example/trace/1?a=1&b=2", "tok&en")
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "mode approve &lt;b&gt;" in html
    assert html.count('name="csrf" value="tok&amp;en"') == 2, "approve and reject"
    assert f'action="/plans/{PLAN}/approve"' in html
    assert 'href="https://t.example/trace/1?a=1&amp;b=2"' in html
    assert "(in the plan)" in html


def test_a_viewer_and_a_decided_plan_get_no_form() -> None:
    assert "<form" not in plan_page("bob", False, row(), "awaiting_approval", None, "t")
    decided = row("executed", decided_by="alice", decided_at=datetime.now(UTC), note="ok", outcome={"prune": "pruned"})
    html = plan_page("alice", True, decided, "resolved", None, "t")
    assert "<form" not in html
    assert "executed by <b>alice</b>" in html
    assert "Prune: pruned." in html
    assert "<b id=incident>resolved</b>" in html


def test_the_index_links_each_waiting_plan() -> None:
    html = index("alice", [row()], [], [])
    assert f'href="/plans/{PLAN}"' in html
    assert "No incident needs a person." in html
    assert "No decisions yet." in html
