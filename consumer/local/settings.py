"""The local stack's settings: where its services run and how to reach them. Only the local stack, the demo, the
tests and the benches read these; a command that talks to production never falls back to them
(``consumer/config.py``'s RuntimeSettings has no defaults for where PostgreSQL and Kafka are)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumer.config import REPO_ROOT


class StackSettings(BaseSettings):
    """Where the local stack lives and how to reach it. Every field is ``ALLOCGUARD_<NAME>`` in the env."""

    model_config = SettingsConfigDict(
        env_prefix="ALLOCGUARD_", env_file=".env", extra="ignore", frozen=True, populate_by_name=True
    )

    stack_dir: Path = Field(default=REPO_ROOT / ".allocguard" / "stack")
    #: Maven-collected jars, shared by every stack on the machine (keyed by the pom's hash)
    jar_cache_dir: Path = Field(default=Path.home() / ".cache" / "allocguard" / "jars")
    pg_port: int = 55432
    pg_database: str = "platform"
    #: the cluster's owner: creates databases, loads the reference model, runs `db init` (never allocguard's
    #: runtime, never the tests' checks)
    pg_user: str = "postgres"
    pg_password: SecretStr = SecretStr("")
    #: allocguard's login role on the local stack, a member of allocguard_remediator and nothing else
    app_user: str = "allocguard_app"
    #: the platform's own back end on the local stack (the simulator writes as it): BYPASSRLS, like the hosting
    #: service's service_role
    platform_user: str = "service_role"
    #: a person's login for ``allocguard undo`` and ``unpin`` on the local stack: a member of allocguard_undo only
    undo_user: str = "allocguard_operator"
    kafka_port: int = 59092
    kafka_controller_port: int = 59093
    #: a second client listener for the hostile-network tests: it advertises ``kafka_faults_proxy_port``, where a
    #: test's fault-injecting proxy relays to it, so every connection a client opens (bootstrap, then the broker
    #: metadata names) goes through the proxy
    kafka_faults_port: int = 59094
    #: where the hostile-network tests' proxy listens (the FAULTS listener's advertised port); nothing listens there
    #: outside those tests
    kafka_faults_proxy_port: int = 59095
    connect_port: int = 58083
    topic_prefix: str = "platform"
    topic_partitions: int = 3
    #: the Debezium connector's name in Kafka Connect
    connector_name: str = "platform-cdc"
    #: heartbeat interval for the local connector; the first heartbeat also tells that the snapshot is done
    heartbeat_interval_ms: int = 1000
    #: JsonConverter schemas.enable for the local connector's values
    value_schemas_enable: bool = False
    kafka_heap: str = "512m"
    connect_heap: str = "768m"
    ready_timeout_s: float = 120.0
    #: ``stack up --tracing``: a Jaeger (v2 all-in-one, in memory: OTLP in, query API) beside the stack, built once
    #: from the Go module proxy into ``tool_cache_dir`` (keyed by deploy/local/jaeger's go.mod and go.sum), and
    #: Zipkin (from Maven Central) for the trace UI
    tracing: bool = False
    tool_cache_dir: Path = Field(default=Path.home() / ".cache" / "allocguard")
    jaeger_ui_port: int = 16686
    jaeger_otlp_grpc_port: int = 4317
    jaeger_otlp_http_port: int = 4318
    #: Zipkin (Lens UI) beside Jaeger: it reads the spans Jaeger forwards to Kafka
    zipkin_port: int = 9411
    zipkin_topic: str = "allocguard.traces.zipkin"

    #: set these to use services that allocguard's stack manager did not start
    pg_dsn_override: SecretStr | None = Field(default=None, validation_alias="ALLOCGUARD_PG_DSN")
    admin_dsn_override: SecretStr | None = Field(default=None, validation_alias="ALLOCGUARD_ADMIN_DSN")
    platform_dsn_override: SecretStr | None = Field(default=None, validation_alias="ALLOCGUARD_PLATFORM_DSN")
    kafka_bootstrap_override: str | None = Field(default=None, validation_alias="ALLOCGUARD_KAFKA_BOOTSTRAP")
    connect_url_override: str | None = Field(default=None, validation_alias="ALLOCGUARD_CONNECT_URL")

    @property
    def external(self) -> bool:
        """True when the services are given from outside (tests then use them and start nothing)."""
        return self.kafka_bootstrap_override is not None

    def _local_dsn(self, user: str, password: str = "", database: str | None = None) -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.pg_port}/{database or self.pg_database}"

    @property
    def pg_dsn(self) -> str:
        """allocguard's own connection: the least-privilege login role (``ALLOCGUARD_PG_DSN``)."""
        if self.pg_dsn_override is not None:
            return self.pg_dsn_override.get_secret_value()
        return self._local_dsn(self.app_user)

    @property
    def admin_dsn(self) -> str:
        """The owner's connection, for ``db init`` and the stack (``ALLOCGUARD_ADMIN_DSN``)."""
        if self.admin_dsn_override is not None:
            return self.admin_dsn_override.get_secret_value()
        return self._local_dsn(self.pg_user, self.pg_password.get_secret_value())

    @property
    def undo_dsn(self) -> str:
        """An operator's login for ``allocguard undo`` (``ALLOCGUARD_UNDO_DSN``): never the runtime's."""
        return self._local_dsn(self.undo_user)

    @property
    def platform_dsn(self) -> str:
        """The platform's back-end role, for the simulator and the tests' checks (``ALLOCGUARD_PLATFORM_DSN``)."""
        if self.platform_dsn_override is not None:
            return self.platform_dsn_override.get_secret_value()
        return self._local_dsn(self.platform_user)

    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka_bootstrap_override or f"127.0.0.1:{self.kafka_port}"

    @property
    def connect_url(self) -> str:
        return self.connect_url_override or f"http://127.0.0.1:{self.connect_port}"

    @property
    def jaeger_ui_url(self) -> str:
        return f"http://127.0.0.1:{self.jaeger_ui_port}"

    @property
    def zipkin_url(self) -> str:
        return f"http://127.0.0.1:{self.zipkin_port}"

    @property
    def jaeger_otlp_endpoint(self) -> str:
        """OTLP over HTTP (allocguard's default protocol)."""
        return f"http://127.0.0.1:{self.jaeger_otlp_http_port}"

    def dsn_for(self, database: str, dsn: str | None = None) -> str:
        """The same server, another database (as the owner unless ``dsn`` names another role)."""
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(dsn or self.admin_dsn)
        params["dbname"] = database
        return make_conninfo(**params)  # type: ignore[arg-type]
