"""Dead letters shown to a person carry no guest data: guest columns anywhere, emails and international phone
numbers in any text (JSON kept as a string included) — and ids and times stay readable."""

from __future__ import annotations

import json

from consumer.operations.dlq import redact_guest_data


def test_guest_columns_emails_and_phones_are_redacted_ids_and_times_are_not() -> None:
    row = {
        "id": "d99ceb12-193a-4e80-840e-35cb236d9452",
        "created_at": "2026-01-02T19:30:00.123456Z",  # date-lint: recorded (only its shape matters)
        "customer_name": "Ana Guest",
        "customer_phone": "020 7946 0958",
        "party_size": 4,
        "context": json.dumps({"note": "mail ana.guest@example.com or +44 20 7946 0958", "tableIds": ["t1"]}),
        "nested": [{"email": "x@y.io"}, {"details": None}],
    }
    out = redact_guest_data(row)
    text = json.dumps(out)
    assert "Ana Guest" not in text
    assert "ana.guest@example.com" not in text
    assert "7946 0958" not in text
    assert "x@y.io" not in text
    assert out["id"] == row["id"]
    assert out["created_at"] == row["created_at"]
    assert out["party_size"] == 4
    assert json.loads(out["context"])["tableIds"] == ["t1"], "JSON inside a string stays JSON"
    assert out["nested"][1] == {"details": None}, "an absent value is not invented"


def test_text_that_is_not_json_is_redacted_too() -> None:
    assert redact_guest_data("bad row of ana@example.com: {oops") == "bad row of <redacted>: {oops"
