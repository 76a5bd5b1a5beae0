"""What an SRE sees: the seed incident remediated by ``allocguard run``, traced over OTLP into the stack's Jaeger.

Jaeger's query API must hold the trace by the id allocguard stored, with the span tree
process → detect / incident → plan → prune (DB spans) → retry attempt → outcome, its attributes and its link to
the hold's trace. The trace UI is Zipkin's Lens (a Jaeger built from the Go module proxy has no UI assets): Jaeger
forwards the spans through Kafka, and a real headless Chromium must render the trace's page with those span names
(its screenshot is kept in ``artifacts/trace-ui/``). Jaeger is built once from the Go module proxy (cached by
go.mod's hash), Zipkin comes from Maven Central.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from consumer.local.settings import StackSettings
from consumer.local.simulator import SEED_VICTIM, PlatformApp, seed_incident
from consumer.local.stack import LocalStack, StackError
from consumer.local.traces import JaegerSpan, JaegerTrace, wait_for_trace, wait_for_zipkin
from tests.support.process import RuntimeProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "trace-ui"
CONSUMER_SPAN = "process platform.public.observability_events"
#: the spans an SRE follows, in the order of the incident
TREE = (
    CONSUMER_SPAN,
    "allocguard.detect",
    "allocguard.incident",
    "allocguard.plan",
    "allocguard.prune",
    "allocguard.retry.attempt",
    "allocguard.outcome",
)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


@pytest.fixture(scope="module")
def jaeger(stack_settings: StackSettings) -> LocalStack:
    local = LocalStack(stack_settings, log=lambda line: print(f"[stack] {line}"))
    try:
        local.start_component("tracing")
    except StackError as exc:
        pytest.fail(f"Jaeger and the trace UI could not start: {exc}", pytrace=False)
    return local


@pytest.fixture(scope="module")
def chromium(jaeger: LocalStack) -> str:
    try:
        return jaeger.chromium()  # installed with apt when missing, like the stack's other parts
    except StackError as exc:
        pytest.fail(str(exc), pytrace=False)


def render(chromium: str, url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """One headless Chromium run; virtual time lets the single-page app fetch the trace and render it."""
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=20000", *extra, url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def only(spans: list[JaegerSpan], what: str) -> JaegerSpan:
    assert len(spans) == 1, f"one {what}, got {[s.name for s in spans]}"
    return spans[0]


def test_seed_incident_in_jaeger(
    jaeger: LocalStack, chromium: str, connect: Callable[[], Conn], tmp_path: Path, unique: str
) -> None:
    settings = jaeger.settings
    runtime = RuntimeProcess(
        tmp_path / "run.log",
        f"e2e-jaeger-{unique}",
        env={**jaeger.trace_env(), "OTEL_SERVICE_NAME": f"allocguard-{unique}", "OTEL_BSP_SCHEDULE_DELAY": "100"},
    )
    try:
        runtime.wait_ready()
        with connect() as conn:
            seed_incident(PlatformApp(conn))

        def victim_confirmed() -> bool:
            with connect() as conn:
                row = conn.execute("SELECT status::text FROM bookings WHERE id = %s", (SEED_VICTIM,)).fetchone()
                return row == ("confirmed",)

        wait_for("the seed victim confirmed", victim_confirmed, timeout=60)
    finally:
        code, _ = runtime.stop()  # SIGTERM flushes the span batches
    assert code == 0

    with connect() as conn:
        stored = conn.execute(
            "SELECT trace_id, span_id FROM allocguard.incidents WHERE booking_id = %s AND trace_id IS NOT NULL"
            " ORDER BY first_event_at LIMIT 1",
            (SEED_VICTIM,),
        ).fetchone()
        hold = conn.execute(
            "SELECT h.trace_id, h.span_id FROM allocguard.hold_observations h"
            " JOIN allocguard.incidents i ON i.hold_id = h.hold_id WHERE i.booking_id = %s",
            (SEED_VICTIM,),
        ).fetchone()
    assert stored is not None, "the incident row carries its trace id"
    trace_id, incident_span_id = stored

    # ---- the query API: the trace, by the id the database holds -------------------------------------------
    trace = wait_for_trace(settings.jaeger_ui_url, trace_id, needs=TREE, timeout=30)
    assert trace is not None, f"Jaeger has no trace {trace_id}"
    assert set(TREE) <= trace.names(), f"missing spans: {set(TREE) - trace.names()}"
    assert {s.service for s in trace.spans} == {f"allocguard-{unique}"}
    tree_shape(trace, incident_span_id, hold)

    # ---- the UI: the same spans, and the browser renders them ----------------------------------------------
    names = wait_for_zipkin(settings.zipkin_url, trace_id, needs=TREE, timeout=30)
    assert names is not None, f"the trace UI has no trace {trace_id}"
    assert sorted(names) == sorted(s.name.lower() for s in trace.spans), "the UI holds the same spans as Jaeger"
    link = jaeger.trace_env()["ALLOCGUARD_TRACE_UI_URL"].format(trace_id=trace_id)
    # the span list is virtualised: a window tall enough renders every row ("service: name"), plus the title
    tall = f"--window-size=1600,{400 + 30 * len(trace.spans)}"
    dom = render(chromium, link, tmp_path / "profile-dom", "--dump-dom", tall)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rows = re.findall(rf"allocguard-{unique}: ([a-z0-9_., …]+)<", dom.stdout)
    assert rows, "the rendered trace page shows no span of the service"
    assert rows[0] == CONSUMER_SPAN, "the page is titled by the root span"
    assert sorted(rows[1:]) == sorted(s.name.lower() for s in trace.spans), "one row per span, no more, no less"
    for name in TREE:
        assert name in rows[1:], f"the rendered trace page does not show {name!r}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "seed-incident.png"
    shot.unlink(missing_ok=True)
    png = render(chromium, link, tmp_path / "profile-shot", "--screenshot=" + str(shot), "--window-size=1600,1000")
    assert png.returncode == 0, png.stderr[-2000:]
    wait_for("the screenshot written", lambda: shot.exists() and shot.stat().st_size > 10_000, timeout=10)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the page of an unknown trace does not show the incident (the checks above can fail)
    unknown = jaeger.trace_env()["ALLOCGUARD_TRACE_UI_URL"].format(trace_id="0" * 31 + "1")
    missing = render(chromium, unknown, tmp_path / "profile-missing", "--dump-dom")
    assert missing.returncode == 0, missing.stderr[-2000:]
    assert "allocguard.incident" not in missing.stdout


def tree_shape(trace: JaegerTrace, incident_span_id: str, hold: tuple[str, str] | None) -> None:
    """process → detect and incident; incident → plan, prune (→ DB spans), attempt(s), outcome."""
    incident = next((s for s in trace.named("allocguard.incident") if s.span_id == incident_span_id), None)
    assert incident is not None, "the incident span stored in allocguard.incidents is in Jaeger"
    process = next(s for s in trace.spans if s.span_id == incident.parent_id)
    assert process.name == CONSUMER_SPAN
    assert process.kind == "consumer"
    assert process.parent_id is None, "the consumer span is the trace's root"
    assert process.tags["messaging.system"] == "kafka"
    assert process.tags["messaging.destination.name"] == "platform.public.observability_events"
    assert str(SEED_VICTIM) in str(process.tags["messaging.kafka.message.key"])
    detect = only([s for s in trace.children(process) if s.name == "allocguard.detect"], "detect under the message")

    assert incident.tags["allocguard.booking.id"] == str(SEED_VICTIM)
    assert incident.tags["allocguard.outcome.status"] in ("resolved", "not_needed")
    below = {s.name for s in trace.children(incident)}
    assert {"allocguard.plan", "allocguard.prune", "allocguard.outcome"} <= below, below
    plan = only([s for s in trace.children(incident) if s.name == "allocguard.plan"], "plan")
    assert plan.tags["allocguard.plan.decision"] == "prune_and_retry"
    # the evidence is read in the incident's record statement, under detect, named by its operation and the tables
    # it reads (not "SELECT platform"); the plan says where its snapshot came from
    assert plan.tags["allocguard.plan.snapshot"] == "with_incident_record"
    reads = {s.name for s in trace.children(detect) if s.kind == "client"}
    assert any(name.startswith("INSERT allocguard.incidents, allocations") for name in reads), reads
    assert plan.tags["allocguard.evidence.orphan"] == 1
    prune = only([s for s in trace.children(incident) if s.name == "allocguard.prune"], "prune")
    assert prune.tags["allocguard.prune.status"] == "pruned"
    statements = trace.children(prune)
    assert statements, "the executor's statements are DB spans under the prune"
    assert all(s.kind == "client" and s.tags["db.system.name"] == "postgresql" for s in statements)
    texts = [str(s.tags["db.query.text"]) for s in statements]
    assert any(t.startswith("DELETE FROM public.allocations WHERE id = ANY(%s)") for t in texts), texts
    attempts = trace.named("allocguard.retry.attempt")
    assert attempts, "one span per retry attempt"
    assert attempts[0].tags["allocguard.attempt.outcome"] in ("assigned", "not_needed")
    outcome = only([s for s in trace.children(incident) if s.name == "allocguard.outcome"], "outcome")
    assert outcome.parent_id == incident.span_id
    if hold is not None:
        assert tuple(hold) in incident.links, "the incident links to the hold announcement's trace"
