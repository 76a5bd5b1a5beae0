"""The local stack, natively, without Docker: PostgreSQL → Debezium (Kafka Connect) → Kafka.

- PostgreSQL from Debian's packages (installed when missing), a throwaway cluster with ``wal_level=logical``
  on its own port, run as the ``postgres`` user when we are root (the server refuses root);
- Apache Kafka (KRaft, one broker+controller) and Kafka Connect with the Debezium PostgreSQL connector,
  from Maven Central jars collected by ``mvn dependency:copy-dependencies`` on the poms in ``deploy/local``;
- the connector registered from ``deploy/debezium/platform-connector.json`` with local overrides.

``up`` is idempotent and waits for real readiness (a metadata answer from the broker, the connector plugin
listed, connector and task RUNNING, and a fresh Debezium heartbeat, which is only sent once the snapshot is
done and the connector streams). ``down`` stops only processes whose pid files this manager wrote.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from consumer.config import deploy_dir
from consumer.local.settings import StackSettings
from consumer.operations import migrations as db
from consumer.operations.connector import ConnectorError, production_config, register, request, running
from schemas.envelope import HEARTBEAT_TOPIC_PREFIX
from schemas.rows import CAPTURED

Log = Callable[[str], None]


class StackError(RuntimeError):
    """The local stack could not be brought to the requested state. Not retryable by itself."""

    retryable = False


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    running: bool
    pid: int | None
    endpoint: str
    detail: str = ""


def _is_root() -> bool:
    return os.geteuid() == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours is not alive
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait(
    what: str, check: Callable[[], bool], timeout: float, *, alive: Callable[[], str | None] | None = None
) -> None:
    """Poll ``check`` until it is true; fail early if ``alive`` reports the process died."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        if check():
            return
        if alive is not None:
            death = alive()
            if death is not None:
                raise StackError(f"{what}: {death}")
        if time.monotonic() > deadline:
            raise StackError(f"{what}: not ready after {timeout:.0f}s")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(content[-lines:])


def _kafka_cluster_id() -> str:
    """The same form as Kafka's ``Uuid.randomUuid()``: URL-safe base64 of 16 random bytes, no padding — and, as
    Kafka's own generator does, never starting with ``-`` (the storage tool would read it as an option; one id in
    64 did, seen in CI)."""
    while True:
        cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster.startswith("-"):
            return cluster


def _write_properties(path: Path, values: dict[str, str]) -> None:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))


def _http(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 5.0) -> tuple[int, Any]:
    if not url.startswith("http://"):
        raise StackError(f"only plain http loopback URLs are used here: {url}")
    return request(method, url, body, timeout)


def captured_topics(prefix: str) -> list[str]:
    return [f"{prefix}.{table}" for table in CAPTURED]


def heartbeat_topic(prefix: str) -> str:
    return f"{HEARTBEAT_TOPIC_PREFIX}.{prefix}"


def dlq_topic(prefix: str) -> str:
    return f"{prefix}.allocguard.dlq"


def connector_config(
    settings: StackSettings,
    *,
    database: str | None = None,
    topic_prefix: str | None = None,
    value_schemas_enable: bool | None = None,
    hostname: str = "127.0.0.1",
    port: int | None = None,
    user: str = "allocguard_cdc",
    password: str = "local-trust-auth",  # noqa: S107 (the local cluster uses trust auth; ignored)
    heartbeat_interval_ms: int | None = None,
) -> dict[str, str]:
    """The production connector config (``deploy/debezium``, per-site values substituted) with the local stack's
    overlay laid over it: one broker (replication factor 1), this stack's partitions and heartbeat, a slot per
    database and prefix. Only the local stack uses this; ``connector register`` posts the file as written."""
    prefix = topic_prefix or settings.topic_prefix
    dbname = database or settings.pg_database
    schemas_enable = settings.value_schemas_enable if value_schemas_enable is None else value_schemas_enable
    slot = "allocguard_" + "".join(ch if ch.isalnum() else "_" for ch in f"{dbname}_{prefix}".lower())
    config = production_config(
        db_host=hostname,
        db_port=port or settings.pg_port,
        db_name=dbname,
        db_user=user,
        db_password=password,
        topic_prefix=prefix,
        slot_name=slot[:63],
    )
    config.update(
        {
            "heartbeat.interval.ms": str(heartbeat_interval_ms or settings.heartbeat_interval_ms),
            "value.converter.schemas.enable": "true" if schemas_enable else "false",
            "topic.creation.default.replication.factor": "1",
            "topic.creation.default.partitions": str(settings.topic_partitions),
        }
    )
    return config


class LocalStack:
    """Brings the native stack up and down. All state lives under ``settings.stack_dir``."""

    def __init__(self, settings: StackSettings, log: Log = print) -> None:
        self.settings = settings
        self.log = log
        self.dir = settings.stack_dir.resolve()
        self.run_dir = self.dir / "run"
        self.logs_dir = self.dir / "logs"

    # ---- paths ---------------------------------------------------------------------------------

    def _pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    @property
    def pg_root(self) -> Path:
        """PostgreSQL's folder: under the stack dir, or, when the ``postgres`` user cannot reach it, /var/tmp."""
        inside = self.dir / "pg"
        if not _is_root() or self._postgres_can_write(inside):
            return inside
        digest = hashlib.sha1(str(self.dir).encode()).hexdigest()[:10]  # noqa: S324 (a folder name, not security)
        return Path("/var/tmp") / f"allocguard-pg-{digest}"  # noqa: S108 (owned by postgres, per stack)

    def _postgres_can_write(self, folder: Path) -> bool:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.chown(folder, "postgres", "postgres")
        probe = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-w", str(folder)], check=False)
        return probe.returncode == 0

    # ---- prerequisites -------------------------------------------------------------------------

    def _apt_install(self, *packages: str) -> None:
        if not _is_root() or shutil.which("apt-get") is None:
            names = " ".join(packages)
            raise StackError(f"missing {names}: install it (e.g. apt-get install -y {names})")
        self.log(f"installing {' '.join(packages)} with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-q", *packages], check=True, env=env, stdout=subprocess.DEVNULL)

    def _tool(self, package: str, *names: str) -> str:
        """The first of ``names`` on PATH; Debian's ``package`` installed when none is (as root)."""
        found = next((path for name in names if (path := shutil.which(name))), None)
        if found is None:
            self._apt_install(package)
            found = shutil.which(names[0])
        if found is None:
            raise StackError(f"{names[0]} not found after installing {package}")
        return found

    def _java(self) -> str:
        return self._tool("openjdk-17-jre-headless", "java")

    def chromium(self) -> str:
        """Headless Chromium for the trace-UI check: Debian's package, installed when missing (as root)."""
        return self._tool("chromium", "chromium", "chromium-browser")

    def _pg_bin(self) -> Path:
        def find() -> Path | None:
            candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
            preferred = [p for p in candidates if p.parts[-3] == "15"] or candidates[-1:]
            return preferred[0].parent if preferred else None

        found = find()
        if found is None:
            self._apt_install("postgresql", "postgresql-contrib")
            found = find()
        if found is None:
            raise StackError("PostgreSQL binaries not found under /usr/lib/postgresql after installing postgresql")
        return found

    def jars(self, kind: str, folder: Path | None = None) -> Path:
        """Collect (once) the jars of ``deploy/local/<kind>/pom.xml`` (or ``folder``'s); the folder holding them."""
        pom = (folder or deploy_dir() / "local" / kind) / "pom.xml"
        digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
        target = self.settings.jar_cache_dir / f"{kind}-{digest}"
        marker = target / ".complete"
        if marker.exists():
            return target
        mvn = shutil.which("mvn")
        if mvn is None:
            self._apt_install("maven")
            mvn = shutil.which("mvn")
        if mvn is None:
            raise StackError("mvn not found after installing maven")
        self.log(f"collecting {kind} jars from Maven Central into {target}")
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        result = subprocess.run(
            [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={staging}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"mvn failed for {pom}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        marker.write_text(pom.read_text())
        return target

    def jaeger_binary(self) -> Path:
        """Build (once) Jaeger from ``deploy/local/jaeger``'s pinned go.mod; cached by the hash of go.mod + go.sum."""
        from consumer.local.gotools import GoToolError, go_tool

        source = deploy_dir() / "local" / "jaeger"
        try:
            return go_tool(
                source, "github.com/jaegertracing/jaeger/cmd/jaeger", "jaeger", self.settings.tool_cache_dir, self.log
            )
        except GoToolError as exc:
            raise StackError(str(exc)) from None

    # ---- processes -----------------------------------------------------------------------------

    def _running_pid(self, name: str, marker: str) -> int | None:
        """The pid from our pid file, if that process is alive and is still the one we started."""
        pid_file = self._pid_file(name)
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if _pid_alive(pid) and marker in _cmdline(pid):
            return pid
        return None

    def _spawn(self, name: str, command: list[str], cwd: Path, env: dict[str, str] | None = None) -> int:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        out = (self.logs_dir / f"{name}.out").open("ab")
        process = subprocess.Popen(
            command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        out.close()
        self._pid_file(name).write_text(str(process.pid))
        return process.pid

    def _death_reporter(self, name: str, pid: int, log_file: Path) -> Callable[[], str | None]:
        def report() -> str | None:
            if _pid_alive(pid):
                return None
            return f"process {pid} exited; last lines of {log_file}:\n{_tail(log_file)}"

        return report

    def _stop_pid(self, name: str, marker: str, grace: float = 30.0) -> bool:
        pid = self._running_pid(name, marker)
        self._pid_file(name).unlink(missing_ok=True)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while _pid_alive(pid):
                time.sleep(0.05)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        return True

    def _claim_port(self, port: int, what: str) -> None:
        if _port_open(port):
            raise StackError(
                f"port {port} for {what} is taken by a process this stack did not start; "
                f"choose another with the matching ALLOCGUARD_*_PORT variable"
            )

    # ---- PostgreSQL ----------------------------------------------------------------------------

    def _as_postgres(self, command: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *command] if _is_root() else command

    def _pg_running(self, bin_dir: Path, data: Path) -> bool:
        if not (data / "PG_VERSION").exists():
            return False
        status = subprocess.run(
            self._as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "status"]), capture_output=True, check=False
        )
        return status.returncode == 0

    def _postgres_up(self) -> None:
        bin_dir = self._pg_bin()
        root = self.pg_root
        data = root / "data"
        root.mkdir(parents=True, exist_ok=True)
        (root / "sock").mkdir(exist_ok=True)
        if _is_root():
            for path in (root, root / "sock"):
                shutil.chown(path, "postgres", "postgres")
        if not (data / "PG_VERSION").exists():
            self.log(f"initdb {data}")
            subprocess.run(
                self._as_postgres(
                    [
                        str(bin_dir / "initdb"),
                        "-D",
                        str(data),
                        "--auth=trust",
                        "-U",
                        "postgres",
                        "-E",
                        "UTF8",
                        "--no-locale",
                    ]
                ),
                check=True,
                stdout=subprocess.DEVNULL,
            )
            with (data / "postgresql.conf").open("a") as conf:
                conf.write("\ninclude_if_exists = 'allocguard.conf'\n")
        settings = {
            "port": str(self.settings.pg_port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{root / 'sock'}'",
            "wal_level": "logical",
            "max_replication_slots": "20",
            "max_wal_senders": "20",
            # as a careful platform sets it: a slot that falls this far behind is invalidated rather than filling
            # the disk (allocguard's slot gauges and alerts watch how close it is)
            "max_slot_wal_keep_size": "'4GB'",
            "max_connections": "200",
            # a throwaway cluster: durability is not needed, speed is
            "fsync": "off",
            "full_page_writes": "off",
            "timezone": "'UTC'",
        }
        conf_file = data / "allocguard.conf"
        conf_file.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        if _is_root():
            shutil.chown(conf_file, "postgres", "postgres")
        if self._pg_running(bin_dir, data):
            self.log("postgres: already running")
        else:
            self._claim_port(self.settings.pg_port, "PostgreSQL")
            log_file = root / "postgres.log"
            result = subprocess.run(
                self._as_postgres(
                    [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log_file), "-w", "-t", "60", "start"]
                ),
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise StackError(f"pg_ctl start failed: {result.stdout}{result.stderr}\n{_tail(log_file)}")
        admin_dsn = self.settings.dsn_for("postgres")

        def accepts() -> bool:
            try:
                with psycopg.connect(admin_dsn, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return True
            except psycopg.OperationalError:
                return False

        _wait("postgres", accepts, self.settings.ready_timeout_s)
        if db.ensure_database(admin_dsn, self.settings.pg_database):
            self.log(f"created database {self.settings.pg_database}")
        for line in db.init_database(self.settings.admin_dsn, with_reference_schema=True, with_cdc=True):
            self.log(f"db: {line}")
        db.ensure_local_roles(
            self.settings.admin_dsn, app_user=self.settings.app_user, undo_user=self.settings.undo_user
        )

    def _postgres_down(self) -> bool:
        data = self.pg_root / "data"
        if not (data / "PG_VERSION").exists():
            return False
        bin_dir = self._pg_bin()
        if not self._pg_running(bin_dir, data):
            return False
        subprocess.run(
            self._as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return True

    # ---- Kafka ---------------------------------------------------------------------------------

    def _java_command(self, lib: Path, heap: str, component: str, main: str, *args: str) -> list[str]:
        return [
            self._java(),
            f"-Xmx{heap}",
            f"-Xms{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={deploy_dir() / 'local' / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            f"-Dallocguard.component={component}",
            "-cp",
            f"{lib}/*",
            main,
            *args,
        ]

    def _kafka_properties(self) -> Path:
        folder = self.dir / "kafka"
        folder.mkdir(parents=True, exist_ok=True)
        port, cport = self.settings.kafka_port, self.settings.kafka_controller_port
        faults, proxied = self.settings.kafka_faults_port, self.settings.kafka_faults_proxy_port
        props = folder / "server.properties"
        _write_properties(
            props,
            {
                "process.roles": "broker,controller",
                "node.id": "1",
                "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport},FAULTS://127.0.0.1:{faults}",
                "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port},FAULTS://127.0.0.1:{proxied}",
                "controller.listener.names": "CONTROLLER",
                "inter.broker.listener.name": "PLAINTEXT",
                "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,FAULTS:PLAINTEXT",
                "controller.quorum.bootstrap.servers": f"127.0.0.1:{cport}",
                "log.dirs": str(folder / "data"),
                "num.partitions": str(self.settings.topic_partitions),
                "offsets.topic.replication.factor": "1",
                "offsets.topic.num.partitions": "10",
                "transaction.state.log.replication.factor": "1",
                "transaction.state.log.min.isr": "1",
                "share.coordinator.state.topic.replication.factor": "1",
                "group.initial.rebalance.delay.ms": "0",
                # KIP-848 groups (allocguard's default protocol): a dead member's partitions move within ~6 s, as the
                # classic protocol's minimum session allowed, instead of the broker's default 45 s
                "group.consumer.min.session.timeout.ms": "6000",
                "group.consumer.session.timeout.ms": "6000",
                "group.consumer.min.heartbeat.interval.ms": "1000",
                "group.consumer.heartbeat.interval.ms": "1000",
                "auto.create.topics.enable": "true",
                "log.retention.hours": "168",
            },
        )
        return props

    def _kafka_ready(self) -> bool:
        if not _port_open(self.settings.kafka_port):
            return False
        admin = AdminClient(
            {"bootstrap.servers": self.settings.kafka_bootstrap, "socket.timeout.ms": 2000, "log_level": 2}
        )
        try:
            metadata = admin.list_topics(timeout=2)
        except KafkaException:
            return False
        return bool(metadata.brokers)

    def _kafka_up(self) -> None:
        props = self._kafka_properties()
        running = self._running_pid("kafka", str(props))
        if running is not None:
            self.log("kafka: already running")
        else:
            self._claim_port(self.settings.kafka_port, "Kafka")
            self._claim_port(self.settings.kafka_controller_port, "the Kafka controller")
            self._claim_port(self.settings.kafka_faults_port, "Kafka's listener for the fault proxy")
            lib = self.jars("broker")
            id_file = self.dir / "kafka" / "cluster.id"
            if not id_file.exists():
                id_file.write_text(_kafka_cluster_id())
            if not (self.dir / "kafka" / "data" / "meta.properties").exists():
                self.log("formatting Kafka storage (KRaft, standalone)")
                subprocess.run(
                    self._java_command(
                        lib,
                        "256m",
                        "kafka-storage",
                        "kafka.tools.StorageTool",
                        "format",
                        "--standalone",
                        "-t",
                        id_file.read_text().strip(),
                        "-c",
                        str(props),
                    ),
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
            running = self._spawn(
                "kafka", self._java_command(lib, self.settings.kafka_heap, "kafka", "kafka.Kafka", str(props)), self.dir
            )
            self.log(f"kafka: started (pid {running})")
        _wait(
            "kafka",
            self._kafka_ready,
            self.settings.ready_timeout_s,
            alive=self._death_reporter("kafka", running, self.logs_dir / "kafka.log"),
        )

    def ensure_topics(self, topics: list[str], partitions: int | None = None) -> None:
        admin = AdminClient({"bootstrap.servers": self.settings.kafka_bootstrap})
        existing = set(admin.list_topics(timeout=10).topics)
        wanted = [
            NewTopic(topic, num_partitions=partitions or self.settings.topic_partitions, replication_factor=1)
            for topic in topics
            if topic not in existing
        ]
        if not wanted:
            return
        for topic, future in admin.create_topics(wanted, operation_timeout=10).items():
            try:
                future.result()
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise StackError(f"could not create topic {topic}: {exc}") from exc
        names = {new.topic for new in wanted}

        def led() -> bool:
            topics = admin.list_topics(timeout=5).topics
            return all(
                name in topics
                and topics[name].partitions
                and all(p.leader >= 0 and p.error is None for p in topics[name].partitions.values())
                for name in names
            )

        _wait(f"leaders for {len(names)} new topic(s)", led, self.settings.ready_timeout_s)

    # ---- Kafka Connect + Debezium --------------------------------------------------------------

    def _connect_properties(self) -> Path:
        folder = self.dir / "connect"
        folder.mkdir(parents=True, exist_ok=True)
        props = folder / "connect.properties"
        port = self.settings.connect_port
        _write_properties(
            props,
            {
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "group.id": f"allocguard-connect-{port}",
                "key.converter": "org.apache.kafka.connect.json.JsonConverter",
                "value.converter": "org.apache.kafka.connect.json.JsonConverter",
                "key.converter.schemas.enable": "false",
                "value.converter.schemas.enable": "false",
                "config.storage.topic": "_allocguard-connect-configs",
                "offset.storage.topic": "_allocguard-connect-offsets",
                "status.storage.topic": "_allocguard-connect-status",
                "config.storage.replication.factor": "1",
                "offset.storage.replication.factor": "1",
                "status.storage.replication.factor": "1",
                "offset.storage.partitions": "5",
                "status.storage.partitions": "1",
                "offset.flush.interval.ms": "1000",
                "listeners": f"http://127.0.0.1:{port}",
                "rest.advertised.host.name": "127.0.0.1",
                "rest.advertised.port": str(port),
                "plugin.discovery": "only_scan",
                "topic.creation.enable": "true",
                "connector.client.config.override.policy": "All",
            },
        )
        return props

    def _connect_ready(self) -> bool:
        try:
            status, plugins = _http("GET", f"{self.settings.connect_url}/connector-plugins", timeout=2)
        except OSError:
            return False
        return status == 200 and any(
            p.get("class") == "io.debezium.connector.postgresql.PostgresConnector" for p in plugins or []
        )

    def _connect_up(self) -> None:
        props = self._connect_properties()
        running = self._running_pid("connect", str(props))
        if running is not None:
            self.log("connect: already running")
        else:
            self._claim_port(self.settings.connect_port, "Kafka Connect")
            lib = self.jars("connect")
            running = self._spawn(
                "connect",
                self._java_command(
                    lib,
                    self.settings.connect_heap,
                    "connect",
                    "org.apache.kafka.connect.cli.ConnectDistributed",
                    str(props),
                ),
                self.dir,
            )
            self.log(f"connect: started (pid {running})")
        _wait(
            "kafka connect",
            self._connect_ready,
            self.settings.ready_timeout_s,
            alive=self._death_reporter("connect", running, self.logs_dir / "connect.log"),
        )

    def register_connector(self, name: str, config: dict[str, str]) -> None:
        """Create or update a connector (the stack's topics made first, with its local partitions and one
        replica), then wait until it streams (RUNNING, then a fresh heartbeat)."""
        prefix = config["topic.prefix"]
        self.ensure_topics([*captured_topics(prefix), heartbeat_topic(prefix), dlq_topic(prefix)])
        try:
            register(
                self.settings.connect_url, self.settings.kafka_bootstrap, name, config, self.settings.ready_timeout_s
            )
        except ConnectorError as exc:
            raise StackError(str(exc)) from None

    def connector_running(self, name: str) -> bool:
        """True when the connector and all its tasks run; raises StackError with the task's own error when a
        task failed."""
        try:
            return running(self.settings.connect_url, name)
        except ConnectorError as exc:
            raise StackError(str(exc)) from None

    def wait_connector_running(self, name: str) -> None:
        _wait(f"connector {name}", lambda: self.connector_running(name), self.settings.ready_timeout_s)

    def restart_failed_tasks(self, name: str) -> int:
        """Restart the connector's FAILED tasks, as Strimzi's ``autoRestart`` or an operator would (Debezium fails
        a task for good when PostgreSQL goes away while the task is starting). Returns how many were failed."""
        try:
            code, body = _http("GET", f"{self.settings.connect_url}/connectors/{name}/status", timeout=5)
        except OSError:
            return 0
        if code != 200 or not isinstance(body, dict):
            return 0
        failed = [t for t in body.get("tasks") or [] if t.get("state") == "FAILED"]
        if failed:
            self.log(f"connector {name}: restarting {len(failed)} failed task(s)")
            with contextlib.suppress(OSError):
                _http(
                    "POST",
                    f"{self.settings.connect_url}/connectors/{name}/restart?includeTasks=true&onlyFailed=true",
                    timeout=30,
                )
        return len(failed)

    def delete_connector(self, name: str) -> None:
        _http("DELETE", f"{self.settings.connect_url}/connectors/{name}", timeout=30)

    # ---- tracing (opt-in): Jaeger receives and answers queries, Zipkin shows ---------------------

    @property
    def _jaeger_config(self) -> Path:
        return self.dir / "jaeger" / "config.yaml"

    @property
    def _zipkin_marker(self) -> str:
        return f"-Dallocguard.stack={self.dir}"

    @property
    def _jaeger_health_port(self) -> int:
        return self.settings.jaeger_ui_port + 1

    def _jaeger_ready(self) -> bool:
        try:
            code, _ = _http("GET", f"http://127.0.0.1:{self._jaeger_health_port}/status", timeout=1.0)
            ui, _ = _http("GET", f"{self.settings.jaeger_ui_url}/api/services", timeout=1.0)
        except (OSError, StackError):
            return False
        return code == 200 and ui == 200 and _port_open(self.settings.jaeger_otlp_http_port)

    def _zipkin_ready(self) -> bool:
        try:
            code, body = _http("GET", f"{self.settings.zipkin_url}/health", timeout=1.0)
        except (OSError, StackError):
            return False
        return code == 200 and isinstance(body, dict) and body.get("status") == "UP"

    def tracing_running(self) -> bool:
        return (
            self._running_pid("jaeger", str(self._jaeger_config)) is not None
            and self._running_pid("zipkin", self._zipkin_marker) is not None
        )

    def _zipkin_up(self) -> None:
        s = self.settings
        running = self._running_pid("zipkin", self._zipkin_marker)
        if running is not None:
            self.log("zipkin: already running")
        else:
            self._claim_port(s.zipkin_port, "Zipkin")
            self.ensure_topics([s.zipkin_topic], partitions=1)
            jar = next(self.jars("zipkin").glob("zipkin-server-*-exec.jar"))
            env = {
                **os.environ,
                "STORAGE_TYPE": "mem",
                "QUERY_PORT": str(s.zipkin_port),
                "KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap,
                "KAFKA_TOPIC": s.zipkin_topic,
                "KAFKA_GROUP_ID": "allocguard-local-zipkin",
            }
            command = [self._java(), "-Xmx256m", self._zipkin_marker, "-jar", str(jar)]
            running = self._spawn("zipkin", command, self.dir, env)
            self.log(f"zipkin: started (pid {running})")
        _wait(
            "zipkin",
            self._zipkin_ready,
            s.ready_timeout_s,
            alive=self._death_reporter("zipkin", running, self.logs_dir / "zipkin.out"),
        )

    def _jaeger_up(self) -> None:
        s = self.settings
        config = self._jaeger_config
        running = self._running_pid("jaeger", str(config))
        if running is not None:
            self.log("jaeger: already running")
        else:
            ports = {
                "JAEGER_UI_PORT": s.jaeger_ui_port,
                "JAEGER_QUERY_GRPC_PORT": s.jaeger_ui_port - 1,
                "JAEGER_HEALTH_PORT": self._jaeger_health_port,
                "JAEGER_OTLP_GRPC_PORT": s.jaeger_otlp_grpc_port,
                "JAEGER_OTLP_HTTP_PORT": s.jaeger_otlp_http_port,
            }
            for variable, port in ports.items():
                self._claim_port(port, f"Jaeger ({variable.lower()})")
            binary = self.jaeger_binary()
            config.parent.mkdir(parents=True, exist_ok=True)
            source = deploy_dir() / "local" / "jaeger"
            shutil.copyfile(source / "config.yaml", config)
            forward = config.with_name("zipkin-forward.yaml")
            shutil.copyfile(source / "zipkin-forward.yaml", forward)
            env = {
                **os.environ,
                "JAEGER_LISTEN_HOST": "127.0.0.1",
                "JAEGER_KAFKA_BROKERS": s.kafka_bootstrap,
                "JAEGER_ZIPKIN_TOPIC": s.zipkin_topic,
                **{k: str(v) for k, v in ports.items()},
            }
            command = [str(binary), "--config", f"file:{config}", "--config", f"file:{forward}"]
            running = self._spawn("jaeger", command, config.parent, env)
            self.log(f"jaeger: started (pid {running})")
        _wait(
            "jaeger",
            self._jaeger_ready,
            s.ready_timeout_s,
            alive=self._death_reporter("jaeger", running, self.logs_dir / "jaeger.out"),
        )

    def _tracing_up(self) -> None:
        self._zipkin_up()
        self._jaeger_up()

    def _tracing_down(self) -> bool:
        jaeger = self._stop_pid("jaeger", str(self._jaeger_config))
        zipkin = self._stop_pid("zipkin", self._zipkin_marker)
        return jaeger or zipkin

    def trace_env(self) -> dict[str, str]:
        """The OTEL_* variables that point allocguard at this stack's Jaeger, and the trace UI's link template."""
        return {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.settings.jaeger_otlp_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "ALLOCGUARD_TRACE_UI_URL": f"{self.settings.zipkin_url}/zipkin/traces/{{trace_id}}",
        }

    # ---- the whole stack -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _step(self, timings: dict[str, float], name: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        timings[name] = round(time.monotonic() - started, 2)

    def up(self, *, tracing: bool | None = None) -> dict[str, float]:
        """Bring everything up (idempotent); returns seconds spent per step. ``tracing`` (default: the setting)
        adds Jaeger."""
        self.dir.mkdir(parents=True, exist_ok=True)
        timings: dict[str, float] = {}
        started = time.monotonic()
        with self._step(timings, "jars"):
            self.jars("broker")
            self.jars("connect")
        with self._step(timings, "postgres"):
            self._postgres_up()
        with self._step(timings, "kafka"):
            self._kafka_up()
        with self._step(timings, "connect"):
            self._connect_up()
        with self._step(timings, "connector"):
            self.register_connector(self.settings.connector_name, connector_config(self.settings))
        if self.settings.tracing if tracing is None else tracing:
            with self._step(timings, "tracing build"):
                self.jaeger_binary()
                self.jars("zipkin")
            with self._step(timings, "tracing"):
                self._tracing_up()
        timings["total"] = round(time.monotonic() - started, 2)
        return timings

    def stop_component(self, name: str) -> bool:
        """Stop one part of the stack (``postgres``, ``kafka``, ``connect`` or ``tracing``): fault injection for
        the chaos suite. True when something was stopped."""
        if name == "postgres":
            return self._postgres_down()
        marker = {
            "kafka": self.dir / "kafka" / "server.properties",
            "connect": self.dir / "connect" / "connect.properties",
        }
        if name == "tracing":
            return self._tracing_down()
        return self._stop_pid(name, str(marker[name]))

    def start_component(self, name: str) -> None:
        """Start one part again and wait until it is ready (the connector resumes from its stored offsets)."""
        starters = {
            "postgres": self._postgres_up,
            "kafka": self._kafka_up,
            "connect": self._connect_up,
            "tracing": self._tracing_up,
        }
        starters[name]()
        if name in ("connect", "postgres", "kafka"):
            connector = self.settings.connector_name

            def streaming() -> bool:
                self.restart_failed_tasks(connector)
                try:
                    return self.connector_running(connector)
                except StackError:
                    return False  # failed again: restarted on the next look

            _wait(f"connector {connector} after {name} came back", streaming, self.settings.ready_timeout_s)

    def down(self) -> list[str]:
        """Stop what this stack started, Connect first. Returns the names of what was stopped."""
        stopped: list[str] = []
        if self._stop_pid("connect", str(self.dir / "connect" / "connect.properties")):
            stopped.append("connect")
        if self._stop_pid("kafka", str(self.dir / "kafka" / "server.properties")):
            stopped.append("kafka")
        if self._postgres_down():
            stopped.append("postgres")
        if self._tracing_down():
            stopped.append("tracing")
        return stopped

    def status(self) -> list[ComponentStatus]:
        s = self.settings
        pg_data = self.pg_root / "data"
        pg_up = (pg_data / "PG_VERSION").exists() and _port_open(s.pg_port)
        pg_pid: int | None = None
        with contextlib.suppress(OSError, ValueError):
            pg_pid = int((pg_data / "postmaster.pid").read_text().split()[0]) if pg_up else None
        kafka_pid = self._running_pid("kafka", str(self.dir / "kafka" / "server.properties"))
        connect_pid = self._running_pid("connect", str(self.dir / "connect" / "connect.properties"))
        connector_detail = ""
        if connect_pid is not None:
            with contextlib.suppress(OSError):
                code, body = _http("GET", f"{s.connect_url}/connectors/{s.connector_name}/status", timeout=2)
                if code == 200 and isinstance(body, dict):
                    tasks = ",".join(t.get("state", "?") for t in body.get("tasks", []))
                    connector_detail = f"connector {body['connector']['state']}, tasks {tasks or '-'}"
                else:
                    connector_detail = "connector not registered"
        statuses = [
            ComponentStatus("postgres", pg_up, pg_pid, s.admin_dsn, str(pg_data)),
            ComponentStatus("kafka", kafka_pid is not None, kafka_pid, s.kafka_bootstrap),
            ComponentStatus("connect", connect_pid is not None, connect_pid, s.connect_url, connector_detail),
        ]
        jaeger_pid = self._running_pid("jaeger", str(self._jaeger_config))
        zipkin_pid = self._running_pid("zipkin", self._zipkin_marker)
        if jaeger_pid is not None or zipkin_pid is not None:
            statuses += [
                ComponentStatus(
                    "jaeger", jaeger_pid is not None, jaeger_pid, s.jaeger_otlp_endpoint, f"query {s.jaeger_ui_url}"
                ),
                ComponentStatus("zipkin", zipkin_pid is not None, zipkin_pid, f"{s.zipkin_url}/zipkin/", "trace UI"),
            ]
        return statuses

    def required_env(self) -> dict[str, str]:
        """The two settings every command that talks to production requires, pointing at this stack (what the
        tests and benches export: the owner's and the platform's logins stay out of their environment)."""
        return {"ALLOCGUARD_PG_DSN": self.settings.pg_dsn, "ALLOCGUARD_KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap}

    def client_env(self) -> dict[str, str]:
        """Where this stack's services are, as allocguard's commands read it: set explicitly for every command
        run against the local stack (production commands have no defaults)."""
        s = self.settings
        return {
            **self.required_env(),
            "ALLOCGUARD_ADMIN_DSN": s.admin_dsn,
            "ALLOCGUARD_PLATFORM_DSN": s.platform_dsn,
            "ALLOCGUARD_CONNECT_URL": s.connect_url,
            "ALLOCGUARD_TOPIC_PREFIX": s.topic_prefix,
        }

    def env_lines(self) -> list[str]:
        env = {**self.client_env(), "ALLOCGUARD_STACK_DIR": str(self.dir)}
        if self.tracing_running():
            env.update(self.trace_env())
        return [f"export {name}='{value}'" for name, value in env.items()]
