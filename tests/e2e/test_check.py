"""``allocguard check`` against a database built like the platform (RLS, default replica identity), broken one
way at a time as an operator could break it: each FAIL names the cause and the fix, and the exit code says it."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator

import psycopg
import pytest
from click.testing import CliRunner, Result

from consumer.cli import main
from consumer.local.settings import StackSettings
from consumer.local.stack import LocalStack, connector_config
from consumer.operations import migrations as db
from tests.support.platform import drop_slot
from tests.support.process import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stack]


class Platform:
    def __init__(self, settings: StackSettings, name: str) -> None:
        self.settings = settings
        self.name = name
        self.owner_dsn = settings.dsn_for(name)
        #: allocguard's login role (a member of allocguard_remediator only), on this database
        self.app_dsn = settings.dsn_for(name, settings.pg_dsn)

    def owner(self, statement: str) -> None:
        with psycopg.connect(self.owner_dsn, autocommit=True) as conn:
            conn.execute(statement.encode())

    def check(
        self, *args: str, dsn: str | None = None, env: dict[str, str] | None = None
    ) -> tuple[Result, dict[str, dict[str, str]]]:
        result = CliRunner().invoke(
            main,
            ["check", "--json", "--dsn", dsn or self.app_dsn, "--topic-prefix", self.settings.topic_prefix, *args],
            env=env,
        )
        assert "]" in result.output, (result.output, result.exception)
        items: dict[str, dict[str, str]] = {}
        for item in json.loads(result.output[: result.output.rindex("]") + 1]):
            items.setdefault(item["name"], item)
            if item["status"] != "OK":  # the worst per name wins
                items[item["name"]] = item
        return result, items


@pytest.fixture
def platform(stack_settings: StackSettings, unique: str) -> Iterator[Platform]:
    name = f"check_{unique}"
    admin = stack_settings.dsn_for("postgres")
    db.ensure_database(admin, name)
    target = Platform(stack_settings, name)
    db.init_database(target.owner_dsn, with_reference_schema=True, with_cdc=True)
    yield target
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def failed(items: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    return {name: item for name, item in items.items() if item["status"] == "FAIL"}


def test_a_correct_deployment_passes(platform: Platform) -> None:
    result, items = platform.check()
    assert result.exit_code == 0, result.output
    assert failed(items) == {}
    assert items["role"]["status"] == "OK"
    assert items["rows of booking_table_assignments"]["detail"].startswith("row-level security on; visible")
    assert "DEFAULT on" in items["replica identity"]["detail"]
    assert items["connector"]["status"] == "WARN", "not checked without a Connect URL"
    strict, _ = platform.check("--strict")
    assert strict.exit_code == 1, "--strict: a warning is not a pass"


def test_the_replication_slot_is_reported(platform: Platform, stack_settings: StackSettings) -> None:
    """No slot in the database (no connector yet, or a failover lost it): a warning; a slot: OK with its
    wal_status."""
    _, items = platform.check()
    assert items["replication slot"]["status"] == "WARN"
    assert "no logical replication slot" in items["replication slot"]["detail"]
    slot = f"{platform.name}_slot"
    platform.owner(f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')")
    try:
        _, items = platform.check()
        assert items["replication slot"]["status"] == "OK", items["replication slot"]
        assert items["replication slot"]["detail"].startswith(f"{slot} (pgoutput): wal_status reserved")
    finally:
        drop_slot(stack_settings.dsn_for("postgres"), slot)


def test_foreign_keys_to_allocations_without_an_index_are_a_prune_cost_warning(platform: Platform) -> None:
    """The platform's dump has three foreign keys to allocations with no index (so has the reference model): each
    prune reads those tables whole. A warning that names them; none once the owner indexes them."""
    result, items = platform.check()
    assert result.exit_code == 0, result.output
    warned = items["prune cost"]
    assert warned["status"] == "WARN"
    for column in (
        "booking_table_assignments.allocation_id",
        "booking_table_assignments.merge_group_id",
        "booking_assignment_idempotency.merge_group_allocation_id",
    ):
        assert column in warned["detail"]
    platform.owner("CREATE INDEX ON booking_table_assignments (allocation_id)")
    _, items = platform.check()
    assert "booking_table_assignments.allocation_id" not in items["prune cost"]["detail"], "indexed now"
    platform.owner("CREATE INDEX ON booking_table_assignments (merge_group_id, booking_id)")
    platform.owner("CREATE INDEX ON booking_assignment_idempotency (merge_group_allocation_id)")
    _, items = platform.check()
    assert items["prune cost"]["status"] == "OK", items["prune cost"]


def test_a_role_outside_allocguard_remediator_fails(platform: Platform, unique: str) -> None:
    role = f"stranger_{unique}"
    platform.owner(f'CREATE ROLE "{role}" LOGIN')
    try:
        stranger = f"postgresql://{role}@127.0.0.1:{platform.settings.pg_port}/{platform.name}"
        result, items = platform.check(dsn=stranger)
        assert result.exit_code == 2
        assert "not a member of allocguard_remediator" in items["role"]["detail"]
        assert items["role"]["fix"].startswith(f"GRANT allocguard_remediator TO {role}")
        assert items["grants"]["status"] == "FAIL"
    finally:
        platform.owner(f'DROP OWNED BY "{role}"; DROP ROLE "{role}"')


def test_a_missing_policy_means_zero_rows_silently(platform: Platform) -> None:
    platform.owner("DROP POLICY allocguard_remediator_select ON public.allocations")
    result, items = platform.check()
    assert result.exit_code == 2
    item = items["rows of allocations"]
    assert "no policy names this role: every read returns 0 rows, silently" in item["detail"]
    assert "CREATE POLICY allocguard_remediator_select ON public.allocations" in item["fix"]


def test_the_platforms_public_policy_is_named_when_it_breaks_a_read(platform: Platform) -> None:
    """Without allocguard's own policy, the platform's PUBLIC policy's sub-query on customers runs as this role."""
    platform.owner("DROP POLICY allocguard_remediator_select ON public.booking_table_assignments")
    result, items = platform.check()
    assert result.exit_code == 2
    item = items["rows of booking_table_assignments"]
    # the sub-query joins bookings (on a column allocguard may not read) and customers
    assert "permission denied for table bookings" in item["detail"]
    assert "Guests can view their table assignments" in item["fix"]
    assert "CREATE POLICY allocguard_remediator_select ON public.booking_table_assignments" in item["fix"]


def test_missing_grants_and_execute_are_listed_with_their_statements(platform: Platform) -> None:
    platform.owner("REVOKE DELETE ON public.allocations FROM allocguard_remediator")
    platform.owner(
        "REVOKE EXECUTE ON FUNCTION public.assign_tables_atomic_v2(uuid, uuid[], text, boolean, uuid, timestamptz,"
        " timestamptz) FROM PUBLIC, allocguard_remediator"
    )
    result, items = platform.check()
    assert result.exit_code == 2
    detail = items["grants"]["detail"]
    assert "GRANT DELETE ON public.allocations TO allocguard_remediator" in detail
    assert "GRANT EXECUTE ON FUNCTION public.assign_tables_atomic_v2(" in detail


def test_publication_schema_and_topics(platform: Platform) -> None:
    platform.owner("ALTER PUBLICATION allocguard_platform DROP TABLE public.observability_events")
    platform.owner(
        "DELETE FROM allocguard.schema_migrations WHERE version = (SELECT max(version) FROM"
        " allocguard.schema_migrations)"
    )
    result, items = platform.check("--topic-prefix", "nosuchprefix")
    assert result.exit_code == 2
    assert items["publication"]["fix"] == (
        "ALTER PUBLICATION allocguard_platform ADD TABLE public.observability_events"
    )
    assert items["schema"]["detail"].startswith("migrations not applied: V")
    assert items["topics"]["detail"] == "missing: nosuchprefix.public.observability_events"


def test_run_refuses_to_start_on_a_failure(platform: Platform) -> None:
    platform.owner("DROP POLICY allocguard_remediator_select ON public.allocations")
    result = CliRunner().invoke(main, ["run", "--once", "--dsn", platform.app_dsn, "--health-port", "0"])
    assert result.exit_code == 2
    assert "preflight failed" in result.output
    assert "rows of allocations" in result.output


def test_a_superuser_is_warned_about(platform: Platform) -> None:
    result, items = platform.check(dsn=platform.owner_dsn)
    assert items["role"]["status"] == "WARN"
    assert "superuser" in items["role"]["detail"]
    assert result.exit_code == 0


def test_a_failed_snapshot_is_reported_within_seconds_with_its_cause(platform: Platform, unique: str) -> None:
    """Without its own policy on booking_table_assignments, the CDC role's snapshot runs into the platform's PUBLIC
    policy. Debezium retries that under a RUNNING task, forever. `connector register` finds it before asking
    Connect (it reads each table as the connector's role); registered anyway, `check` sees RUNNING without a
    heartbeat."""
    settings = platform.settings
    platform.owner("DROP POLICY allocguard_cdc_snapshot ON public.booking_table_assignments")
    name, prefix = f"snapfail-{unique}", f"snapfail{unique}"
    local = LocalStack(settings, log=lambda line: None)
    config = connector_config(settings, database=platform.name, topic_prefix=prefix)
    started = time.monotonic()
    args = ["--connect-url", settings.connect_url, "--kafka-bootstrap", settings.kafka_bootstrap, "--name", name]
    args += ["--db-host", "127.0.0.1", "--db-port", str(settings.pg_port), "--db-name", platform.name]
    result = CliRunner().invoke(main, ["connector", "register", *args, "--topic-prefix", prefix])
    took = time.monotonic() - started
    print(f"failed snapshot reported by connector register in {took:.1f}s")
    assert result.exit_code != 0
    assert "its initial snapshot would fail as allocguard_cdc" in result.output, result.output
    assert "public.booking_table_assignments: permission denied for table" in result.output
    assert took < 10
    try:
        # registered all the same, as with curl: RUNNING, retrying the snapshot, never streaming
        local.ensure_topics([f"__debezium-heartbeat.{prefix}"])
        assert urlopen_put(f"{settings.connect_url}/connectors/{name}/config", config) in (200, 201)
        local.wait_connector_running(name)

        def flagged() -> dict[str, str] | None:
            checked, items = platform.check(
                "--connect-url", settings.connect_url, env={"ALLOCGUARD_CONNECTOR_NAME": name}
            )
            item = items.get("heartbeat")
            # a dependency that is not there (Connect's task does not stream): exit 3, not a configuration error
            return item if checked.exit_code == 3 and item and item["status"] == "FAIL" else None

        item = wait_for("check flags a RUNNING connector that does not stream", flagged, timeout=30)
        assert "no heartbeat ever reached" in item["detail"]
        assert items_connector_ok(platform, name), "Connect itself says RUNNING"
    finally:
        local.delete_connector(name)
        drop_slot(settings.dsn_for("postgres"), config["slot.name"])


def items_connector_ok(platform: Platform, name: str) -> bool:
    _, items = platform.check("--connect-url", platform.settings.connect_url, env={"ALLOCGUARD_CONNECTOR_NAME": name})
    return items["connector"]["status"] == "OK"


def urlopen_put(url: str, body: dict[str, str]) -> int:
    request = urllib.request.Request(  # noqa: S310 (the local stack's Connect)
        url, data=json.dumps(body).encode(), method="PUT", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return int(response.status)


def test_the_runtime_role_is_denied_what_it_does_not_need(platform: Platform) -> None:
    """As the login role: guest data, the audit trail and the platform's SECURITY DEFINER writers are out of reach
    — the last one once the operator runs the REVOKE that `check` prints."""
    booking = "00000000-0000-4000-8000-000000000001"
    denied = [
        "SELECT customer_name, customer_email, customer_phone, notes, details FROM public.bookings",
        "SELECT full_name, email, phone FROM public.customers",
        "UPDATE allocguard.remediations SET reason = 'rewritten'",
        "DELETE FROM allocguard.remediations",
        "DELETE FROM allocguard.processed_events",
        "DELETE FROM allocguard.incidents",
        "TRUNCATE allocguard.remediations",
    ]
    with psycopg.connect(platform.app_dsn, autocommit=True) as conn:
        for statement in denied:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement.encode())
        # the platform leaves its SECURITY DEFINER functions executable by PUBLIC: allowed until revoked
        with conn.transaction():
            conn.execute("SELECT public.prune_allocations_history(now() - interval '100 years', 1)")
            raise psycopg.Rollback()
    _, items = platform.check()
    excess = [i for i in json_items(platform) if i["name"] == "excess"]
    fixes = " ".join(i["fix"] for i in excess)
    assert (
        "REVOKE EXECUTE ON FUNCTION prune_allocations_history(timestamp with time zone,integer) FROM PUBLIC" in fixes
    ), excess
    # every PUBLIC-executable SECURITY DEFINER function that writes, whatever the table it writes
    for signature in (
        "refresh_table_status(uuid)",
        "get_or_create_booking_slot(uuid,date,time without time zone,integer)",
    ):
        assert f"REVOKE EXECUTE ON FUNCTION {signature} FROM PUBLIC" in fixes, excess
    # unassign_tables_atomic is allocguard's own (stale-by-status release): granted, needed, not excess
    assert "unassign_tables_atomic" not in fixes
    assert items["grants"]["status"] == "OK"
    for item in excess:
        platform.owner(item["fix"].split(";")[0])
    with psycopg.connect(platform.app_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT public.prune_allocations_history(now() - interval '100 years', 1)")
        with conn.transaction():
            conn.execute("SELECT public.unassign_tables_atomic(%s::uuid)", (booking,))
            raise psycopg.Rollback()
    assert [i for i in json_items(platform) if i["name"] == "excess"] == []


def json_items(platform: Platform) -> list[dict[str, str]]:
    result = CliRunner().invoke(main, ["check", "--json", "--dsn", platform.app_dsn])
    return list(json.loads(result.output[: result.output.rindex("]") + 1]))
