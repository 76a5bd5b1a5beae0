"""``connector register`` posts deploy/debezium's JSON as written: ``--dry-run`` prints exactly the file with the
per-site values substituted (and connects to nothing: closed ports), a diff never shows a literal password."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from consumer.operations.connector import config_diff, production_config
from tests.support.process import run_cli

ROOT = Path(__file__).resolve().parents[2]
FILE = json.loads((ROOT / "deploy/debezium/platform-connector.json").read_text())
CLOSED = {"ALLOCGUARD_CONNECT_URL": "http://127.0.0.1:1", "ALLOCGUARD_KAFKA_BOOTSTRAP": "127.0.0.1:1"}


def register(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("connector", "register", *args, env={"PATH": "/usr/bin:/bin", **CLOSED, **(env or {})})


def test_dry_run_prints_the_file_as_written() -> None:
    done = register("--dry-run")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed == FILE
    assert list(printed) == list(FILE), "the file's key order"


def test_dry_run_substitutes_only_the_per_site_values() -> None:
    site = {
        "--db-host": "db.prod.internal",
        "--db-port": "6432",
        "--db-name": "bookings",
        "--db-user": "cdc_reader",
        "--db-password": "${secrets:kafka/platform-db-cdc:password}",
    }
    done = register("--dry-run", *[part for pair in site.items() for part in pair])
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    changed = {key for key in FILE if printed[key] != FILE[key]}
    assert changed == {"database.hostname", "database.port", "database.dbname", "database.user", "database.password"}
    assert printed["database.hostname"] == "db.prod.internal"
    assert printed["database.port"] == "6432"
    assert printed["topic.creation.default.replication.factor"] == FILE["topic.creation.default.replication.factor"]
    assert "column.exclude.list" in printed, "guest columns stay excluded"


def test_without_where_to_post_it_names_the_settings() -> None:
    done = register(env={"ALLOCGUARD_CONNECT_URL": "", "ALLOCGUARD_KAFKA_BOOTSTRAP": ""})
    assert done.returncode == 2
    assert "ALLOCGUARD_CONNECT_URL (or --connect-url)" in done.stderr
    assert "ALLOCGUARD_KAFKA_BOOTSTRAP (or --kafka-bootstrap)" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_diff_never_shows_a_literal_password() -> None:
    current = production_config(db_password="old-literal")
    wanted = production_config(db_password="${file:/opt/kafka/secrets/db.properties:password}", db_host="h2")
    lines = config_diff({**current, "name": "platform-cdc"}, wanted)
    assert "- database.password: ********" in lines
    assert "+ database.password: ${file:/opt/kafka/secrets/db.properties:password}" in lines
    assert f"- database.hostname: {FILE['database.hostname']}" in lines
    assert "+ database.hostname: h2" in lines
    assert len(lines) == 4, "name is Connect's own; nothing else differs"
    assert not any("old-literal" in line for line in lines)


def test_only_per_site_settings_can_be_substituted() -> None:
    with pytest.raises(ValueError, match="not a per-site setting"):
        production_config(replication_factor="1")
