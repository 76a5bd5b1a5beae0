"""The ``allocguard`` command line."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.error
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import click
import psycopg
from confluent_kafka import Consumer

from consumer.config import ConfigurationError
from consumer.local.demo import write_demo_lifecycle
from consumer.local.settings import StackSettings
from consumer.local.simulator import SCENARIOS, PlatformApp
from consumer.local.stack import LocalStack, StackError, captured_topics
from consumer.operations import migrations as db
from consumer.redact import redact
from consumer.report import plan_as_json, plan_as_text
from consumer.runtime.health import _UNREACHABLE as _KAFKA_UNREACHABLE
from consumer.runtime.offsets import end_positions, start_positions
from handlers import store
from handlers.detect import DetectionRules, replay
from handlers.evidence import make_plan
from handlers.pipeline import RemediationSettings, Remediator, incident_for
from handlers.retry import AssignStrategy, HttpAssign, SqlAssign
from schemas import ChangeEvent, Heartbeat, Tombstone, decode_message
from schemas.errors import CdcDecodeError
from schemas.records import Mode
from schemas.rows import ObservabilityEvent


def _settings() -> StackSettings:
    return StackSettings()


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from consumer.version import version_line

        click.echo(version_line())
        ctx.exit()


@click.group()
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="The version, and whether the byte test is native.",
)
@click.pass_context
def main(ctx: click.Context) -> None:
    """allocguard: detect allocations_no_overlap failures from Debezium CDC and remediate them.

    Exit codes of the one-shot commands: 0 ok, 1 work found or left (orphans remain, a plan refused, dead letters
    still bad), 2 usage or configuration, 3 a dependency unavailable (database, brokers, Kafka Connect, the app),
    4 another failure. ``run`` waits for an unavailable dependency instead of exiting."""
    import logging

    if ctx.invoked_subcommand != "run":
        # librdkafka's connection lines go through Python logging; a one-shot command reports the outcome once
        logging.getLogger("allocguard.kafka").setLevel(logging.CRITICAL)
    os.environ.setdefault("PGCONNECT_TIMEOUT", "10")  # a database that accepts and never answers is unavailable


# ---- stack ---------------------------------------------------------------------------------------


@main.group()
def stack() -> None:
    """The local PostgreSQL → Debezium → Kafka stack (native processes, no Docker)."""


@stack.command("up")
@click.option(
    "--tracing/--no-tracing",
    default=None,
    help="Also run Jaeger (trace UI, OTLP in): built once from the Go module proxy. Default: ALLOCGUARD_TRACING.",
)
def stack_up(tracing: bool | None) -> None:
    """Start (or confirm) every part of the stack and wait until the connector streams."""
    local = LocalStack(_settings(), log=lambda line: click.echo(f"  {line}", err=True))
    try:
        timings = local.up(tracing=tracing)
    except StackError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("stack is up (" + ", ".join(f"{k} {v}s" for k, v in timings.items()) + ")")
    for component in local.status():
        click.echo(f"  {component.name:<9} {component.endpoint}  {component.detail}")
    click.echo('environment for other shells:  eval "$(allocguard stack env)"')


@stack.command("down")
def stack_down() -> None:
    """Stop only the processes this stack started."""
    stopped = LocalStack(_settings(), log=lambda line: click.echo(f"  {line}", err=True)).down()
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@stack.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stack_status(as_json: bool) -> None:
    """Show what is running; exit 1 unless everything is."""
    components = LocalStack(_settings()).status()
    if as_json:
        click.echo(json.dumps([c.__dict__ for c in components], indent=2))
    else:
        for c in components:
            state = "running" if c.running else "stopped"
            click.echo(f"{c.name:<9} {state:<8} pid={c.pid or '-':<8} {c.endpoint}  {c.detail}")
    if not all(c.running for c in components):
        sys.exit(1)


@stack.command("env")
def stack_env() -> None:
    """Print export lines for the stack's endpoints (eval them in a shell)."""
    for line in LocalStack(_settings()).env_lines():
        click.echo(line)


@main.group()
def connector() -> None:
    """The Debezium connector of the platform database."""


@connector.command("register")
@click.option("--connect-url", envvar="ALLOCGUARD_CONNECT_URL", help="Kafka Connect REST URL (ALLOCGUARD_CONNECT_URL).")
@click.option(
    "--kafka-bootstrap", envvar="ALLOCGUARD_KAFKA_BOOTSTRAP", help="For the heartbeat (ALLOCGUARD_KAFKA_BOOTSTRAP)."
)
@click.option("--name", envvar="ALLOCGUARD_CONNECTOR_NAME", default="platform-cdc", show_default=True)
@click.option("--db-host", help="database.hostname (the file's value if not given).")
@click.option("--db-port", type=int, help="database.port.")
@click.option("--db-name", help="database.dbname.")
@click.option("--db-user", help="database.user.")
@click.option(
    "--db-password",
    envvar="ALLOCGUARD_CDC_PASSWORD",
    help="database.password: a Connect config-provider reference (the file's, by default) or the password "
    "(ALLOCGUARD_CDC_PASSWORD).",
)
@click.option("--topic-prefix", help="topic.prefix, for a second consumer of one database (with --slot-name).")
@click.option("--slot-name", help="slot.name.")
@click.option("--dry-run", is_flag=True, help="Print the config that would be posted; connect to nothing.")
@click.option("--yes", is_flag=True, help="Change an existing connector whose config differs (the diff is printed).")
def connector_register(
    connect_url: str | None,
    kafka_bootstrap: str | None,
    name: str,
    db_host: str | None,
    db_port: int | None,
    db_name: str | None,
    db_user: str | None,
    db_password: str | None,
    topic_prefix: str | None,
    slot_name: str | None,
    dry_run: bool,
    yes: bool,
) -> None:
    """Post deploy/debezium's connector as written (per-site values substituted), then wait until it streams."""
    from consumer.operations.connector import (
        ConnectorError,
        ConnectorUnreachable,
        config_diff,
        current_config,
        production_config,
        register,
    )

    config = production_config(
        db_host=db_host,
        db_port=db_port,
        db_name=db_name,
        db_user=db_user,
        db_password=db_password,
        topic_prefix=topic_prefix,
        slot_name=slot_name,
    )
    if dry_run:
        click.echo(json.dumps(config, indent=2))
        return
    missing = [
        f"{variable} (or {flag})"
        for value, variable, flag in (
            (connect_url, "ALLOCGUARD_CONNECT_URL", "--connect-url"),
            (kafka_bootstrap, "ALLOCGUARD_KAFKA_BOOTSTRAP", "--kafka-bootstrap"),
        )
        if not value
    ]
    if missing:
        for line in missing:
            click.echo(f"configuration error: missing {line}", err=True)
        sys.exit(2)
    assert connect_url is not None
    assert kafka_bootstrap is not None
    try:
        existing = current_config(connect_url, name)
        changes = config_diff(existing, config) if existing is not None else []
        if changes:
            click.echo(f"connector {name} exists; its config would change:")
            for line in changes:
                click.echo(f"  {line}")
            if not yes:
                click.echo("nothing changed: run again with --yes to apply", err=True)
                sys.exit(1)
        register(connect_url, kafka_bootstrap, name, config)
    except ConnectorUnreachable:
        raise  # exit 3: entry() reports it
    except ConnectorError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"connector {name} is streaming {config['database.dbname']} to topics {config['topic.prefix']}.public.*")


# ---- db ------------------------------------------------------------------------------------------


@main.group(name="db")
def db_group() -> None:
    """allocguard's own schema (and, locally, the platform's reference model)."""


@db_group.command("init")
@click.option("--dsn", envvar="ALLOCGUARD_ADMIN_DSN", help="The platform database as its owner (ALLOCGUARD_ADMIN_DSN).")
@click.option("--with-reference-schema", is_flag=True, help="Also load the platform's reference model (local use).")
@click.option("--with-cdc", is_flag=True, help="Also create the CDC role and publication Debezium reads.")
@click.option(
    "--login-role",
    help="Also create (or keep) allocguard's login role, a member of allocguard_remediator only; its password "
    "from ALLOCGUARD_LOGIN_PASSWORD when set.",
)
def db_init(dsn: str | None, with_reference_schema: bool, with_cdc: bool, login_role: str | None) -> None:
    """Apply allocguard's versioned migrations, roles and policies (idempotent; run as the tables' owner)."""
    import os

    if not dsn:  # the owner's login is never guessed: this changes a production database
        _missing(["missing ALLOCGUARD_ADMIN_DSN (or --dsn): the platform database as its tables' owner"])
    assert dsn is not None
    target = dsn
    try:
        for line in db.init_database(
            target,
            with_reference_schema=with_reference_schema,
            with_cdc=with_cdc,
            login_role=login_role,
            login_password=os.environ.get("ALLOCGUARD_LOGIN_PASSWORD"),
        ):
            click.echo(line)
    except psycopg.OperationalError:
        raise  # out of reach (exit 3) or a login refused (exit 2): entry() tells them apart
    except (psycopg.Error, db.MigrationError) as exc:
        raise click.ClickException(str(exc)) from exc


# ---- watch ---------------------------------------------------------------------------------------


def _describe(record: Any) -> str:
    if isinstance(record, Heartbeat):
        return f"heartbeat ts_ms={record.ts_ms}"
    if isinstance(record, Tombstone):
        return f"tombstone key={json.dumps(record.key)}"
    assert isinstance(record, ChangeEvent)
    row = record.row
    body = row.model_dump(mode="json", exclude_none=True) if row is not None else {}
    text = json.dumps(body, default=str)
    return f"op={record.op.value} {record.source.qualified_table} {text[:220]}"


@main.command()
@click.option("--from-beginning", is_flag=True, help="Read the topics from their start instead of from now.")
@click.option("--demo", is_flag=True, help="Write a small booking lifecycle into the platform DB and show its CDC.")
@click.option("--max-events", type=int, default=0, help="Stop after this many records (0: no limit).")
@click.option("--idle-exit", type=float, default=0.0, help="Stop after this many seconds without a record.")
def watch(from_beginning: bool, demo: bool, max_events: int, idle_exit: float) -> None:
    """Print the platform's CDC events as allocguard decodes them (typed, validated)."""
    settings = _settings()
    topics = captured_topics(settings.topic_prefix)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"allocguard-watch-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        existing = set(consumer.list_topics(timeout=10).topics)
        present = [topic for topic in topics if topic in existing]
        assignment = (start_positions if from_beginning else end_positions)(consumer, present) if present else []
        if not assignment:
            raise click.ClickException(f"no CDC topics with prefix {settings.topic_prefix!r}; is the stack up?")
        consumer.assign(assignment)
        click.echo(f"watching {len(topics)} topics of prefix {settings.topic_prefix!r}", err=True)
        if demo:
            booking_id = write_demo_lifecycle(settings.platform_dsn)
            click.echo(f"demo: wrote a booking lifecycle for booking {booking_id}", err=True)
            idle_exit = idle_exit or 5.0
        seen = 0
        last = time.monotonic()
        while not stop:
            message = consumer.poll(0.2)
            if message is None:
                if idle_exit and seen and time.monotonic() - last > idle_exit:
                    break
                continue
            if message.error() is not None:
                click.echo(f"kafka error: {message.error()}", err=True)
                continue
            last = time.monotonic()
            seen += 1
            where = f"{message.topic()}[{message.partition()}]@{message.offset()}"
            try:
                record = decode_message(
                    message.topic() or "", message.partition(), message.offset(), message.key(), message.value()
                )
            except CdcDecodeError as exc:
                click.echo(f"{where} UNDECODABLE {exc.field}: {exc.reason}")
            else:
                click.echo(f"{where} {_describe(record)}")
            if max_events and seen >= max_events:
                break
        click.echo(f"{seen} record(s) decoded", err=True)
    finally:
        consumer.close()


# ---- remediation -------------------------------------------------------------------------------


def _required_dsn(dsn: str | None) -> str:
    """A production command's database login: given, or the command stops (exit 2) — never a guess."""
    if not dsn:
        _missing(["missing ALLOCGUARD_PG_DSN (or --dsn): allocguard's database login"])
    assert dsn is not None
    return dsn


def _missing(lines: list[str]) -> None:
    for line in lines:
        click.echo(f"configuration error: {line}", err=True)
    sys.exit(2)


def _connect_factory(dsn: str) -> Callable[[], psycopg.Connection[Any]]:
    options = _runtime_settings().pg_connect_kwargs()  # ALLOCGUARD_PG_PREPARE_THRESHOLD (a pooler)

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(dsn, autocommit=True, **options)

    return connect


def _booking_events(conn: psycopg.Connection[Any], booking: uuid.UUID) -> list[ObservabilityEvent]:
    return [ObservabilityEvent.model_validate(row) for row in store.failure_events(conn, booking)]


@main.command()
@click.argument("scenario", type=click.Choice(sorted(SCENARIOS)))
@click.option(
    "--dsn", envvar="ALLOCGUARD_PLATFORM_DSN", help="The platform's back-end role (default: the local stack's)."
)
def simulate(scenario: str, dsn: str | None) -> None:
    """Play a platform scenario into the reference schema (the seed incident, or a way orphans arise)."""
    with psycopg.connect(dsn or _settings().platform_dsn, autocommit=True) as conn:
        result = SCENARIOS[scenario](PlatformApp(conn))
    click.echo(f"scenario {result.name}: restaurant {result.restaurant_id}")
    if result.victim_id:
        click.echo(f"  victim booking {result.victim_id}")
    for name, value in result.ids.items():
        click.echo(f"  {name}: {value}")
    for note in result.notes:
        click.echo(f"  - {note}")


#: diagnose and remediate judge young rows as the running consumer does (ALLOCGUARD_GRACE_S)
_grace_option = click.option(
    "--grace-s",
    "--grace",
    "grace_s",
    type=float,
    default=120.0,
    show_default=True,
    envvar="ALLOCGUARD_GRACE_S",
    help="Seconds an allocation must be untouched to be pruned (ALLOCGUARD_GRACE_S), as the running consumer.",
)


@main.command()
@click.argument("booking_id", type=click.UUID)
@click.option("--json", "as_json", is_flag=True, help="Print the evidence as JSON.")
@_grace_option
@click.option("--dsn", envvar="ALLOCGUARD_PG_DSN", help="allocguard's database login (ALLOCGUARD_PG_DSN).")
def diagnose(booking_id: uuid.UUID, as_json: bool, grace_s: float, dsn: str | None) -> None:
    """Read-only: why did this booking's auto-assign fail, and which blocking allocations are orphans?"""
    rules = DetectionRules()
    with psycopg.connect(_required_dsn(dsn), autocommit=True) as conn:
        failures = replay(_booking_events(conn, booking_id), rules)
        if not failures:
            raise click.ClickException(f"no allocations_no_overlap failure recorded for booking {booking_id}")
        failure, hold = failures[-1]
        incident = incident_for(conn, failure, hold)
        if incident is None:
            raise click.ClickException(f"booking {booking_id} has no window to diagnose")
        plan = make_plan(store.load_snapshot(conn, incident), timedelta(seconds=grace_s))
        remediations = store.remediation_rows(conn, booking_id)
        incidents = store.incident_rows(conn, booking_id)
    from consumer.config import RuntimeSettings

    links = RuntimeSettings()
    for record in incidents:
        record["trace_url"] = links.trace_link(record.get("trace_id"))
    if as_json:
        doc = plan_as_json(plan, remediations=remediations, incidents=incidents)
        doc["failure_events"] = len(failures)
        click.echo(json.dumps(doc, indent=2, default=str))
    else:
        click.echo(f"{len(failures)} failure event(s) on record; the latest one is diagnosed")
        click.echo(plan_as_text(plan, remediations=remediations, incidents=incidents))


@main.command()
@click.argument("booking_id", type=click.UUID)
@click.option("--mode", type=click.Choice([m.value for m in Mode]), default=Mode.DRY_RUN.value, show_default=True)
@click.option("--strategy", type=click.Choice(["sql", "http"]), default="sql", show_default=True)
@click.option("--endpoint", help="The app's assign endpoint, for --strategy http.")
@_grace_option
@click.option("--artifacts-dir", type=click.Path(path_type=Path), default=Path("artifacts"), show_default=True)
@click.option("--dsn", envvar="ALLOCGUARD_PG_DSN", help="allocguard's database login (ALLOCGUARD_PG_DSN).")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def remediate(
    booking_id: uuid.UUID,
    mode: str,
    strategy: str,
    endpoint: str | None,
    grace_s: float,
    artifacts_dir: Path,
    dsn: str | None,
    as_json: bool,
) -> None:
    """Run the handler path over this booking's recorded events: detect, prove, prune, retry auto-assign.
    Exit 1 when the booking ends in manual review."""
    echo = (lambda line: None) if as_json else click.echo
    connect = _connect_factory(_required_dsn(dsn))
    if strategy == "http":
        if not endpoint:
            raise click.UsageError("--strategy http needs --endpoint")
        from consumer.config import RuntimeSettings
        from consumer.telemetry import traced_send

        headers = RuntimeSettings().assign_header_values()  # ALLOCGUARD_ASSIGN_HEADERS (a secret)
        assigner: AssignStrategy = HttpAssign(endpoint, connect, headers=headers, send=traced_send)
    else:
        assigner = SqlAssign(connect)
    settings = RemediationSettings(
        mode=Mode(mode),
        grace=timedelta(seconds=grace_s),
        artifacts_dir=artifacts_dir,
        policy=_runtime_settings().policy(),
        requested_by=_operator(),  # a plan this makes waits for another person's approval
    )
    remediator = Remediator(
        connect,
        assigner,
        settings,
        on_attempt=lambda a: echo(f"  attempt {a.number} (waited {a.waited_s:.2f}s): {a.outcome}"),
    )
    with connect() as conn:
        events = _booking_events(conn, booking_id)
    last = None
    for event in events:
        result = remediator.observe(event)
        if result is not None:
            last = result
            echo(f"{event.source}/{event.event_type}: {result.status} — {result.reason}")
            for prune in result.prunes:
                echo(f"  prune: {prune.status} {[str(i) for i in prune.pruned_ids]} {prune.skipped or ''}")
                for path in prune.artifacts:
                    echo(f"  artifact: {path}")
    if last is None:
        raise click.ClickException(f"no allocations_no_overlap failure recorded for booking {booking_id}")
    if as_json:
        click.echo(json.dumps(_result_json(last), indent=2))
    if last.status == "manual_review":
        sys.exit(1)


@main.command()
def demo() -> None:
    """Live: allocguard run (auto mode) remediates the seed incident as it happens on the local stack."""
    from consumer.local.demo import live_seed_demo

    local = LocalStack(_settings())
    traced = local.tracing_running() and not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    child_env = {**local.client_env(), **(local.trace_env() if traced else {})}
    if not live_seed_demo(_settings().platform_dsn, click.echo, extra_env=child_env):
        raise click.ClickException("the seed incident was not remediated")
    click.echo("")
    click.echo("the evidence, as diagnose prints it now:")
    ctx = click.get_current_context()
    victim = uuid.UUID("d99ceb12-193a-4e80-840e-35cb236d9452")
    if traced:
        os.environ.update(local.trace_env())  # diagnose prints the link from ALLOCGUARD_TRACE_UI_URL
    ctx.invoke(diagnose, booking_id=victim, as_json=False, grace_s=120.0, dsn=local.settings.pg_dsn)
    _show_trace(victim)


def _show_trace(booking_id: uuid.UUID) -> None:
    """With the stack's tracing running: wait until Jaeger and the UI hold the incident's trace, print the link."""
    from consumer.config import RuntimeSettings
    from consumer.local.traces import wait_for_trace, wait_for_zipkin

    settings = _settings()
    local = LocalStack(settings)
    if not local.tracing_running():
        click.echo("(no trace UI: `allocguard stack up --tracing` adds Jaeger and a trace UI; see make demo-traces)")
        return
    with psycopg.connect(settings.platform_dsn, autocommit=True) as conn:
        found = store.first_trace_id(conn, booking_id)
    if found is None:
        raise click.ClickException("the incident has no trace id: was allocguard run traced (OTEL_* from stack env)?")
    trace_id = found
    needs = ("allocguard.incident", "allocguard.outcome")
    trace = wait_for_trace(settings.jaeger_ui_url, trace_id, needs=needs)
    if trace is None:
        raise click.ClickException(f"Jaeger at {settings.jaeger_ui_url} has no trace {trace_id}")
    if wait_for_zipkin(settings.zipkin_url, trace_id, needs=needs) is None:
        raise click.ClickException(f"the trace UI at {settings.zipkin_url} has no trace {trace_id}")
    link = RuntimeSettings().trace_link(trace_id) or local.trace_env()["ALLOCGUARD_TRACE_UI_URL"].format(
        trace_id=trace_id
    )
    api = f"{settings.jaeger_ui_url}/api/traces/{trace_id}"
    click.echo(f"\nJaeger holds the incident's trace ({len(trace.spans)} spans): {api}")
    click.echo(f"open it in the trace UI: {link}")


# ---- operations: check, dead letters --------------------------------------------------------------


def _runtime_options(command: Callable[..., None]) -> Callable[..., None]:
    """Flags shared by the commands that read Kafka and the database; a flag wins over ``ALLOCGUARD_*`` in the env,
    which wins over ``.env``."""
    options = [
        click.option(
            "--dsn", help="allocguard's database login (ALLOCGUARD_PG_DSN); a member of allocguard_remediator."
        ),
        click.option("--kafka-bootstrap", help="The Kafka brokers, host:port,… (ALLOCGUARD_KAFKA_BOOTSTRAP)."),
        click.option("--topic-prefix", help="Debezium's topic.prefix (ALLOCGUARD_TOPIC_PREFIX)."),
        click.option(
            "--tables", help="Consumed tables, comma-separated, e.g. public.observability_events (ALLOCGUARD_TABLES)."
        ),
        click.option("--group-id", help="Kafka consumer group (ALLOCGUARD_GROUP_ID)."),
        click.option("--connect-url", help="Kafka Connect REST URL, for the connector check (ALLOCGUARD_CONNECT_URL)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _unparsable(exc: Exception) -> str:
    """pydantic-settings' "error parsing value for field "x"" as the variable's name and where its JSON breaks."""
    import re

    found = re.search(r'field "([a-z_]+)"', str(exc))
    name = f"ALLOCGUARD_{found.group(1).upper()}" if found else "a setting"
    cause = exc.__cause__
    return f"{name} is not valid JSON: {cause}" if cause is not None else f"{name}: {exc}"


def _runtime_settings(needs: tuple[str, ...] = (), **flags: Any) -> Any:
    """Settings from flags over env over ``.env``, validated: a mistake is one clear line per setting, exit 2 — and
    so is a setting the command ``needs`` ("database", "kafka") that is unset, before any connection."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from consumer.config import RuntimeSettings

    flags["pg_dsn"] = flags.pop("dsn", None)
    if flags.get("tables") is not None:
        flags["tables"] = [t.strip() for t in str(flags["tables"]).split(",") if t.strip()]
    try:
        settings = RuntimeSettings(**{k: v for k, v in flags.items() if v is not None})
    except SettingsError as exc:  # a value the settings source could not even parse (JSON of a dict setting)
        click.echo(f"configuration error: {_unparsable(exc)}", err=True)
        sys.exit(2)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            name = ".".join(str(part) for part in error["loc"])
            where = f"ALLOCGUARD_{name.upper()}" if name else "settings"
            shown = (
                ""
                if name in ("pg_dsn", "kafka_config", "assign_endpoint") or not name
                else (f" (got {redact(str(error.get('input')))[:80]!r})")
            )
            click.echo(f"configuration error: {where}: {error['msg']}{shown}", err=True)
        sys.exit(2)
    missing = settings.missing(kafka="kafka" in needs, database="database" in needs)
    if missing:
        _missing(missing)
    return settings


@main.command()
@_runtime_options
@click.option("--json", "as_json", is_flag=True, help="Print the items as JSON.")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
def check(
    dsn: str | None,
    kafka_bootstrap: str | None,
    topic_prefix: str | None,
    tables: str | None,
    group_id: str | None,
    connect_url: str | None,
    as_json: bool,
    strict: bool,
) -> None:
    """Preflight: can allocguard run here, as this role? OK / WARN / FAIL per item, with the fix.

    Exit 0 when nothing failed (warnings printed), 2 on a configuration failure, 3 when a dependency is out of
    reach, 1 on a warning with --strict."""
    from consumer.operations.check import run_checks

    settings = _runtime_settings(
        ("database", "kafka"),
        dsn=dsn,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        tables=tables,
        group_id=group_id,
        connect_url=connect_url,
    )
    report = run_checks(settings.check_target())
    click.echo(json.dumps(report.as_json(), indent=2) if as_json else report.text())
    code = report.exit_code
    if code == 3:
        names = sorted({str(item.unavailable) for item in report.failed if item.unavailable})
        click.echo(f"error: dependency unavailable: {', '.join(names)}", err=True)
    sys.exit(code if code >= 2 or strict else 0)


@main.group()
def dlq() -> None:
    """The dead-letter topic: messages allocguard could not decode, with the reason."""


@dlq.command("replay")
@_runtime_options
@click.option("--mode", type=click.Choice([m.value for m in Mode]), help="dry_run (default) or auto.")
@click.option("--dlq-topic", help="The dead-letter topic (default <prefix>.allocguard.dlq; ALLOCGUARD_DLQ_TOPIC).")
@click.option("--from-beginning", is_flag=True, help="Re-read the whole topic, not only what was not replayed yet.")
@click.option(
    "--only", help="Only these dead letters, by id as dlq list prints them (PARTITION@OFFSET, comma-separated)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def dlq_replay(
    dsn: str | None,
    kafka_bootstrap: str | None,
    topic_prefix: str | None,
    tables: str | None,
    group_id: str | None,
    connect_url: str | None,
    mode: str | None,
    dlq_topic: str | None,
    from_beginning: bool,
    only: str | None,
    as_json: bool,
) -> None:
    """Re-drive dead-lettered messages through the normal path (idempotent), up to the topic's end now; parked ones
    are skipped. Exit 1 when some still do not decode."""
    from consumer.operations.dlq import parse_id, replay_dlq

    chosen = [part.strip() for part in only.split(",") if part.strip()] if only else None
    for text in chosen or []:
        try:
            parse_id(text)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--only") from None

    settings = _runtime_settings(
        ("database", "kafka"),
        dsn=dsn,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        tables=tables,
        group_id=group_id,
        connect_url=connect_url,
        mode=mode,
        dlq_topic=dlq_topic,
    )
    summary = replay_dlq(
        settings, from_beginning=from_beginning, only=chosen, echo=(lambda line: None) if as_json else click.echo
    )
    if as_json:
        click.echo(
            json.dumps({"read": summary.read, "outcomes": dict(summary.outcomes), "still_bad": summary.still_bad})
        )
    if summary.still_bad:
        sys.exit(1)


def _dlq_settings(
    dsn: str | None,
    kafka_bootstrap: str | None,
    topic_prefix: str | None,
    dlq_topic: str | None,
    needs: tuple[str, ...] = ("database", "kafka"),
) -> Any:
    return _runtime_settings(
        needs, dsn=dsn, kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, dlq_topic=dlq_topic
    )


def _dlq_options(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(
        [
            click.option("--dsn", help="allocguard's database login (ALLOCGUARD_PG_DSN)."),
            click.option("--kafka-bootstrap", help="The Kafka brokers (ALLOCGUARD_KAFKA_BOOTSTRAP)."),
            click.option("--topic-prefix", help="Debezium's topic.prefix (ALLOCGUARD_TOPIC_PREFIX)."),
            click.option("--dlq-topic", help="The dead-letter topic (default <prefix>.allocguard.dlq)."),
            click.option("--json", "as_json", is_flag=True, help="Print JSON."),
        ]
    ):
        command = option(command)
    return command


@dlq.command("list")
@_dlq_options
@click.option("--reason", help="Only those whose reason or error class contains this (case-insensitive).")
@click.option("--source-topic", help="Only those that came from this topic.")
@click.option("--since", "--from", "since", help="ISO-8601 time (UTC if no offset): dead-lettered at or after.")
@click.option("--until", "--to", "until", help="ISO-8601 time: dead-lettered before.")
@click.option("--parked/--not-parked", "parked", default=None, help="Only parked, or only not parked.")
def dlq_list(
    dsn: str | None,
    kafka_bootstrap: str | None,
    topic_prefix: str | None,
    dlq_topic: str | None,
    as_json: bool,
    reason: str | None,
    source_topic: str | None,
    since: str | None,
    until: str | None,
    parked: bool | None,
) -> None:
    """The dead letters, one line each: id (PARTITION@OFFSET), when, where from, why; guest data redacted."""
    from dataclasses import asdict

    from consumer.operations.dlq import list_dead_letters

    window = _window(since, until, None)
    settings = _dlq_settings(dsn, kafka_bootstrap, topic_prefix, dlq_topic)
    letters = list_dead_letters(
        settings, reason=reason, source_topic=source_topic, since=window.since, until=window.until, parked=parked
    )
    if as_json:
        click.echo(json.dumps([asdict(letter) for letter in letters]))
        return
    for letter in letters:
        click.echo(letter.line())
    click.echo(f"{len(letters)} dead letter(s) in {settings.resolved_dlq()}")


@dlq.command("show")
@click.argument("letter_id")
@_dlq_options
def dlq_show(
    letter_id: str,
    dsn: str | None,
    kafka_bootstrap: str | None,
    topic_prefix: str | None,
    dlq_topic: str | None,
    as_json: bool,
) -> None:
    """One dead letter in full (headers, key, value), guest data redacted."""
    from consumer.operations.dlq import parse_id, show_dead_letter

    try:
        parse_id(letter_id)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="LETTER_ID") from None
    settings = _dlq_settings(dsn, kafka_bootstrap, topic_prefix, dlq_topic)
    try:
        doc = show_dead_letter(settings, letter_id)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(doc, indent=None if as_json else 2, default=str))


def _park_command(park: bool) -> Callable[..., None]:
    def command(
        letter_ids: tuple[str, ...],
        dsn: str | None,
        kafka_bootstrap: str | None,
        topic_prefix: str | None,
        dlq_topic: str | None,
        as_json: bool,
        note: str | None = None,
    ) -> None:
        from consumer.operations.dlq import parse_id, set_parked

        for text in letter_ids:
            try:
                parse_id(text)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="LETTER_ID") from None
        settings = _dlq_settings(dsn, kafka_bootstrap, topic_prefix, dlq_topic, needs=("database",))
        operator = _operator() or "unknown"
        changed = set_parked(settings, letter_ids, by=operator, note=note, park=park)
        if as_json:
            click.echo(json.dumps({"changed": changed, "unchanged": [i for i in letter_ids if i not in changed]}))
            return
        verb = "parked" if park else "unparked"
        for text in letter_ids:
            click.echo(f"{text}: {verb}" if text in changed else f"{text}: already {verb}")

    return command


dlq.command("park", help="Park dead letters a person has dealt with: dlq replay skips them (ALLOCGUARD_OPERATOR).")(
    click.argument("letter_ids", nargs=-1, required=True)(
        _dlq_options(click.option("--note", help="Why (kept with the decision).")(_park_command(True)))
    )
)
dlq.command("unpark", help="Let parked dead letters be replayed again.")(
    click.argument("letter_ids", nargs=-1, required=True)(_dlq_options(_park_command(False)))
)


# ---- pending plans: a person decides -------------------------------------------------------------


@main.command()
@click.option(
    "--host",
    envvar="ALLOCGUARD_SERVE_HOST",
    required=True,
    help="The address to listen on, always given: 0.0.0.0 in a pod (the chart sets it), the loopback address to "
    "keep the approval API on this machine.",
)
@click.option("--port", envvar="ALLOCGUARD_SERVE_PORT", type=click.IntRange(0, 65535), default=8090, show_default=True)
@click.option(
    "--identity-header",
    envvar="ALLOCGUARD_SERVE_IDENTITY_HEADER",
    help="Behind an authenticating proxy only: trust this header as the operator's name (e.g. X-Forwarded-User) "
    "instead of bearer tokens.",
)
@click.option("--artifacts-dir", type=click.Path(path_type=Path), default=Path("artifacts"), show_default=True)
@click.option("--dsn", help="allocguard's database login (ALLOCGUARD_PG_DSN).")
def serve(host: str, port: int, identity_header: str | None, artifacts_dir: Path, dsn: str | None) -> None:
    """The approval API (its own process): list plans and incidents, show one with its evidence, approve or reject
    with an identity — an operator's bearer token (`allocguard tokens add`) or a trusted proxy's header."""

    from consumer.operations.serve import Api
    from consumer.operations.serve import serve as start

    settings = _runtime_settings(("database",), dsn=dsn)
    api = Api(settings, artifacts_dir=artifacts_dir, identity_header=identity_header)
    try:
        server = start(api, host, port)
    except OSError as exc:
        _missing([f"cannot listen on {host}:{port}: {exc.strerror or exc}"])
        return
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    click.echo(f"allocguard serve: http://{host}:{server.server_address[1]}/api/plans", err=True)
    done.wait()
    server.shutdown()


@main.group()
def tokens() -> None:
    """Operators' bearer tokens for `allocguard serve` (the tables' owner writes them: ALLOCGUARD_ADMIN_DSN)."""


def _owner_dsn(dsn: str | None) -> str:
    if not dsn:
        _missing(["missing ALLOCGUARD_ADMIN_DSN (or --dsn): only the tables' owner writes tokens"])
    assert dsn is not None
    return dsn


@tokens.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["viewer", "approver"]), default="approver", show_default=True)
@click.option("--dsn", envvar="ALLOCGUARD_ADMIN_DSN", help="The tables' owner (ALLOCGUARD_ADMIN_DSN).")
def tokens_add(name: str, role: str, dsn: str | None) -> None:
    """Make NAME's token and print it — the only time it is shown (the database keeps its SHA-256)."""
    from consumer.operations.tokens import TokenRole, add

    try:
        click.echo(add(_owner_dsn(dsn), name, TokenRole(role)))
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    except psycopg.errors.CheckViolation:
        raise click.UsageError("NAME: letters, digits and . _ @ - only, at most 64") from None


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--dsn", envvar="ALLOCGUARD_ADMIN_DSN", help="The tables' owner (ALLOCGUARD_ADMIN_DSN).")
def tokens_list(as_json: bool, dsn: str | None) -> None:
    """Who has a token, with which role, since when; revoked ones too."""
    from consumer.operations.tokens import listed

    rows = listed(_owner_dsn(dsn))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        revoked = f"  revoked {row['revoked_at']}" if row["revoked_at"] else ""
        click.echo(f"{row['name']:<24} {row['role']:<9} since {row['created_at']}{revoked}")
    if not rows:
        click.echo("(no tokens)")


@tokens.command("revoke")
@click.argument("name")
@click.option("--dsn", envvar="ALLOCGUARD_ADMIN_DSN", help="The tables' owner (ALLOCGUARD_ADMIN_DSN).")
def tokens_revoke(name: str, dsn: str | None) -> None:
    """Revoke NAME's token at once (its next request is 401)."""
    from consumer.operations.tokens import revoke

    try:
        revoke(_owner_dsn(dsn), name)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"revoked the token of {name}")


@main.group()
def plans() -> None:
    """Plans waiting for a person (mode approve, or a plan beyond the guardrails): list, show, approve, reject."""


def _operator() -> str | None:
    return os.environ.get("ALLOCGUARD_OPERATOR") or os.environ.get("USER")


@plans.command("list")
@click.option("--status", type=click.Choice(["pending", "executed", "refused", "rejected", "expired"]))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--dsn", help="allocguard's database login (ALLOCGUARD_PG_DSN).")
def plans_list(status: str | None, as_json: bool, dsn: str | None) -> None:
    """Pending and decided plans, newest first (expires what is due first)."""
    from consumer.operations.plans import list_plans

    list_plans(_runtime_settings(("database",), dsn=dsn), status, as_json, click.echo)


@plans.command("show")
@click.argument("plan")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--dsn", help="allocguard's database login (ALLOCGUARD_PG_DSN).")
def plans_show(plan: str, as_json: bool, dsn: str | None) -> None:
    """One plan with its evidence (PLAN is an id or a unique prefix of one)."""
    from consumer.operations.plans import resolve_plan_id, show_plan

    settings = _runtime_settings(("database",), dsn=dsn)
    try:
        show_plan(settings, resolve_plan_id(settings, plan), as_json, click.echo)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc


def _result_json(result: Any) -> dict[str, Any]:
    """An incident's outcome for --json: ids and statuses only."""
    return {
        "booking_id": str(result.incident.booking_id) if result.incident else None,
        "status": result.status,
        "reason": result.reason,
        "prunes": [
            {
                "status": prune.status,
                "pruned": [str(i) for i in prune.pruned_ids],
                "released": [[str(b), str(t)] for b, t in prune.released],
                "artifacts": [str(p) for p in prune.artifacts],
            }
            for prune in result.prunes
        ],
    }


def _decide(
    plan: str, approve: bool, by: str | None, note: str | None, dsn: str | None, artifacts: Path, as_json: bool = False
) -> None:
    from consumer.operations.plans import decide, resolve_plan_id
    from handlers.pipeline import PlanDecisionError

    if not by:
        raise click.UsageError("say who decides: --by NAME (or ALLOCGUARD_OPERATOR / USER)")
    settings = _runtime_settings(("database",), dsn=dsn)
    try:
        result = decide(settings, resolve_plan_id(settings, plan), approve, by, note, artifacts)
    except (LookupError, PlanDecisionError) as exc:
        raise click.ClickException(str(exc)) from exc
    if result is None:
        if as_json:
            click.echo(json.dumps({"plan": plan, "status": "rejected", "by": by}))
        else:
            click.echo(f"plan {plan} rejected by {by}; nothing was touched")
        return
    if as_json:
        click.echo(json.dumps({"plan": plan, "by": by, **_result_json(result)}, indent=2))
        if result.status == "manual_review":
            sys.exit(1)
        return
    for prune in result.prunes:
        click.echo(f"prune: {prune.status} {[str(i) for i in prune.pruned_ids]} {prune.skipped or ''}")
        if prune.released:
            click.echo("released: " + ", ".join(f"{b} on {t}" for b, t in prune.released))
    click.echo(f"booking {result.incident.booking_id if result.incident else '?'}: {result.status} — {result.reason}")
    if result.status == "manual_review":
        sys.exit(1)


@plans.command("approve")
@click.argument("plan")
@click.option("--by", default=_operator, help="Who approves (recorded). Default: ALLOCGUARD_OPERATOR or USER.")
@click.option("--note", help="Why (recorded).")
@click.option("--artifacts-dir", type=click.Path(path_type=Path), default=Path("artifacts"), show_default=True)
@click.option("--dsn", help="allocguard's database login (ALLOCGUARD_PG_DSN).")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def plans_approve(
    plan: str, by: str | None, note: str | None, artifacts_dir: Path, dsn: str | None, as_json: bool
) -> None:
    """Execute a pending plan: the executor re-checks every id on committed state (the world may have changed),
    then auto-assign is retried for the booking. Exit 1 when the re-check refused it or the retry did not seat it."""
    _decide(plan, True, by, note, dsn, artifacts_dir, as_json)


@plans.command("reject")
@click.argument("plan")
@click.option("--by", default=_operator, help="Who rejects (recorded). Default: ALLOCGUARD_OPERATOR or USER.")
@click.option("--note", help="Why (recorded).")
@click.option("--dsn", help="allocguard's database login (ALLOCGUARD_PG_DSN).")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def plans_reject(plan: str, by: str | None, note: str | None, dsn: str | None, as_json: bool) -> None:
    """Decline a pending plan: nothing is touched; the incident is settled as rejected."""
    _decide(plan, False, by, note, dsn, Path("artifacts"), as_json)


def _undo_dsn(dsn: str | None) -> str:
    """An operator's login, a member of allocguard_undo: never the runtime's (ALLOCGUARD_PG_DSN is not read)."""
    dsn = dsn or os.environ.get("ALLOCGUARD_UNDO_DSN")
    if not dsn:
        _missing(["missing ALLOCGUARD_UNDO_DSN (or --dsn): an operator's login, a member of allocguard_undo"])
    assert dsn is not None
    return dsn


@main.command()
@click.argument("remediation", type=click.UUID)
@click.option("--apply", is_flag=True, help="Undo it (default: say what would be done, or why it cannot).")
@click.option("--by", default=_operator, help="Who undoes it (recorded). Default: ALLOCGUARD_OPERATOR or USER.")
@click.option("--note", help="Why (recorded, and shown with the pins).")
@click.option("--dsn", help="An operator's login, a member of allocguard_undo (ALLOCGUARD_UNDO_DSN).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def undo(remediation: uuid.UUID, apply: bool, by: str | None, note: str | None, dsn: str | None, as_json: bool) -> None:
    """Reverse a remediation as a whole: release the victim's assignment allocguard made (only while it is still
    allocguard's), restore the pruned allocations exactly and pin them (PROTECTED in every later plan until
    allocguard unpin). Dry run by default. Exit 1 when it must be refused (nothing changed), with the reasons."""
    from handlers.undo import UndoRefused, apply_undo, plan_undo

    url = _undo_dsn(dsn)
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            plan = plan_undo(conn, remediation) if not apply else None
            undone = None
            if apply:
                plan, undone = apply_undo(conn, remediation, actor=by or "unknown", note=note)
        except LookupError as exc:
            raise click.ClickException(str(exc)) from None
        except UndoRefused as exc:
            if as_json:
                click.echo(json.dumps({"remediation_id": str(remediation), "refused": str(exc)}))
                sys.exit(1)
            raise click.ClickException(f"refused: {exc}") from None
    assert plan is not None
    if as_json:
        click.echo(json.dumps({**plan.as_json(), "applied": undone is not None, "undo_id": str(undone or "") or None}))
    else:
        click.echo(f"remediation {remediation}:")
        if plan.victim is not None:
            tables = ", ".join(map(str, plan.release_tables)) or "nothing (it holds no table allocguard gave it)"
            click.echo(f"  release victim {plan.victim}: {tables}")
        click.echo(f"  restore and pin: {', '.join(map(str, plan.restore_ids))}")
        for reason in plan.refusals:
            click.echo(f"  refused: {reason}")
        if undone is not None:
            click.echo(f"undone (recorded as remediation {undone})")
        elif not plan.refusals:
            click.echo("dry run: nothing changed (--apply to undo it)")
    if plan.refusals:
        sys.exit(1)


@main.command()
@click.argument("allocation", type=click.UUID)
@click.option("--dsn", help="An operator's login, a member of allocguard_undo (ALLOCGUARD_UNDO_DSN).")
def unpin(allocation: uuid.UUID, dsn: str | None) -> None:
    """Let a pinned allocation be judged again (an undo pinned it). Exit 1 when it was not pinned."""
    from handlers.undo import unpin as unpin_allocation

    with psycopg.connect(_undo_dsn(dsn), autocommit=True) as conn:
        if not unpin_allocation(conn, allocation):
            raise click.ClickException(f"allocation {allocation} is not pinned")
    click.echo(f"allocation {allocation}: unpinned")


@main.command()
@click.option("--restaurant", type=click.UUID, help="Only this restaurant (default: every one).")
@click.option("--since", "--from", "since", type=click.DateTime(), help="Windows overlapping from here (default: now).")
@click.option("--until", "--to", "until", type=click.DateTime(), help="… up to here (default: no end).")
@click.option("--apply", is_flag=True, help="Prune the proven orphans (each re-proven in the executor).")
@click.option("--release-stale", is_flag=True, help="With --apply: also release stale-by-status owners.")
@click.option("--by", default=_operator, help="Who runs it (recorded). Default: ALLOCGUARD_OPERATOR or USER.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--artifacts-dir", type=click.Path(path_type=Path), default=Path("artifacts"), show_default=True)
@click.option("--dsn", help="allocguard's database login (ALLOCGUARD_PG_DSN).")
def reconcile(
    restaurant: uuid.UUID | None,
    since: Any,
    until: Any,
    apply: bool,
    release_stale: bool,
    by: str | None,
    as_json: bool,
    artifacts_dir: Path,
    dsn: str | None,
) -> None:
    """Sweep the database for orphan and stale-by-status allocations (dry run unless --apply), with the same
    evidence and executor as a live incident. Exit 1 when orphans or stale rows remain."""
    from datetime import UTC

    from consumer.operations.reconcile import print_sweep
    from consumer.operations.reconcile import reconcile as sweep_database

    if release_stale and not apply:
        raise click.UsageError("--release-stale goes with --apply")
    if apply and not by:
        raise click.UsageError("say who applies it: --by NAME (or ALLOCGUARD_OPERATOR / USER)")
    sweep = sweep_database(
        _runtime_settings(("database",), dsn=dsn),
        restaurant=restaurant,
        since=since.replace(tzinfo=since.tzinfo or UTC) if since else None,
        until=until.replace(tzinfo=until.tzinfo or UTC) if until else None,
        apply=apply,
        release_stale=release_stale,
        actor=f"allocguard reconcile, by {by}",
        artifacts_dir=artifacts_dir if apply else None,
    )
    print_sweep(sweep, as_json, apply, click.echo)
    left = [f for f in sweep.findings if f.evidence.verdict.value in ("orphan", "stale_by_status") and not f.action]
    if left or sweep.refused:
        sys.exit(1)


def _window(since: str | None, until: str | None, offsets: str | None) -> Any:
    from datetime import UTC, datetime

    from consumer.operations.replay import Window

    def moment(text: str | None) -> datetime | None:
        if text is None:
            return None
        value = datetime.fromisoformat(text)
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    ranges = None
    if offsets:
        ranges = {}
        for part in offsets.split(","):
            partition, _, span = part.partition(":")
            first, _, end = span.partition("-")
            try:
                ranges[int(partition)] = (int(first), int(end))
            except ValueError:
                raise click.BadParameter(
                    f"{part!r}: ranges are PARTITION:FIRST-END[,…] (END exclusive)", param_hint="--offsets"
                ) from None
    try:
        return Window(moment(since), moment(until), ranges)
    except ValueError as exc:
        raise click.UsageError(f"--since/--until take ISO-8601 times: {exc}") from exc


_range_options = [
    click.option("--since", help="ISO-8601 time (UTC if no offset): start at the offsets for this time."),
    click.option("--until", help="ISO-8601 time: stop at the offsets for this time (default: the end, now)."),
    click.option("--offsets", help="Explicit ranges instead: PARTITION:FIRST-END[,…] (END exclusive)."),
]


def _with_range(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(_range_options):
        command = option(command)
    return command


@main.command(name="replay")
@_runtime_options
@_with_range
@click.option("--apply", is_flag=True, help="Fix what it finds (as run --mode auto). Default: --dry-run.")
@click.option("--dry-run", "dry_run", is_flag=True, help="Evidence only, nothing written to the platform (default).")
@click.option("--booking", type=click.UUID, help="Only this booking.")
@click.option("--restaurant", type=click.UUID, help="Only this restaurant.")
@click.option("--from-file", type=click.Path(path_type=Path, exists=True), help="A file written by `capture`.")
@click.option("--report", type=click.Path(path_type=Path), help="Write the JSON report here.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (instead of the table).")
def replay_command(
    dsn: str | None,
    kafka_bootstrap: str | None,
    topic_prefix: str | None,
    tables: str | None,
    group_id: str | None,
    connect_url: str | None,
    since: str | None,
    until: str | None,
    offsets: str | None,
    apply: bool,
    dry_run: bool,
    booking: uuid.UUID | None,
    restaurant: uuid.UUID | None,
    from_file: Path | None,
    report: Path | None,
    as_json: bool,
) -> None:
    """Reprocess a topic range (or a captured file): find, explain and, with --apply, fix past incidents.

    Its own consumer identity: it never joins or commits to the live group; it stops at the end offsets
    captured when it started."""
    from consumer.operations.replay import Progress, read_file, read_range, replay
    from consumer.runtime.routing import Relevance
    from handlers.detect import DetectionRules

    if apply and dry_run:
        raise click.UsageError("--apply or --dry-run, not both")
    settings = _runtime_settings(
        ("database", "kafka"),
        dsn=dsn,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        tables=tables,
        group_id=group_id,
    )
    progress = Progress((lambda line: None) if as_json else click.echo)
    window = _window(since, until, offsets)
    tally: dict[str, int] = {}
    keep = Relevance(DetectionRules())
    source = (
        read_file(from_file, progress, tally, keep=keep)
        if from_file
        else read_range(settings, window, progress, keep=keep, tally=tally)
    )
    result = replay(settings, source, apply=apply, booking=booking, restaurant=restaurant, tally=tally)
    click.echo(json.dumps(result.as_json(), indent=2) if as_json else result.table())
    if report is not None:
        report.write_text(json.dumps(result.as_json(), indent=2) + "\n")
        click.echo(f"report: {report}")


@main.command(name="capture")
@_runtime_options
@_with_range
@click.option("--out", type=click.Path(path_type=Path), required=True, help="JSON Lines file to write.")
def capture_command(
    dsn: str | None,
    kafka_bootstrap: str | None,
    topic_prefix: str | None,
    tables: str | None,
    group_id: str | None,
    connect_url: str | None,
    since: str | None,
    until: str | None,
    offsets: str | None,
    out: Path,
) -> None:
    """Export a topic range to JSON Lines, for `replay --from-file` on a laptop or in a test."""
    from consumer.operations.replay import capture

    settings = _runtime_settings(
        ("kafka",),
        dsn=dsn,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        tables=tables,
        group_id=group_id,
    )
    capture(settings, _window(since, until, offsets), out, click.echo)


# ---- the always-on consumer ---------------------------------------------------------------------


@main.command()
@_runtime_options
@click.option("--once", is_flag=True, help="Drain what is there, then exit.")
@click.option(
    "--mode",
    type=click.Choice([m.value for m in Mode]),
    help="dry_run (default), auto, or approve (every plan waits for `allocguard plans approve`).",
)
@click.option(
    "--grace",
    "--grace-s",
    "grace_s",
    type=float,
    help="Seconds an allocation must be untouched to be pruned (ALLOCGUARD_GRACE_S).",
)
@click.option("--workers", type=int, help="Bookings handled concurrently.")
@click.option("--health-port", type=int, help="Port of /healthz, /readyz and /metrics.")
@click.option("--from-beginning", is_flag=True, help="A new group starts at the earliest offsets.")
@click.option(
    "--prevention/--no-prevention",
    default=None,
    help="Also watch assignments, allocations and bookings: catch what the platform leaves behind before anyone "
    "is blocked (ALLOCGUARD_PREVENTION).",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
    envvar="ALLOCGUARD_LOG_LEVEL",
    default="INFO",
    show_default=True,
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    envvar="ALLOCGUARD_LOG_FORMAT",
    default="text",
    show_default=True,
    help="json: one object per line with trace_id/span_id.",
)
def run(
    dsn: str | None,
    kafka_bootstrap: str | None,
    topic_prefix: str | None,
    tables: str | None,
    group_id: str | None,
    connect_url: str | None,
    once: bool,
    mode: str | None,
    grace_s: float | None,
    workers: int | None,
    health_port: int | None,
    from_beginning: bool,
    prevention: bool | None,
    log_level: str,
    log_format: str,
) -> None:
    """Consume the platform's CDC topics and remediate allocations_no_overlap failures as they happen."""
    from consumer.runtime.loop import run as run_runtime
    from consumer.runtime.work import FatalRuntimeError
    from consumer.telemetry import configure_logging

    configure_logging(log_level, log_format)
    settings = _runtime_settings(
        ("database", "kafka"),
        dsn=dsn,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        tables=tables,
        group_id=group_id,
        connect_url=connect_url,
        mode=mode,
        grace_s=grace_s,
        workers=workers,
        health_port=health_port,
        auto_offset_reset="earliest" if from_beginning else None,
        prevention=prevention,
    )
    try:
        sys.exit(run_runtime(settings, once=once))
    except ConfigurationError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(2)
    except FatalRuntimeError as exc:
        click.echo(f"fatal: {exc}", err=True)
        sys.exit(2)


def _failure(exc: BaseException) -> tuple[int, str]:
    """The exit code and kind of an error that reached the top: see ``allocguard --help``."""
    from confluent_kafka import KafkaError, KafkaException

    from consumer.operations.connector import ConnectorUnreachable

    if isinstance(exc, ConfigurationError):
        return 2, "configuration"
    if isinstance(exc, psycopg.OperationalError):
        text = str(exc)
        if "authentication failed" in text or "does not exist" in text or "no pg_hba.conf entry" in text:
            return 2, "configuration"
        return 3, "dependency unavailable"
    if isinstance(exc, psycopg.errors.InsufficientPrivilege | psycopg.errors.UndefinedTable):
        return 2, "configuration"
    if isinstance(exc, ConnectorUnreachable | ConnectionError | TimeoutError | urllib.error.URLError):
        return 3, "dependency unavailable"
    if isinstance(exc, KafkaException):
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if error is not None and error.code() in _KAFKA_UNREACHABLE:
            return 3, "dependency unavailable"
        if error is not None and error.code() == KafkaError._INVALID_ARG:
            return 2, "configuration"
    return 4, "failed"


def entry() -> None:
    """The console script: no traceback, and no password, for an error that reaches the top — one redacted line
    on stderr (with ``--json``, the error as JSON on stdout) and the exit code of the table in ``--help``."""
    from confluent_kafka import KafkaException

    as_json = "--json" in sys.argv[1:]

    def fail(code: int, kind: str, message: str) -> NoReturn:
        message = redact(message).strip()
        if as_json:
            click.echo(json.dumps({"error": {"kind": kind, "message": message, "exit_code": code}}))
        click.echo(f"Error: {message}" if kind == "usage" else f"error: {kind}: {message}", err=True)
        sys.exit(code)

    try:
        main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.UsageError as exc:
        fail(2, "usage", exc.format_message())
    except click.ClickException as exc:  # a command's own verdict ("plan … is already executed"): work left
        fail(exc.exit_code, "failed", exc.format_message())
    except (ConfigurationError, psycopg.Error, OSError, RuntimeError, ValueError, KafkaException) as exc:
        code, kind = _failure(exc)
        if isinstance(exc, KafkaException) and exc.args and hasattr(exc.args[0], "str"):
            detail = exc.args[0].str()
        else:
            detail = (str(exc).splitlines() or [repr(exc)])[0]
        fail(code, kind, f"{type(exc).__name__}: {detail}" if code == 4 else detail)


if __name__ == "__main__":
    entry()
