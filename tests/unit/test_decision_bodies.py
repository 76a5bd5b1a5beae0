"""What a decision request says (consumer/runtime/notify.py): the generic JSON and the Slack message, from a plan's
row — ids, statuses, verdicts and reasons only; the links; the retry back-off."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from consumer.config import RuntimeSettings
from consumer.runtime.notify import generic_body, retry_in, slack_body

PLAN = uuid.UUID("00000000-0000-4000-8000-0000000000aa")
BOOKING = uuid.UUID("00000000-0000-4000-8000-0000000000bb")
ALLOCATION = uuid.UUID("00000000-0000-4000-8000-0000000000cc")
OWNER = uuid.UUID("00000000-0000-4000-8000-0000000000dd")
CREATED = datetime.now(UTC).replace(microsecond=0)
EXPIRES = CREATED + timedelta(hours=2)


def settings(**given: Any) -> RuntimeSettings:
    return RuntimeSettings.model_validate({"pg_dsn": "postgresql://a@b/c", "kafka_bootstrap": "k:9092", **given})


def row(kind: str = "plan_pending", **overrides: Any) -> dict[str, Any]:
    evidence = {
        "allocation_id": str(ALLOCATION),
        "booking_id": str(OWNER),
        "owner_status": "cancelled",
        "table_id": str(uuid.uuid4()),
        "verdict": "orphan",
        "why": "no_assignment",
        "reason": "no assignment row for its booking and table",
        "window": {"lower": "x", "upper": "y"},  # not carried
    }
    return {
        "delivery": 7,
        "kind": kind,
        "attempts": 0,
        "delivered_to": [],
        "plan_id": PLAN,
        "plan_kind": "prune",
        "status": "pending",
        "restaurant_id": uuid.uuid4(),
        "booking_id": BOOKING,
        "allocation_ids": [ALLOCATION],
        "why_pending": "mode approve",
        "created_at": CREATED,
        "expires_at": EXPIRES,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "plan": {"evidence": [evidence], "incident": {"booking_id": str(BOOKING)}},
        **overrides,
    }


def test_the_generic_body_carries_the_plan_its_evidence_and_links() -> None:
    body = generic_body(row(), settings(console_url="https://c.example/", trace_ui_url="https://t.example/{trace_id}"))
    assert body["plan"]["id"] == str(PLAN)
    assert body["plan"]["allocation_ids"] == [str(ALLOCATION)]
    assert body["evidence"] == [
        {
            "allocation_id": str(ALLOCATION),
            "owner_booking_id": str(OWNER),
            "owner_status": "cancelled",
            "table_id": body["evidence"][0]["table_id"],
            "verdict": "orphan",
            "why": "no_assignment",
            "reason": "no assignment row for its booking and table",
        }
    ]
    assert body["links"] == {
        "trace": "https://t.example/4bf92f3577b34da6a3ce929d0e0e4736",
        "page": f"https://c.example/plans/{PLAN}",
    }
    assert body["plan"]["expires_at"] == EXPIRES.isoformat()
    json.dumps(body)  # serialisable as sent


def test_no_links_without_a_console_or_a_trace_ui() -> None:
    assert generic_body(row(), settings())["links"] == {"trace": None, "page": None}
    assert "|console>" not in slack_body(row(), settings())["blocks"][0]["text"]["text"]


def test_the_slack_message_says_what_to_decide() -> None:
    message = slack_body(row(), settings(console_url="https://c.example"))
    assert message["text"].startswith(f"allocguard: plan `{PLAN}` waits for a decision: prune 1 allocation(s)")
    assert f"<https://c.example/plans/{PLAN}|console>" in message["blocks"][0]["text"]["text"]
    warning = slack_body(row("plan_expiring"), settings())
    assert f"plan `{PLAN}` expires at {EXPIRES.isoformat()} without a decision" in warning["text"]


def test_back_off_doubles_to_five_minutes() -> None:
    assert [retry_in(n).total_seconds() for n in range(10)] == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert retry_in(50) == timedelta(seconds=300)


def test_webhook_urls_must_be_http() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="ALLOCGUARD_DECISION_WEBHOOK_URL must be an http"):
        settings(decision_webhook_url="ftp://x")
    assert settings(decision_slack_webhook_url="https://hooks.example/T0/B0/x").decision_targets() == {
        "slack": "https://hooks.example/T0/B0/x"
    }
