"""``allocguard check``: can allocguard run here, as this role? One line per item — OK, WARN or FAIL — with the fix.

The same checks run when ``allocguard run`` starts (a FAIL exits 2 with this text) and feed ``/readyz``.
Every probe is read-only: privilege functions, catalog views, and ``SELECT … LIMIT 1`` in a transaction that is
rolled back. What the platform's row-level security does to this role is checked, not assumed: a table whose
policies leave it no rows reads as empty *without an error*, so "no policy applies to this role" is a FAIL.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import psycopg
from confluent_kafka import KafkaException, Message
from psycopg import sql

from consumer.config import Target
from consumer.operations.migrations import discover
from consumer.redact import redact
from consumer.runtime.health import kafka_log

#: role allocguard's login role must belong to
REMEDIATOR_ROLE = "allocguard_remediator"

#: (table, privilege, columns or None): what the evidence, the executor and the retry need; nothing more
NEEDED_PRIVILEGES: tuple[tuple[str, str, tuple[str, ...] | None], ...] = (
    ("bookings", "SELECT", ("id", "restaurant_id", "status", "start_at", "end_at", "party_size")),
    ("bookings", "UPDATE", ("updated_at",)),
    ("booking_table_assignments", "SELECT", None),
    ("allocations", "SELECT", None),
    ("allocations", "DELETE", None),
    ("allocations", "UPDATE", ("updated_at",)),
    ("allocations_archive", "INSERT", None),
    ("table_holds", "SELECT", None),
    ("table_hold_members", "SELECT", None),
    ("table_inventory", "SELECT", None),
    ("booking_assignment_idempotency", "SELECT", None),
    ("booking_assignment_idempotency", "DELETE", None),
    ("observability_events", "SELECT", None),
    ("observability_events", "INSERT", None),
)
#: tables whose rows the evidence must see (row-level security must leave them visible to this role)
READ_TABLES = (
    "bookings",
    "booking_table_assignments",
    "allocations",
    "table_holds",
    "table_hold_members",
    "table_inventory",
    "booking_assignment_idempotency",
)
FUNCTIONS = (
    "public.assign_tables_atomic_v2(uuid, uuid[], text, boolean, uuid, timestamptz, timestamptz)",
    "public.apply_booking_state_transition(uuid, public.booking_status, timestamptz, timestamptz, timestamptz,"
    " public.booking_status, public.booking_status, uuid, timestamptz, text, jsonb)",
    # stale-by-status owners are released the platform's way (policy-gated)
    "public.unassign_tables_atomic(uuid, uuid[])",
)


class Status(StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Item:
    name: str
    status: Status
    detail: str
    fix: str = ""
    #: a FAIL because this dependency is out of reach right now (database, kafka, connect), not misconfigured:
    #: ``run`` waits for it instead of exiting
    unavailable: str | None = None

    def line(self) -> str:
        text = f"{self.status.value:<4}  {self.name}: {self.detail}"
        return f"{text}\n      fix: {self.fix}" if self.fix and self.status is not Status.OK else text


@dataclass
class Report:
    items: list[Item] = field(default_factory=list)

    @property
    def failed(self) -> list[Item]:
        return [i for i in self.items if i.status is Status.FAIL]

    @property
    def misconfigured(self) -> list[Item]:
        """FAILs that waiting cannot fix."""
        return [i for i in self.failed if i.unavailable is None]

    @property
    def exit_code(self) -> int:
        """0 all OK, 1 warnings only, 2 a failure that is configuration, 3 a dependency out of reach."""
        if self.misconfigured:
            return 2
        if self.failed:
            return 3
        return 1 if any(i.status is Status.WARN for i in self.items) else 0

    def text(self) -> str:
        return "\n".join(i.line() for i in self.items)

    def as_json(self) -> list[dict[str, str]]:
        return [{"name": i.name, "status": i.status.value, "detail": i.detail, "fix": i.fix} for i in self.items]


# ---- the database ---------------------------------------------------------------------------------


#: what PostgreSQL says when the connection string itself is wrong (psycopg gives no SQLSTATE for a failed
#: connection): waiting will not fix these
_MISCONFIGURED = (
    "password authentication failed",
    "does not exist",  # the role or the database
    "no pg_hba.conf entry",
    "is not permitted to log in",
    "invalid connection option",
    "invalid dsn",
    'missing "="',
    "invalid integer value",
    "certificate",
)
#: the server is there but has no connection slot left
_NO_SLOTS = ("too many connections", "remaining connection slots are reserved")


def connect_failure(exc: psycopg.Error) -> Item:
    """A failed connection as a check item: a wrong connection string is a misconfiguration; a server that is
    down, starting, unreachable or out of connection slots is unavailable — ``run`` waits for it."""
    lines = redact(str(exc)).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    lowered = text.lower()
    if any(marker in lowered for marker in _NO_SLOTS):
        return Item(
            "database",
            Status.FAIL,
            f"no connection slot free: {text}",
            "the server's max_connections are all in use: wait, or raise max_connections, or shrink other "
            "clients' pools (allocguard needs ALLOCGUARD_WORKERS + 4)",
            unavailable="database",
        )
    if any(marker in lowered for marker in _MISCONFIGURED):
        return Item(
            "database",
            Status.FAIL,
            f"cannot connect: {text}",
            "check ALLOCGUARD_PG_DSN (host, port, database, the login role and its password)",
        )
    return Item(
        "database",
        Status.FAIL,
        f"unreachable: {text}",
        "is PostgreSQL up and reachable from here (host, port, network policy)?",
        unavailable="database",
    )


def database_items(target: Target) -> Iterator[Item]:
    try:
        conn = psycopg.connect(target.dsn, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        yield connect_failure(exc)
        return
    groups: list[tuple[str, Callable[[], Iterator[Item]]]] = [
        ("role", lambda: _role_items(conn)),
        ("schema", lambda: _migration_items(conn)),
        ("grants", lambda: _privilege_items(conn)),
        ("rows", lambda: _visibility_items(conn)),
        ("publication", lambda: _publication_items(conn, target)),
        ("prune cost", lambda: _prune_cost_items(conn)),
        ("replication slot", lambda: _slot_items(conn)),
    ]
    with conn:
        for name, group in groups:
            try:
                items = list(group())
            except psycopg.Error as exc:
                # a probe this role may not even run is itself the finding
                first = redact(str(exc).strip()).splitlines()[0] if str(exc).strip() else type(exc).__name__
                items = [
                    Item(name, Status.FAIL, f"cannot be checked: {first}", "run `allocguard db init` as the owner")
                ]
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.rollback()
            yield from items


def _role_items(conn: psycopg.Connection[Any]) -> Iterator[Item]:
    row = conn.execute(
        "SELECT current_user, r.rolsuper, r.rolbypassrls,"
        " EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %s) AND pg_has_role(current_user, %s, 'MEMBER')"
        " FROM pg_roles r WHERE r.rolname = current_user",
        (REMEDIATOR_ROLE, REMEDIATOR_ROLE),
    ).fetchone()
    assert row is not None
    user, superuser, bypass, member = row
    if superuser:
        yield Item(
            "role",
            Status.WARN,
            f"{user} is a superuser: it can do far more than allocguard needs",
            f"CREATE ROLE allocguard_app LOGIN PASSWORD '…'; GRANT {REMEDIATOR_ROLE} TO allocguard_app; "
            "and connect as allocguard_app",
        )
    elif bypass:
        yield Item(
            "role",
            Status.WARN,
            f"{user} has BYPASSRLS: every row of every tenant is visible to it",
            f"ALTER ROLE {user} NOBYPASSRLS (allocguard's policies TO {REMEDIATOR_ROLE} are enough)",
        )
    if not member and not superuser:
        yield Item(
            "role",
            Status.FAIL,
            f"{user} is not a member of {REMEDIATOR_ROLE}",
            f"GRANT {REMEDIATOR_ROLE} TO {user}  (the role comes from `allocguard db init`)",
        )
    elif not superuser:
        yield Item("role", Status.OK, f"{user}, a member of {REMEDIATOR_ROLE}")


def _migration_items(conn: psycopg.Connection[Any]) -> Iterator[Item]:
    wanted = [m.version for m in discover()]
    try:
        with conn.transaction():
            rows = conn.execute("SELECT version FROM allocguard.schema_migrations").fetchall()
    except psycopg.errors.UndefinedTable:
        yield Item("schema", Status.FAIL, "allocguard's schema is missing", "run `allocguard db init` as the owner")
        return
    applied = {int(r[0]) for r in rows}
    missing = [v for v in wanted if v not in applied]
    if missing:
        yield Item(
            "schema",
            Status.FAIL,
            f"migrations not applied: {', '.join(f'V{v:03d}' for v in missing)}",
            "run `allocguard db init` as the owner",
        )
    elif applied and max(applied) > max(wanted):
        yield Item(
            "schema",
            Status.WARN,
            f"the schema (V{max(applied):03d}) is newer than this version of allocguard knows (V{max(wanted):03d}): "
            "a rollback; migrations only add, so this version runs against it",
            "deploy the newer image again when the rollback's cause is fixed",
        )
    else:
        yield Item("schema", Status.OK, f"allocguard's schema is current (V{max(wanted):03d})")


def _privilege_items(conn: psycopg.Connection[Any]) -> Iterator[Item]:
    missing: list[str] = []
    for table, privilege, columns in NEEDED_PRIVILEGES:
        qualified = f"public.{table}"
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (qualified,)).fetchone()
        if exists is None or not exists[0]:
            missing.append(f"{qualified} does not exist")
            continue
        if columns is None:
            ok = conn.execute("SELECT has_table_privilege(%s, %s)", (qualified, privilege)).fetchone()
            if ok is None or not ok[0]:
                missing.append(f"GRANT {privilege} ON {qualified} TO {REMEDIATOR_ROLE}")
        else:
            lacking = [c for c in columns if not _has_column_privilege(conn, qualified, c, privilege)]
            if lacking:
                missing.append(f"GRANT {privilege} ({', '.join(lacking)}) ON {qualified} TO {REMEDIATOR_ROLE}")
    for function in FUNCTIONS:
        try:
            with conn.transaction():
                ok = conn.execute("SELECT has_function_privilege(%s, 'EXECUTE')", (function,)).fetchone()
        except psycopg.Error:
            missing.append(f"function {function.split('(')[0]} does not exist with the expected arguments")
            continue
        if ok is None or not ok[0]:
            missing.append(f"GRANT EXECUTE ON FUNCTION {function} TO {REMEDIATOR_ROLE}")
    yield from _excess_items(conn)
    if missing:
        yield Item(
            "grants",
            Status.FAIL,
            f"{len(missing)} missing: " + "; ".join(missing),
            "run `allocguard db init` as the owner, or ask for exactly the statements listed",
        )
    else:
        yield Item("grants", Status.OK, f"{len(NEEDED_PRIVILEGES)} table and {len(FUNCTIONS)} function privileges")


#: a function body that writes a table: DELETE FROM, INSERT INTO, UPDATE (not a FOR UPDATE lock)
_WRITES = r"(delete\s+from|(?<!for\s)update|insert\s+into)\s+(only\s+)?(public\.)?[a-z_]+"
#: platform functions allocguard itself calls (EXECUTE on them is needed, not excess)
_OWN_FUNCTIONS = ("assign_tables_atomic_v2", "apply_booking_state_transition", "unassign_tables_atomic")


def _excess_items(conn: psycopg.Connection[Any]) -> Iterator[Item]:
    """What the role can do beyond what allocguard needs: SECURITY DEFINER functions of the platform that write any
    table and that this role may execute (usually through PUBLIC, PostgreSQL's default) — each runs with its owner's
    rights whoever calls it — and rights on guest data. A warning each, with the statement that takes it away."""
    rows = conn.execute(
        "SELECT p.oid::regprocedure::text, has_function_privilege('public', p.oid, 'EXECUTE')"
        " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'public' AND p.prosecdef AND NOT (p.proname = ANY(%s))"
        " AND has_function_privilege(current_user, p.oid, 'EXECUTE')"
        " AND p.prosrc ~* %s ORDER BY 1",
        (list(_OWN_FUNCTIONS), _WRITES),
    ).fetchall()
    for signature, public in rows:
        grantee = "PUBLIC" if public else "allocguard_remediator"
        yield Item(
            "excess",
            Status.WARN,
            f"can execute {signature} (SECURITY DEFINER, writes tables) through {grantee}",
            f"REVOKE EXECUTE ON FUNCTION {signature} FROM {grantee}; then GRANT it to the platform roles that call it",
        )
    pii = conn.execute(
        "SELECT string_agg(column_name, ', ' ORDER BY column_name) FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name = 'bookings'"
        " AND column_name IN ('customer_name', 'customer_email', 'customer_phone', 'notes', 'details')"
        " AND has_column_privilege('public.bookings', column_name, 'SELECT')"
    ).fetchone()
    if pii and pii[0]:
        yield Item(
            "excess",
            Status.WARN,
            f"can read guest data: bookings.{pii[0]}",
            "REVOKE SELECT ON public.bookings FROM allocguard_remediator; `allocguard db init` grants the columns",
        )


def _prune_cost_items(conn: psycopg.Connection[Any]) -> Iterator[Item]:
    """Deleting an allocation makes PostgreSQL look up every row that references it, in every table with a
    foreign key to ``allocations`` (SET NULL, CASCADE or a plain check alike); without an index led by that
    column the lookup reads the whole table — once per pruned allocation, slower as the platform grows (measured
    here: ≈ 3 ms a delete on a young database, 7.7 ms once those tables held ≈ 55k rows between them). The
    platform's to fix; a warning with the statements."""
    rows = conn.execute(
        "SELECT c.conrelid::regclass::text, a.attname, greatest(cl.reltuples, 0)::bigint"
        " FROM pg_constraint c JOIN pg_class cl ON cl.oid = c.conrelid"
        " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]"
        " WHERE c.contype = 'f' AND c.confrelid = to_regclass('public.allocations')"
        " AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.conrelid AND i.indkey[0] = c.conkey[1])"
        " ORDER BY 1, 2"
    ).fetchall()
    if not rows:
        yield Item("prune cost", Status.OK, "every foreign key to allocations is indexed: no prune reads a table whole")
        return
    scans = ", ".join(f"{table}.{column} (≈ {count:,} rows)" for table, column, count in rows)
    yield Item(
        "prune cost",
        Status.WARN,
        f"each pruned allocation reads {scans} whole: foreign keys to allocations with no index on their column",
        "; ".join(f"CREATE INDEX CONCURRENTLY ON {table} ({column})" for table, column, _ in rows)
        + " (the platform's owner)",
    )


SLOT_FIX = (
    "re-create the connector: drop the slot, register the connector again (a new slot, a new snapshot); allocguard "
    "handles the snapshot's failures it had not handled and nothing twice (docs/runbook.md, AllocguardSlotLost)"
)


def _slot_items(conn: psycopg.Connection[Any]) -> Iterator[Item]:
    """The logical replication slots of this database (Debezium's). One PostgreSQL invalidated (``wal_status``
    lost: it fell more than ``max_slot_wal_keep_size`` behind) has lost the change stream for good; none at all is
    how a database looks after a failover (PostgreSQL 16 and before keep no logical slot on a promoted standby) —
    or before the connector's first registration. Reported, never waited for: allocguard reads Kafka, not the slot."""
    slots = conn.execute(
        "SELECT slot_name, plugin, coalesce(wal_status, 'unknown'), active FROM pg_replication_slots"
        " WHERE database = current_database() AND slot_type = 'logical' ORDER BY slot_name"
    ).fetchall()
    if not slots:
        yield Item(
            "replication slot",
            Status.WARN,
            "no logical replication slot in this database: no connector streams its changes (not registered yet, "
            "or the slot was lost: a failover to a standby keeps none)",
            SLOT_FIX,
        )
        return
    for name, plugin, wal_status, active in slots:
        state = f"{name} ({plugin}): wal_status {wal_status}, {'streaming' if active else 'no client'}"
        if wal_status == "lost":
            yield Item(
                "replication slot",
                Status.FAIL,
                f"{state} — invalidated: the changes it had not delivered are not in Kafka and never will be",
                SLOT_FIX,
                unavailable="replication slot",
            )
        elif wal_status == "unreserved":
            yield Item(
                "replication slot",
                Status.WARN,
                f"{state} — past max_slot_wal_keep_size: invalidated at the next checkpoint unless it catches up",
                "get the connector streaming (docs/runbook.md, AllocguardSlotWalNearLimit)",
            )
        else:
            yield Item("replication slot", Status.OK, state)


def _has_column_privilege(conn: psycopg.Connection[Any], table: str, column: str, privilege: str) -> bool:
    row = conn.execute("SELECT has_column_privilege(%s, %s, %s)", (table, column, privilege)).fetchone()
    return bool(row and row[0])


def _visibility_items(conn: psycopg.Connection[Any]) -> Iterator[Item]:
    for table in READ_TABLES:
        qualified = f"public.{table}"
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (qualified,)).fetchone()
        if row is None or not row[0]:
            continue
        active = conn.execute("SELECT row_security_active(%s)", (qualified,)).fetchone()
        rls = bool(active and active[0])
        try:
            with conn.transaction():
                conn.execute(sql.SQL("SELECT 1 FROM {} LIMIT 1").format(sql.Identifier("public", table))).fetchall()
                raise psycopg.Rollback()
        except psycopg.Error as exc:
            yield Item(
                f"rows of {table}",
                Status.FAIL,
                f"reading it fails: {redact(str(exc)).splitlines()[0]}",
                _read_failure_fix(conn, table, str(exc)),
            )
            continue
        if not rls:
            yield Item(f"rows of {table}", Status.OK, "no row-level security applies to this role")
            continue
        policies = conn.execute(
            "SELECT policyname FROM pg_policies p WHERE p.schemaname = 'public' AND p.tablename = %s"
            " AND p.permissive = 'PERMISSIVE' AND p.cmd IN ('SELECT', 'ALL')"
            " AND EXISTS (SELECT 1 FROM unnest(p.roles) r"
            "             WHERE r <> 'public' AND pg_has_role(current_user, r, 'MEMBER'))",
            (table,),
        ).fetchall()
        if not policies:
            yield Item(
                f"rows of {table}",
                Status.FAIL,
                "row-level security is on and no policy names this role: every read returns 0 rows, silently",
                f"CREATE POLICY allocguard_remediator_select ON {qualified} FOR SELECT TO {REMEDIATOR_ROLE} "
                "USING (true)  (`allocguard db init` does it as the table's owner)",
            )
        else:
            names = ", ".join(str(p[0]) for p in policies)
            yield Item(f"rows of {table}", Status.OK, f"row-level security on; visible through {names}")


def _read_failure_fix(conn: psycopg.Connection[Any], table: str, error: str) -> str:
    if "permission denied for table" in error:
        other = error.split("permission denied for table", 1)[1].split()[0].strip('"')
        if other != table:
            public = conn.execute(
                "SELECT string_agg(policyname, ', ') FROM pg_policies WHERE schemaname = 'public'"
                " AND tablename = %s AND roles @> ARRAY['public'::name]",
                (table,),
            ).fetchone()
            via = f" through its PUBLIC polic(ies) {public[0]}" if public and public[0] else ""
            return (
                f"reading {table} runs a sub-query on {other}{via} with this role's privileges, because no policy "
                f"of its own applies: CREATE POLICY allocguard_remediator_select ON public.{table} FOR SELECT TO "
                f"{REMEDIATOR_ROLE} USING (true) — PostgreSQL then folds that sub-query away (no privilege on "
                f"{other} needed; `allocguard db init` does it as the owner)"
            )
        return f"GRANT SELECT ON public.{table} TO {REMEDIATOR_ROLE}"
    return "see the error; `allocguard db init` creates what allocguard needs"


def _publication_items(conn: psycopg.Connection[Any], target: Target) -> Iterator[Item]:
    published = {
        f"{schema}.{name}"
        for schema, name in conn.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s", (target.publication,)
        ).fetchall()
    }
    missing = [t for t in target.tables if t not in published]
    if not published:
        yield Item(
            "publication",
            Status.FAIL,
            f"publication {target.publication} does not exist or publishes nothing",
            "`allocguard db init --with-cdc` as the owner (deploy/sql/cdc)",
        )
    elif missing:
        yield Item(
            "publication",
            Status.FAIL,
            f"{target.publication} does not publish {', '.join(missing)}",
            f"ALTER PUBLICATION {target.publication} ADD TABLE {', '.join(missing)}",
        )
    else:
        yield Item("publication", Status.OK, f"{target.publication} publishes {len(published)} table(s)")
    identities = conn.execute(
        "SELECT c.relname, c.relreplident FROM pg_publication_tables p"
        " JOIN pg_namespace n ON n.nspname = p.schemaname JOIN pg_class c ON c.relnamespace = n.oid"
        " AND c.relname = p.tablename WHERE p.pubname = %s ORDER BY 1",
        (target.publication,),
    ).fetchall()
    by_kind: dict[str, list[str]] = {}
    for name, kind in identities:
        by_kind.setdefault(str(kind), []).append(str(name))
    if by_kind.get("n"):
        yield Item(
            "replica identity",
            Status.WARN,
            f"REPLICA IDENTITY NOTHING on {', '.join(by_kind['n'])}: their updates and deletes are not streamed",
            "ALTER TABLE … REPLICA IDENTITY DEFAULT (the owner)",
        )
    if by_kind.get("d") or by_kind.get("i"):
        tables = sorted(by_kind.get("d", []) + by_kind.get("i", []))
        yield Item(
            "replica identity",
            Status.OK,
            f"DEFAULT on {', '.join(tables)}: deletes carry the key only, updates no old row — allocguard reads "
            "old rows from the database, never from a before-image",
        )
    if by_kind.get("f"):
        yield Item("replica identity", Status.OK, f"FULL on {', '.join(sorted(by_kind['f']))}")


# ---- Kafka and Connect ------------------------------------------------------------------------------


KAFKA_CONFIG_FIX = "fix ALLOCGUARD_KAFKA_CONFIG (librdkafka properties, e.g. security.protocol)"


def kafka_items(target: Target) -> Iterator[Item]:
    if target.bootstrap is None:
        return
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient({"bootstrap.servers": target.bootstrap, **target.kafka_config, "logger": kafka_log})  # type: ignore[dict-item]
    except KafkaException as exc:
        yield Item("kafka", Status.FAIL, f"invalid client configuration: {exc.args[0].str()}", KAFKA_CONFIG_FIX)
        return
    try:
        metadata = admin.list_topics(timeout=5)
    except Exception as exc:  # KafkaException and its transport errors
        yield Item(
            "kafka",
            Status.FAIL,
            f"no metadata from {target.bootstrap}: {exc}",
            "check ALLOCGUARD_KAFKA_BOOTSTRAP and ALLOCGUARD_KAFKA_CONFIG (security settings)",
            unavailable="kafka",
        )
        return
    yield Item("kafka", Status.OK, f"{len(metadata.brokers)} broker(s) at {target.bootstrap}")
    missing = [t for t in target.topics if t not in metadata.topics]
    if missing:
        yield Item(
            "topics",
            Status.FAIL,
            f"missing: {', '.join(missing)}",
            "register the connector (`allocguard connector register`) or check ALLOCGUARD_TOPIC_PREFIX/TABLES",
        )
    else:
        yield Item("topics", Status.OK, ", ".join(target.topics))
    if target.dlq_topic and target.dlq_topic not in metadata.topics:
        yield Item(
            "dead-letter topic",
            Status.WARN,
            f"{target.dlq_topic} does not exist (it is created on first use only if the broker allows it)",
            f"create {target.dlq_topic} with the retention you want for undecodable messages",
        )


def connector_items(target: Target) -> Iterator[Item]:
    if not target.connect_url or not target.connector_name:
        yield Item(
            "connector",
            Status.WARN,
            "not checked (no ALLOCGUARD_CONNECT_URL)",
            "set ALLOCGUARD_CONNECT_URL to have the connector's and its task's state checked",
        )
        return
    url = f"{target.connect_url}/connectors/{target.connector_name}/status"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (an operator-given http URL)
            body = json.loads(response.read().decode())
    except urllib.error.HTTPError as exc:
        yield Item(
            "connector",
            Status.FAIL,
            f"{target.connector_name}: HTTP {exc.code} from Kafka Connect",
            "`allocguard connector register`",
        )
        return
    except (urllib.error.URLError, OSError, ValueError) as exc:
        yield Item(
            "connector", Status.FAIL, f"Kafka Connect at {target.connect_url} unreachable: {exc}", unavailable="connect"
        )
        return
    items = list(connector_state_items(target.connector_name, body))
    yield from items
    if all(i.status is Status.OK for i in items) and target.bootstrap is not None:
        yield from _heartbeat_items(target)


def _heartbeat_items(target: Target) -> Iterator[Item]:
    """RUNNING is not streaming: Debezium retries a failed snapshot (every 10 s, forever) under a RUNNING task.
    The connector's heartbeats, sent only while it streams, tell the difference."""
    url = f"{target.connect_url}/connectors/{target.connector_name}/config"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (an operator-given http URL)
            config = json.loads(response.read().decode())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        yield Item("heartbeat", Status.WARN, f"connector config unreadable: {exc}")
        return
    interval_ms = int(config.get("heartbeat.interval.ms") or 0)
    if interval_ms <= 0:
        yield Item(
            "heartbeat",
            Status.WARN,
            "heartbeat.interval.ms is not set: whether the connector streams cannot be told",
            "set heartbeat.interval.ms (deploy/debezium/platform-connector.json sets 10000)",
        )
        return
    topic = f"__debezium-heartbeat.{config.get('topic.prefix', '')}"
    age = last_message_age(target, topic)
    allowed = max(3 * interval_ms / 1000, 15.0)
    if age is None:
        yield Item(
            "heartbeat",
            Status.FAIL,
            f"RUNNING, but no heartbeat ever reached {topic}: the initial snapshot has not finished (Debezium "
            "retries a failed snapshot under a RUNNING task)",
            "see the Connect log for the task; `allocguard connector register` names a snapshot's cause",
            unavailable="connect",
        )
    elif age > allowed:
        yield Item(
            "heartbeat",
            Status.FAIL,
            f"RUNNING, but the last heartbeat is {age:.0f}s old (interval {interval_ms / 1000:.0f}s): not streaming",
            "see the Connect log for the task (a restart loop after a retriable error looks RUNNING)",
            unavailable="connect",
        )
    else:
        yield Item("heartbeat", Status.OK, f"streaming (last heartbeat {age:.1f}s ago)")


def last_message_age(target: Target, topic: str) -> float | None:
    """Seconds since the newest message of ``topic`` was written; None when it has none."""
    import time

    newest: float | None = None
    for message in newest_messages(target, topic):
        _, stamp = message.timestamp()
        newest = max(newest or 0.0, stamp / 1000)
    return None if newest is None else time.time() - newest


#: the platform's guest columns: allocguard never needs them, so they must never leave the database
GUEST_COLUMNS = ("customer_name", "customer_email", "customer_phone", "notes")


def guest_data_items(target: Target) -> Iterator[Item]:
    """Whether the newest change events of the consumed topics carry guest columns (the connector's
    ``column.exclude.list`` should keep them in the database: a dead-lettered copy would carry them on)."""
    if target.bootstrap is None:
        return
    carrying: dict[str, set[str]] = {}
    for topic in (t for t in target.topics if t.endswith(".public.bookings")):  # the guest columns are bookings'
        for message in newest_messages(target, topic):
            found = _guest_columns(message.value())
            if found:
                carrying.setdefault(topic, set()).update(found)
    if carrying:
        named = "; ".join(f"{topic}: {', '.join(sorted(cols))}" for topic, cols in sorted(carrying.items()))
        yield Item(
            "guest data",
            Status.WARN,
            f"change events carry guest columns allocguard never needs ({named})",
            "add them to the connector's column.exclude.list (deploy/debezium/platform-connector.json excludes "
            + ", ".join(f"public.bookings.{c}" for c in GUEST_COLUMNS)
            + ")",
        )
    else:
        yield Item("guest data", Status.OK, "no guest columns in the newest change events of the consumed topics")


def _guest_columns(value: bytes | None) -> set[str]:
    if not value:
        return set()
    try:
        doc = json.loads(value)
    except ValueError:
        return set()
    if isinstance(doc, dict) and "payload" in doc and "schema" in doc:
        doc = doc["payload"]
    rows = [doc.get("before"), doc.get("after")] if isinstance(doc, dict) else []
    return {column for row in rows if isinstance(row, dict) for column in GUEST_COLUMNS if column in row}


def newest_messages(target: Target, topic: str) -> list[Message]:
    """The newest message of each partition of ``topic`` (none for an empty or missing topic)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": target.bootstrap,
            "group.id": "allocguard-check",
            "enable.auto.commit": False,
            **target.kafka_config,
            "logger": kafka_log,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=5)
        partitions = metadata.topics.get(topic)
        if partitions is None or partitions.error is not None:
            return []
        found: list[Message] = []
        for partition in partitions.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, partition, high - 1)])
            message = consumer.poll(5)
            if message is not None and message.error() is None:
                found.append(message)
        return found
    except KafkaException:
        return []
    finally:
        consumer.close()


def connector_state_items(name: str, body: dict[str, Any]) -> Iterator[Item]:
    """The connector's and its tasks' states, with a failed task's own error trace (its first lines)."""
    state = body.get("connector", {}).get("state", "?")
    tasks = body.get("tasks") or []
    failed = [t for t in tasks if t.get("state") == "FAILED"]
    if failed:
        trace = str(failed[0].get("trace", ""))
        yield Item(
            "connector",
            Status.FAIL,
            f"{name}: task {failed[0].get('id')} FAILED: {task_error(trace)}",
            "fix the cause, then POST /connectors/<name>/tasks/<id>/restart (or `allocguard connector register`)",
            unavailable="connect",
        )
    elif state != "RUNNING" or not tasks or any(t.get("state") != "RUNNING" for t in tasks):
        summary = ",".join(str(t.get("state")) for t in tasks) or "no tasks"
        yield Item("connector", Status.FAIL, f"{name}: connector {state}, tasks {summary}", unavailable="connect")
    else:
        yield Item("connector", Status.OK, f"{name}: connector and {len(tasks)} task(s) RUNNING")


def task_error(trace: str) -> str:
    """The most telling line of a Connect task trace: the innermost 'Caused by', else the first line."""
    lines = [line.strip() for line in trace.splitlines() if line.strip()]
    causes = [line for line in lines if line.startswith("Caused by:")]
    chosen = causes[-1] if causes else (lines[0] if lines else "no trace")
    return redact(chosen)[:400]


def run_checks(target: Target, *, guest_data: bool = True) -> Report:
    """Every check; ``guest_data`` reads the newest message of each partition of the consumed topics (for
    ``allocguard check``; ``run``'s start-up leaves it out: seconds a restart need not wait)."""
    report = Report()
    report.items.extend(database_items(target))
    report.items.extend(kafka_items(target))
    if guest_data and any(item.name == "kafka" and item.status is Status.OK for item in report.items):
        report.items.extend(guest_data_items(target))
    report.items.extend(connector_items(target))
    return report
