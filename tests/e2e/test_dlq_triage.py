"""Dead letters one by one, on the real stack: list and filter them, show one with guest data redacted, park one (the
topic is never rewritten), re-drive only the chosen ones — the parked one skipped, the replay group's position left
where it was — and unpark it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from confluent_kafka import Producer

from consumer.cli import main
from consumer.local.settings import StackSettings
from consumer.local.simulator import PlatformApp, orphan_by_reseat
from consumer.local.stack import LocalStack
from tests.support.cdc import CdcReader, RawMessage
from tests.support.platform import confirmed

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]
EMAIL, PHONE = "ana.guest@example.com", "+44 20 7946 0958"


def headers(
    source: str, offset: int, reason: str, error: str = "InsufficientPrivilege"
) -> list[tuple[str, str | bytes | None]]:
    return [
        ("allocguard.error.class", error.encode()),
        ("allocguard.error.reason", reason.encode()),
        ("allocguard.source.topic", source.encode()),
        ("allocguard.source.partition", b"0"),
        ("allocguard.source.offset", str(offset).encode()),
    ]


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_dead_letters_are_listed_shown_parked_and_replayed_one_by_one(
    stack_settings: StackSettings, connect: Callable[[], Conn], unique: str
) -> None:
    prefix = stack_settings.topic_prefix
    topic, dlq = f"{prefix}.public.observability_events", f"{prefix}.allocguard.dlq-triage-{unique}"
    LocalStack(stack_settings, log=lambda line: None).ensure_topics([dlq], partitions=1)
    reader = CdcReader(stack_settings.kafka_bootstrap, [topic])
    with connect() as conn:
        victim = orphan_by_reseat(PlatformApp(conn), job_attempts=0).victim_id
    assert victim is not None
    seen = reader.collect(lambda m: str(victim) in (m.key or b"").decode(), 3)
    reader.close()
    signals = [m for m in seen if m.value and (b"capacity.hold.created" in m.value or b"allocations_no" in m.value)]
    assert len(signals) >= 2
    row = {"id": str(uuid.uuid4()), "customer_email": EMAIL, "notes": f"call her on {PHONE}"}
    guest = {"before": None, "after": row, "op": "c"}
    letters: list[tuple[RawMessage, str, str]] = [(m, "permission denied for table allocations", "") for m in signals]
    letters.append((RawMessage(topic, 0, 1, b'{"id": 1}', b"{still broken"), "not JSON: unexpected end", "broken"))
    letters.append(
        (
            RawMessage(f"{prefix}.public.bookings", 0, 2, None, json.dumps(guest).encode()),
            f"bad row of {EMAIL}",
            "guest",
        )
    )
    producer = Producer({"bootstrap.servers": stack_settings.kafka_bootstrap})
    for message, reason, _ in letters:
        producer.produce(
            dlq, key=message.key, value=message.value, headers=headers(message.topic, message.offset, reason)
        )
    producer.flush(10)
    ids = {name: f"0@{n}" for n, (_, _, name) in enumerate(letters) if name}
    chosen = [f"0@{n}" for n in range(len(signals))]
    common = ["--dlq-topic", dlq]

    listed = cli("dlq", "list", *common, "--json")
    assert listed.exit_code == 0, listed.output
    everything = json.loads(listed.output)
    assert [letter["id"] for letter in everything] == [f"0@{n}" for n in range(len(letters))]
    assert EMAIL not in listed.output
    by_reason = json.loads(cli("dlq", "list", *common, "--reason", "NOT json", "--json").output)
    assert [letter["id"] for letter in by_reason] == [ids["broken"]]
    by_source = json.loads(cli("dlq", "list", *common, "--source-topic", f"{prefix}.public.bookings", "--json").output)
    assert [letter["id"] for letter in by_source] == [ids["guest"]]
    assert cli("dlq", "list", *common, "--since", "2999-01-01T00:00", "--json").output.strip() == "[]"

    shown = cli("dlq", "show", ids["guest"], *common, "--json")
    assert shown.exit_code == 0, shown.output
    assert EMAIL not in shown.output
    assert PHONE not in shown.output
    doc = json.loads(shown.output)
    assert doc["value"]["after"]["customer_email"] == "<redacted>"
    assert doc["value"]["after"]["id"] == row["id"], "what is not guest data is shown as it is"
    assert doc["headers"]["allocguard.source.topic"] == f"{prefix}.public.bookings"
    assert cli("dlq", "show", "0@999", *common).exit_code == 1

    parked = cli("dlq", "park", ids["broken"], *common, "--note", "known bad producer")
    assert parked.exit_code == 0, parked.output
    assert "parked" in parked.output
    assert "already parked" in cli("dlq", "park", ids["broken"], *common).output
    only_parked = json.loads(cli("dlq", "list", *common, "--parked", "--json").output)
    assert [(letter["id"], letter["parked"]["note"]) for letter in only_parked] == [
        (ids["broken"], "known bad producer")
    ]
    assert ids["broken"] not in [
        letter["id"] for letter in json.loads(cli("dlq", "list", *common, "--not-parked", "--json").output)
    ]

    group = ["--group-id", f"triage-{unique}", "--mode", "auto"]
    replayed = cli("dlq", "replay", *common, *group, "--only", ",".join([*chosen, ids["broken"]]), "--json")
    assert replayed.exit_code == 0, replayed.output
    outcome = json.loads(replayed.output)
    assert outcome["read"] == len(chosen) + 1
    assert outcome["outcomes"].get("parked") == 1, outcome
    assert confirmed(connect, victim), "the chosen dead letters were re-driven: the victim is seated"

    # --only moved nothing: a plain replay of the same group still reads every dead letter; the parked one skipped
    everything_again = cli("dlq", "replay", *common, *group, "--json")
    assert everything_again.exit_code == 1, everything_again.output  # the guest's row does not decode
    again = json.loads(everything_again.output)
    assert again["read"] == len(letters)
    assert again["outcomes"].get("parked") == 1, again
    assert [bad.split(":")[0] for bad in again["still_bad"]] == [f"{prefix}.public.bookings[0]@2"]
    assert EMAIL not in everything_again.output

    assert "unparked" in cli("dlq", "unpark", ids["broken"], *common).output
    broken = cli("dlq", "replay", *common, *group, "--only", ids["broken"], "--json")
    assert broken.exit_code == 1, broken.output
    assert len(json.loads(broken.output)["still_bad"]) == 1
