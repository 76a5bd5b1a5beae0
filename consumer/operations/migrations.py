"""``allocguard db init``: allocguard's versioned migrations, and (locally) the platform's reference model.

Migrations are ``deploy/sql/allocguard/V<NNN>__<name>.sql``, applied in order inside one transaction each,
recorded in ``allocguard.schema_migrations`` with their checksum. Re-running is a no-op; a changed file that
was already applied is refused. A transaction-level advisory lock makes concurrent runs safe.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from consumer.config import deploy_dir

_MIGRATION_NAME = re.compile(r"^V(\d{3,})__([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x616C6C6F  # "allo"


class MigrationError(RuntimeError):
    retryable = False


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(folder: Path | None = None) -> list[Migration]:
    folder = folder or deploy_dir() / "sql" / "allocguard"
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named V<NNN>__<name>.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {folder}")
    return found


def _run_sql_files(conn: psycopg.Connection[tuple[object, ...]], files: list[Path]) -> None:
    for path in files:
        conn.execute(path.read_text().encode())  # our own static files, no parameters


def load_reference_schema(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    """Load the platform's reference model once. True when it was loaded now."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        row = conn.execute(
            "SELECT to_regclass('public.allocations') IS NOT NULL, to_regclass('public.customers') IS NOT NULL"
        ).fetchone()
        if row is not None and row[0]:
            if not row[1]:
                raise MigrationError(
                    "this database holds an older reference model (no row-level security, no customers table); "
                    "drop it (`make clean` for the local stack) and start again"
                )
            return False
        _run_sql_files(conn, sorted((deploy_dir() / "sql" / "platform").glob("*.sql")))
    return True


def ensure_cdc_publication(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """The CDC role and publication Debezium streams from (idempotent)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        _run_sql_files(conn, sorted((deploy_dir() / "sql" / "cdc").glob("*.sql")))


def ensure_login_role(
    conn: psycopg.Connection[Any], name: str, password: str | None = None, member_of: str = "allocguard_remediator"
) -> None:
    """A login role: LOGIN, a member of ``member_of`` and of nothing else, never BYPASSRLS — allocguard's own
    (allocguard_remediator), or a person's for ``allocguard undo`` (allocguard_undo, V016). Created when missing;
    the password is set when given (parameterised through a quoted literal)."""
    role = sql.Identifier(name)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
        if exists is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOBYPASSRLS").format(role))
        if password:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(role, sql.Literal(password)))
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(member_of), role))


def ensure_local_roles(admin_dsn: str, *, app_user: str, undo_user: str | None = None) -> None:
    """The local stack's roles: ``app_user`` as an operator creates it at the platform (see README), and the
    platform's service role may read and reset allocguard's records, so the simulator can replay a scenario and
    the tests can check the records (deploy/local/roles.sql)."""
    with psycopg.connect(admin_dsn) as conn:
        ensure_login_role(conn, app_user)
        if undo_user:
            ensure_login_role(conn, undo_user, member_of="allocguard_undo")
        with conn.transaction():
            conn.execute((deploy_dir() / "local" / "roles.sql").read_bytes())  # our own static file


def migrate(conn: psycopg.Connection[tuple[object, ...]], migrations: list[Migration] | None = None) -> list[str]:
    """Apply pending allocguard migrations; return the names applied now."""
    migrations = discover() if migrations is None else migrations
    applied_now: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute("CREATE SCHEMA IF NOT EXISTS allocguard")
        conn.execute(
            """CREATE TABLE IF NOT EXISTS allocguard.schema_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 checksum text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {
            int(str(version)): str(checksum)
            for version, checksum in conn.execute("SELECT version, checksum FROM allocguard.schema_migrations")
        }
        for migration in migrations:
            known = done.get(migration.version)
            if known is not None:
                if known != migration.checksum:
                    raise MigrationError(
                        f"V{migration.version:03d}__{migration.name} was changed after it was applied; "
                        "add a new migration instead"
                    )
                continue
            conn.execute(migration.text.encode())
            conn.execute(
                "INSERT INTO allocguard.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
            applied_now.append(f"V{migration.version:03d}__{migration.name}")
    return applied_now


def ensure_database(admin_dsn: str, database: str) -> bool:
    """Create ``database`` on the server of ``admin_dsn`` if missing. True when created now."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        return True


def init_database(
    dsn: str,
    *,
    with_reference_schema: bool,
    with_cdc: bool,
    login_role: str | None = None,
    login_password: str | None = None,
) -> list[str]:
    """Everything ``allocguard db init`` does; returns what it did, for printing."""
    done: list[str] = []
    with psycopg.connect(dsn) as conn:
        if with_reference_schema and load_reference_schema(conn):
            done.append("loaded the platform reference schema")
        if with_cdc:
            ensure_cdc_publication(conn)
            done.append("ensured CDC role allocguard_cdc and publication allocguard_platform")
        applied = migrate(conn)
        done.append(f"applied migrations: {', '.join(applied)}" if applied else "migrations up to date")
        if login_role:
            ensure_login_role(conn, login_role, login_password)
            done.append(f"ensured login role {login_role} (member of allocguard_remediator only)")
    return done
