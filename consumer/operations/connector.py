"""``allocguard connector register``: the Debezium connector of ``deploy/debezium`` posted as written.

Only what differs per site is substituted (the database's host, port, name and user, the password — a Connect
config-provider reference, as the file has it, or a literal — and, for a second consumer of one database, the topic
prefix and the slot). Nothing of the local stack reaches a production connector: its overlay (one broker's
replication factor, its partitions, trust auth) lives in ``consumer/local`` and is laid over this config there.

Before Connect is asked, every captured table is read as the connector's role, the way the snapshot will read it
(Debezium treats a failed snapshot as retriable: the task restarts every 10 s under a RUNNING status, so Connect
itself never says so). An existing connector whose config would change is shown as a diff and changed only with
``--yes``. Then it waits for RUNNING and the connector's first heartbeat (streaming).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import psycopg
from confluent_kafka import Consumer
from psycopg import sql as pgsql

from consumer.config import deploy_dir
from consumer.redact import redact
from consumer.runtime.health import kafka_log
from consumer.runtime.offsets import end_positions
from schemas.envelope import HEARTBEAT_TOPIC_PREFIX

#: settings a site may change; everything else is posted exactly as deploy/debezium has it
PER_SITE = {
    "db_host": "database.hostname",
    "db_port": "database.port",
    "db_name": "database.dbname",
    "db_user": "database.user",
    "db_password": "database.password",
    "topic_prefix": "topic.prefix",
    "slot_name": "slot.name",
}


class ConnectorError(RuntimeError):
    """The connector could not be registered, or does not stream: the message says why."""


class ConnectorUnreachable(ConnectorError):
    """Kafka Connect's REST API does not answer (a dependency unavailable: exit 3)."""


def as_written() -> dict[str, str]:
    """``deploy/debezium/platform-connector.json``, key order kept."""
    config: dict[str, str] = json.loads((deploy_dir() / "debezium" / "platform-connector.json").read_text())
    return config


def production_config(**site: str | int | None) -> dict[str, str]:
    """The file's config with the given per-site values (keys of :data:`PER_SITE`) substituted."""
    unknown = set(site) - set(PER_SITE)
    if unknown:
        raise ValueError(f"not a per-site setting: {', '.join(sorted(unknown))}")
    config = as_written()
    for name, value in site.items():
        if value is not None:
            config[PER_SITE[name]] = str(value)
    return config


def _secret(key: str, value: str) -> str:
    """A password shown in a diff: a provider reference as it is, a literal never."""
    return value if "password" not in key or value.startswith("${") else "********"


def config_diff(current: dict[str, str], wanted: dict[str, str]) -> list[str]:
    """``-``/``+`` lines for every key that differs (``name`` is Connect's own, not compared)."""
    lines: list[str] = []
    for key in sorted((set(current) | set(wanted)) - {"name"}):
        old, new = current.get(key), wanted.get(key)
        if old == new:
            continue
        if old is not None:
            lines.append(f"- {key}: {_secret(key, old)}")
        if new is not None:
            lines.append(f"+ {key}: {_secret(key, new)}")
    return lines


def request(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 10.0) -> tuple[int, Any]:
    """One call of a REST API: (status, JSON body or text); an unreachable server raises OSError (URLError)."""
    data = json.dumps(body).encode() if body is not None else None
    call = urllib.request.Request(  # noqa: S310 (callers check the scheme)
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(call, timeout=timeout) as response:  # noqa: S310 (callers check the scheme)
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return exc.code, raw.decode(errors="replace")


def rest(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 10.0) -> tuple[int, Any]:
    """Kafka Connect's REST API: (status, JSON body or text); unreachable is a :class:`ConnectorError`."""
    if not url.startswith(("http://", "https://")):
        raise ConnectorError(f"Kafka Connect URL must be http(s): {redact(url)}")
    try:
        return request(method, url, body, timeout)
    except OSError as exc:
        raise ConnectorUnreachable(f"Kafka Connect at {redact(url)} unreachable: {exc}") from None


def current_config(connect_url: str, name: str) -> dict[str, str] | None:
    status, body = rest("GET", f"{connect_url}/connectors/{name}/config")
    if status == 404:
        return None
    if status != 200 or not isinstance(body, dict):
        raise ConnectorError(f"reading connector {name} failed ({status}): {body}")
    return {str(k): str(v) for k, v in body.items()}


def snapshot_problems(config: dict[str, str]) -> list[str]:
    """What the connector's initial snapshot would run into, found by doing what it does — a SELECT of every
    captured table as the connector's own role — before Connect is asked."""
    password = config.get("database.password", "")
    params = {
        "host": config["database.hostname"],
        "port": config["database.port"],
        "user": config["database.user"],
        "dbname": config["database.dbname"],
        "connect_timeout": "5",
    }
    if password and not password.startswith("${"):  # a Connect config provider reference is not a password
        params["password"] = password
    problems: list[str] = []
    try:
        conn = psycopg.connect(**params, autocommit=True)  # type: ignore[arg-type]
    except psycopg.Error as exc:
        return [f"cannot connect: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"]
    with conn:
        for qualified in [t.strip() for t in config.get("table.include.list", "").split(",") if t.strip()]:
            schema, _, table = qualified.partition(".")
            try:
                with conn.transaction():
                    conn.execute(pgsql.SQL("SELECT * FROM {} LIMIT 1").format(pgsql.Identifier(schema, table)))
                    active = conn.execute("SELECT row_security_active(%s)", (qualified,)).fetchone()
                    own = conn.execute(
                        "SELECT count(*) FROM pg_policies p WHERE p.schemaname = %s AND p.tablename = %s"
                        " AND p.cmd IN ('SELECT', 'ALL') AND EXISTS (SELECT 1 FROM unnest(p.roles) r"
                        " WHERE r <> 'public' AND pg_has_role(current_user, r, 'MEMBER'))",
                        (schema, table),
                    ).fetchone()
                if active and active[0] and own and not own[0]:
                    problems.append(
                        f"{qualified}: row-level security is on and no policy names this role — the snapshot would "
                        f"read 0 rows, silently (`allocguard db init --with-cdc` creates allocguard_cdc_snapshot)"
                    )
            except psycopg.Error as exc:
                problems.append(f"{qualified}: {str(exc).strip().splitlines()[0]}")
    return problems


def running(connect_url: str, name: str) -> bool:
    """True when the connector and all its tasks run; a FAILED task raises with its own error."""
    from consumer.operations.check import task_error

    status, body = rest("GET", f"{connect_url}/connectors/{name}/status")
    if status != 200 or not isinstance(body, dict):
        return False
    tasks = body.get("tasks") or []
    for task in tasks:
        if task.get("state") == "FAILED":
            trace = str(task.get("trace", ""))
            raise ConnectorError(f"connector {name} task {task.get('id')} failed: {task_error(trace)}\n{trace[:4000]}")
    return (
        body.get("connector", {}).get("state") == "RUNNING"
        and bool(tasks)
        and all(t.get("state") == "RUNNING" for t in tasks)
    )


def register(
    connect_url: str, bootstrap: str, name: str, config: dict[str, str], timeout_s: float = 120.0, **kafka: str
) -> None:
    """PUT the config, then wait for RUNNING and a heartbeat newer than the call (the snapshot is done)."""
    problems = snapshot_problems(config)
    if problems:
        raise ConnectorError(
            f"connector {name}: its initial snapshot would fail as {config['database.user']}:\n  "
            + "\n  ".join(problems)
        )
    heartbeats = f"{HEARTBEAT_TOPIC_PREFIX}.{config['topic.prefix']}"
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"allocguard-register-{uuid.uuid4()}",
            **kafka,
            "logger": kafka_log,
        }
    )
    try:
        try:
            marks = end_positions(reader, [heartbeats], timeout=10)
        except Exception:
            marks = []
        status, body = rest("PUT", f"{connect_url}/connectors/{name}/config", config, timeout=30)
        if status not in (200, 201):
            raise ConnectorError(f"registering connector {name} failed ({status}): {body}")
        deadline = time.monotonic() + timeout_s
        while not running(connect_url, name):
            if time.monotonic() > deadline:
                raise ConnectorError(f"connector {name} not RUNNING after {timeout_s:.0f}s")
            time.sleep(0.5)
        if marks:
            reader.assign(marks)
        else:
            reader.subscribe([heartbeats])
        checked = time.monotonic()
        while time.monotonic() < deadline:
            message = reader.poll(0.5)
            if message is not None and message.error() is None:
                return
            if time.monotonic() - checked >= 1.0:  # a snapshot that fails fails the task: say so at once
                checked = time.monotonic()
                running(connect_url, name)
        raise ConnectorError(f"connector {name}: no heartbeat on {heartbeats} after {timeout_s:.0f}s (not streaming)")
    finally:
        reader.close()
