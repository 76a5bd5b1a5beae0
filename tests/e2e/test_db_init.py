"""``allocguard db init`` on a fresh database: idempotent, and refuses an applied migration that changed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from consumer.cli import main
from consumer.local.settings import StackSettings
from consumer.operations import migrations as db

pytestmark = [pytest.mark.e2e, pytest.mark.stack]


@pytest.fixture
def fresh_db(stack_settings: StackSettings, unique: str) -> Iterator[str]:
    name = f"dbinit_{unique}"
    admin = stack_settings.dsn_for("postgres")
    assert db.ensure_database(admin, name)
    yield stack_settings.dsn_for(name)  # the owner: `db init` is the operator's job
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_init_twice_through_the_cli(fresh_db: str) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["db", "init", "--dsn", fresh_db, "--with-reference-schema", "--with-cdc"])
    assert first.exit_code == 0, first.output
    assert "loaded the platform reference schema" in first.output
    expected = [(m.version, m.name) for m in db.discover()]
    assert len(expected) >= 5
    assert "applied migrations: " + ", ".join(f"V{v:03d}__{n}" for v, n in expected) in first.output
    second = runner.invoke(main, ["db", "init", "--dsn", fresh_db, "--with-reference-schema", "--with-cdc"])
    assert second.exit_code == 0, second.output
    assert "loaded the platform reference schema" not in second.output
    assert "migrations up to date" in second.output
    with psycopg.connect(fresh_db) as conn:
        versions = conn.execute("SELECT version, name FROM allocguard.schema_migrations").fetchall()
        assert versions == expected
        constraint = conn.execute(
            "SELECT condeferrable, condeferred, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conname = 'allocations_no_overlap'"
        ).fetchone()
        assert constraint is not None
        deferrable, deferred, definition = constraint
        assert (deferrable, deferred) == (True, False), "DEFERRABLE INITIALLY IMMEDIATE"
        assert "restaurant_id WITH =" in definition
        assert "WHERE ((NOT shadow))" in definition
        # as hostile as the platform: default replica identity, row-level security, and allocguard's own
        # policies for its two roles (not BYPASSRLS)
        captured = conn.execute(
            "SELECT c.relname, c.relreplident, c.relrowsecurity FROM pg_publication_tables p"
            " JOIN pg_class c ON c.relname = p.tablename WHERE p.pubname = 'allocguard_platform' ORDER BY 1"
        ).fetchall()
        assert len(captured) == 8
        assert {identity for _, identity, _ in captured} == {"d"}
        assert {name for name, _, rls in captured if not rls} == {"observability_events"}
        policies = conn.execute(
            "SELECT tablename, policyname FROM pg_policies WHERE roles @> ARRAY['allocguard_remediator'::name]"
            " ORDER BY 1, 2"
        ).fetchall()
        assert ("allocations", "allocguard_remediator_delete") in policies
        assert ("bookings", "allocguard_remediator_update") in policies
        attributes = conn.execute(
            "SELECT rolname, rolbypassrls, rolsuper FROM pg_roles"
            " WHERE rolname IN ('allocguard_remediator', 'allocguard_cdc') ORDER BY 1"
        ).fetchall()
        assert attributes == [("allocguard_cdc", False, False), ("allocguard_remediator", False, False)]


def test_a_changed_applied_migration_is_refused(fresh_db: str, tmp_path: Path) -> None:
    db.init_database(fresh_db, with_reference_schema=True, with_cdc=False)
    with psycopg.connect(fresh_db) as conn:
        edited = tmp_path / "V001__schema.sql"
        edited.write_text("CREATE SCHEMA IF NOT EXISTS allocguard; -- edited after release\n")
        with pytest.raises(db.MigrationError, match="changed after it was applied"):
            db.migrate(conn, [db.Migration(1, "schema", edited)])


def test_migration_files_follow_the_naming_rule(tmp_path: Path) -> None:
    (tmp_path / "001_bad.sql").write_text("SELECT 1;")
    with pytest.raises(db.MigrationError, match=r"V<NNN>__<name>\.sql"):
        db.discover(tmp_path)
