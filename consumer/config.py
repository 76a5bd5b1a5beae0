"""Configuration from the environment (``ALLOCGUARD_*``), a ``.env`` file, or explicit arguments."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: the repository root when running from a checkout (deploy/ lives beside the packages)
REPO_ROOT = Path(__file__).resolve().parent.parent


def deploy_dir() -> Path:
    return REPO_ROOT / "deploy"


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
    pg_user: str = "postgres"
    pg_password: SecretStr = SecretStr("")
    kafka_port: int = 59092
    kafka_controller_port: int = 59093
    connect_port: int = 58083
    topic_prefix: str = "platform"
    topic_partitions: int = 3
    connector_name: str = "platform-cdc"
    #: heartbeat interval for the local connector; the first heartbeat also tells that the snapshot is done
    heartbeat_interval_ms: int = 1000
    #: JsonConverter schemas.enable for the local connector's values
    value_schemas_enable: bool = False
    kafka_heap: str = "512m"
    connect_heap: str = "768m"
    ready_timeout_s: float = 120.0

    #: set these three to use services that allocguard's stack manager did not start
    pg_dsn_override: SecretStr | None = Field(default=None, validation_alias="ALLOCGUARD_PG_DSN")
    kafka_bootstrap_override: str | None = Field(default=None, validation_alias="ALLOCGUARD_KAFKA_BOOTSTRAP")
    connect_url_override: str | None = Field(default=None, validation_alias="ALLOCGUARD_CONNECT_URL")

    @property
    def external(self) -> bool:
        """True when the services are given from outside (tests then use them and start nothing)."""
        return self.kafka_bootstrap_override is not None

    @property
    def pg_dsn(self) -> str:
        if self.pg_dsn_override is not None:
            return self.pg_dsn_override.get_secret_value()
        password = self.pg_password.get_secret_value()
        auth = f"{self.pg_user}:{password}" if password else self.pg_user
        return f"postgresql://{auth}@127.0.0.1:{self.pg_port}/{self.pg_database}"

    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka_bootstrap_override or f"127.0.0.1:{self.kafka_port}"

    @property
    def connect_url(self) -> str:
        return self.connect_url_override or f"http://127.0.0.1:{self.connect_port}"

    def dsn_for(self, database: str) -> str:
        """The same server, another database."""
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(self.pg_dsn)
        params["dbname"] = database
        return make_conninfo(**params)  # type: ignore[arg-type]
