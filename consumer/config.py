"""Configuration from the environment (``ALLOCGUARD_*``), a ``.env`` file, or explicit arguments."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from uuid import UUID

from pydantic import BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from consumer.redact import redact

if TYPE_CHECKING:
    from handlers.policy import Policy


@dataclass(frozen=True)
class Target:
    """What ``allocguard check`` (and ``run``'s preflight) look at."""

    dsn: str
    tables: tuple[str, ...]  # consumed tables, qualified (public.observability_events)
    bootstrap: str | None = None
    topics: tuple[str, ...] = ()
    dlq_topic: str | None = None
    kafka_config: dict[str, str] = field(default_factory=dict)
    connect_url: str | None = None
    connector_name: str | None = None
    publication: str = "allocguard_platform"


def _comma_list(value: object) -> object:
    """``a,b`` from the environment or a flag; a JSON list or a Python list pass through."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _none_word(value: object) -> object:
    """ "none", "off" or an empty value: None (for a setting where None means "never")."""
    return None if isinstance(value, str) and value.strip().lower() in ("", "none", "off", "null") else value


def _lower(value: object) -> object:
    """Choices are case-insensitive (ALLOCGUARD_MODE=AUTO means auto); anything else is refused by name."""
    return value.lower() if isinstance(value, str) else value


#: the repository root when running from a checkout (deploy/ lives beside the packages)
REPO_ROOT = Path(__file__).resolve().parent.parent


class ConfigurationError(ValueError):
    """A setting that is wrong, said in one line that names it: the command exits 2 (never a traceback, never a
    restart loop that waiting could not fix)."""


def deploy_dir() -> Path:
    """``deploy/`` of the checkout, or ``ALLOCGUARD_DEPLOY_DIR`` where the package is installed elsewhere
    (the container image sets it)."""
    override = os.environ.get("ALLOCGUARD_DEPLOY_DIR")
    return Path(override) if override else REPO_ROOT / "deploy"


#: libpq's socket settings for every connection allocguard opens (a DSN that sets one wins). A peer that is gone
#: without a word (a partition, a failover's old primary, a NAT that forgot the flow) is found out by TCP, not by
#: the kernel's ≈ 15 minutes of retransmissions: an idle connection after 10 s + 3 x 5 s of unanswered keepalives,
#: a connection with unacknowledged bytes after 30 s (``tcp_user_timeout``, ms). A peer that acknowledges and never
#: answers (a stalled proxy, a hung server) is not a TCP failure: the work waits for it (tests/chaos/test_network.py).
PG_NETWORK_DEFAULTS: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


class RuntimeSettings(BaseSettings):
    """``allocguard run``: every field is ``ALLOCGUARD_<NAME>`` in the env, a ``.env`` line, or a flag."""

    model_config = SettingsConfigDict(
        env_prefix="ALLOCGUARD_", env_file=".env", extra="ignore", frozen=True, populate_by_name=True
    )

    #: the Kafka brokers (host:port,…); required by every command that reads Kafka
    kafka_bootstrap: str | None = None
    #: allocguard's database login (a member of allocguard_remediator, never the owner); required by every command
    #: that reads the platform's database
    pg_dsn: SecretStr | None = None
    #: Debezium's topic.prefix: the topics are <prefix>.<schema>.<table>
    topic_prefix: str = "platform"
    #: tables whose change events are consumed (the detector needs observability_events)
    tables: list[str] = Field(default_factory=lambda: ["public.observability_events"])
    #: the Kafka consumer group of ``run`` (replay and dlq replay use groups of their own)
    group_id: str = "allocguard"
    #: static group membership (group.instance.id), e.g. the pod name: a rolling restart causes no rebalance
    instance_id: str | None = None
    #: where a new group starts: "latest" (live) or "earliest"
    auto_offset_reset: Annotated[Literal["latest", "earliest"], BeforeValidator(_lower)] = "latest"
    #: the dead-letter topic (default <prefix>.allocguard.dlq)
    dlq_topic: str | None = None
    #: extra librdkafka settings passed through (security.protocol, sasl.*, ssl.*), e.g. from a Secret
    kafka_config: dict[str, SecretStr] = Field(default_factory=dict)
    #: bookings handled concurrently (one booking's events always in order)
    workers: int = Field(default=16, ge=1, le=256)
    #: events taken and not finished before the partitions are paused (backpressure)
    max_in_flight: int = Field(default=2000, ge=1)
    #: dry_run (report only), auto (prune and retry), approve (every plan waits for a person)
    mode: Annotated[Literal["dry_run", "auto", "approve"], BeforeValidator(_lower)] = "dry_run"
    #: guardrails: a plan beyond them waits for a person (``allocguard plans approve``), as every plan does in
    #: mode approve
    max_allocations_per_plan: int = Field(default=5, ge=0)
    #: guardrail: remediations per restaurant in an hour before the next plan waits for a person
    max_remediations_per_restaurant_hour: int = Field(default=20, ge=0)
    #: comma-separated restaurant ids; when set, only these are remediated without a person
    allow_restaurants: Annotated[list[UUID] | None, NoDecode, BeforeValidator(_comma_list)] = None
    #: comma-separated restaurant ids never remediated without a person
    deny_restaurants: Annotated[list[UUID], NoDecode, BeforeValidator(_comma_list)] = Field(default_factory=list)
    #: owners cancelled/completed/no_show still holding their assignment: off (report), approve, auto
    stale_by_status: Annotated[Literal["off", "approve", "auto"], BeforeValidator(_lower)] = "approve"
    #: seconds a pending plan waits for a decision before it expires
    plan_ttl_s: float = Field(default=7200.0, gt=0)
    #: the person whose command made a plan (`remediate --mode approve`) may approve it too (default: another must)
    allow_self_approval: bool = False
    #: also consume bookings, booking_table_assignments and allocations: an allocation the platform leaves behind
    #: is flagged (and, per policy, pruned after its grace) before any booking is blocked by it
    prevention: bool = False
    #: seconds an allocation must be untouched before it may be pruned (young rows may be in flight)
    grace_s: float = Field(default=120.0, ge=0)
    #: how the victim is assigned again: sql (the platform's assign_tables_atomic_v2) or http (the app's endpoint)
    strategy: Annotated[Literal["sql", "http"], BeforeValidator(_lower)] = "sql"
    #: the app's assign endpoint for strategy http (may carry credentials: never printed)
    assign_endpoint: SecretStr | None = None
    #: HTTP headers sent with every assign call, a JSON object (e.g. {"Authorization": "Bearer …"}): never printed
    assign_headers: dict[str, SecretStr] = Field(default_factory=dict)
    #: where before/after evidence files of each prune are written (none when unset)
    artifacts_dir: Path | None = Path("artifacts")
    #: the address /healthz, /readyz and /metrics listen on
    health_host: str = "0.0.0.0"  # noqa: S104 (probes come from the orchestrator)
    #: the port of /healthz, /readyz and /metrics
    health_port: int = Field(default=8088, ge=0, le=65535)
    #: Kafka Connect's REST URL and the connector's name, for the connector check (optional)
    connect_url: str | None = None
    #: the Debezium connector's name in Kafka Connect
    connector_name: str = "platform-cdc"
    #: the publication Debezium streams (checked to cover the consumed tables)
    publication: str = "allocguard_platform"
    #: SIGTERM to exit: in-flight work finishes or is abandoned without a verdict within this budget
    shutdown_timeout_s: float = Field(default=30.0, gt=0)
    #: how long a revoked partition's in-flight work may take before its offsets are left uncommitted
    revoke_timeout_s: float = Field(default=20.0, ge=0)
    #: partitions lost (session timeout) and no assignment since, with the broker reachable this long: re-subscribe
    rejoin_after_s: float = Field(default=30.0, gt=0)
    #: an assigned, unpaused partition whose position has not moved this long while its log goes on (the broker
    #: reachable): its fetch is restarted; still stalled as long again, the member rejoins its group
    fetch_stall_s: float = Field(default=10.0, gt=0)
    #: psycopg prepares a statement after this many executions on a connection (0: at its first); "none" never
    #: prepares — needed behind a transaction-mode pooler (Supabase's port 6543, PgBouncer in transaction mode),
    #: which cannot keep prepared statements across transactions
    pg_prepare_threshold: Annotated[int | None, BeforeValidator(_none_word)] = Field(default=0, ge=0)
    #: the workers' connections plan each of allocguard's prepared statements once (plan_cache_mode
    #: force_generic_plan; the platform's functions and triggers keep the server's setting: the retry, prune and
    #: undo transactions reset it); off: the server's setting throughout. Only with prepared statements (above)
    pg_generic_plans: bool = True
    #: how often the gauges read from the database and the heartbeat topic (plans, incidents, the replication
    #: slot, the heartbeat's age) are refreshed
    metrics_refresh_s: float = Field(default=15.0, ge=1)
    #: a poll that returns at least this many messages is a backlog: its signals are handled many at a time (a
    #: shorter poll means caught up: each signal goes on at once, for latency)
    batch_backlog: int = Field(default=64, ge=1)
    #: under a backlog, how long the batch thread gathers signals before it takes a batch (0: at once)
    batch_linger_s: float = Field(default=0.01, ge=0, le=1)
    #: prevention: how many assignment rows (id → booking) are remembered so that a key-only delete can be named
    #: (≈ 190 bytes each; one forgotten is answered by a sweep)
    assignment_index_size: int = Field(default=200_000, ge=1)
    #: a retention gap whose commit carries no time of the last handled event is backfilled from this long before
    #: the first retained record (Kafka's default retention: 7 days)
    backfill_window_s: float = Field(default=7 * 86_400.0, gt=0)
    #: a decision request — a plan waiting for a person, and a warning before it expires — is POSTed here as JSON
    #: (evidence summary, trace and console links; may carry a token: never printed)
    decision_webhook_url: SecretStr | None = None
    #: the same decision request as a Slack-compatible incoming-webhook message (its URL is a secret)
    decision_slack_webhook_url: SecretStr | None = None
    #: seconds before a pending plan expires that a warning is sent
    decision_warn_before_s: float = Field(default=900.0, gt=0)
    #: the console's base URL: a decision request links to the plan's page there ({console_url}/plans/{id})
    console_url: str | None = None
    #: a trace UI's page for one trace, with ``{trace_id}`` (Jaeger: http://host:16686/trace/{trace_id}; Grafana
    #: Tempo: its explore URL with the id in the query); ``diagnose`` and the demo print it
    trace_ui_url: str | None = None

    @model_validator(mode="after")
    def _strategy_has_what_it_needs(self) -> RuntimeSettings:
        if self.strategy == "http" and self.assign_endpoint is None:
            raise ValueError("strategy http needs ALLOCGUARD_ASSIGN_ENDPOINT (the app's assign URL)")
        if self.assign_endpoint is not None and not self.assign_endpoint.get_secret_value().startswith(
            ("http://", "https://")
        ):
            raise ValueError("ALLOCGUARD_ASSIGN_ENDPOINT must be an http(s) URL")
        for name in ("decision_webhook_url", "decision_slack_webhook_url"):
            value: SecretStr | None = getattr(self, name)
            if value is not None and not value.get_secret_value().startswith(("http://", "https://")):
                raise ValueError(f"ALLOCGUARD_{name.upper()} must be an http(s) URL")
        if self.console_url is not None and not self.console_url.startswith(("http://", "https://")):
            raise ValueError("ALLOCGUARD_CONSOLE_URL must be an http(s) URL")
        if self.trace_ui_url is not None and (
            "{trace_id}" not in self.trace_ui_url or not self.trace_ui_url.startswith(("http://", "https://"))
        ):
            raise ValueError("ALLOCGUARD_TRACE_UI_URL must be an http(s) URL with {trace_id} in it")
        return self

    def decision_targets(self) -> dict[str, str]:
        """Where decision requests go: target name → URL (secret: never logged)."""
        given = {"webhook": self.decision_webhook_url, "slack": self.decision_slack_webhook_url}
        return {name: url.get_secret_value() for name, url in given.items() if url is not None}

    def trace_link(self, trace_id: str | None) -> str | None:
        """The trace UI's page for ``trace_id``, when a UI is configured and the id is known."""
        if self.trace_ui_url is None or not trace_id:
            return None
        return self.trace_ui_url.replace("{trace_id}", trace_id)

    def policy(self) -> Policy:
        from handlers.policy import Policy, StalePolicy

        return Policy(
            max_allocations_per_plan=self.max_allocations_per_plan,
            max_per_restaurant_hour=self.max_remediations_per_restaurant_hour,
            allow_restaurants=frozenset(self.allow_restaurants) if self.allow_restaurants is not None else None,
            deny_restaurants=frozenset(self.deny_restaurants),
            stale_by_status=StalePolicy(self.stale_by_status),
            plan_ttl=timedelta(seconds=self.plan_ttl_s),
            allow_self_approval=self.allow_self_approval,
        )

    def missing(self, *, kafka: bool = True, database: bool = True) -> list[str]:
        """The required settings that are unset, one line each (variable and flag): a production command never
        guesses where PostgreSQL or Kafka is (only the local stack has defaults, and it sets them explicitly)."""
        lines = []
        if database and self.pg_dsn is None:
            lines.append("missing ALLOCGUARD_PG_DSN (or --dsn): allocguard's database login")
        if kafka and not self.kafka_bootstrap:
            lines.append("missing ALLOCGUARD_KAFKA_BOOTSTRAP (or --kafka-bootstrap): the Kafka brokers")
        return lines

    def resolved_bootstrap(self) -> str:
        if not self.kafka_bootstrap:
            raise ConfigurationError(self.missing(database=False)[0])
        return self.kafka_bootstrap

    def resolved_dsn(self) -> str:
        if self.pg_dsn is None:
            raise ConfigurationError(self.missing(kafka=False)[0])
        return self.pg_dsn.get_secret_value()

    def topics(self) -> list[str]:
        from handlers.prevent import WATCHED_TABLES

        tables = [*self.tables, *(t for t in WATCHED_TABLES if self.prevention and t not in self.tables)]
        return [f"{self.topic_prefix}.{table}" for table in tables]

    def resolved_dlq(self) -> str:
        return self.dlq_topic or f"{self.topic_prefix}.allocguard.dlq"

    def pg_connect_kwargs(self) -> dict[str, Any]:
        """What every connection allocguard opens is given besides the DSN: TCP keepalives and a user timeout
        (``PG_NETWORK_DEFAULTS``) unless the DSN sets them, and the prepare threshold."""
        from psycopg.conninfo import conninfo_to_dict

        given = conninfo_to_dict(self.resolved_dsn()) if self.pg_dsn is not None else {}
        return {
            **{key: value for key, value in PG_NETWORK_DEFAULTS.items() if key not in given},
            "prepare_threshold": self.pg_prepare_threshold,
        }

    def assign_header_values(self) -> dict[str, str]:
        return {key: value.get_secret_value() for key, value in self.assign_headers.items()}

    def librdkafka(self) -> dict[str, str]:
        return {key: value.get_secret_value() for key, value in self.kafka_config.items()}

    def check_target(self) -> Target:
        return Target(
            dsn=self.resolved_dsn(),
            tables=tuple(self.tables),
            bootstrap=self.resolved_bootstrap(),
            topics=tuple(self.topics()),
            dlq_topic=self.resolved_dlq(),
            kafka_config=self.librdkafka(),
            connect_url=self.connect_url,
            connector_name=self.connector_name,
            publication=self.publication,
        )

    def redacted(self) -> dict[str, object]:
        """For logs: secrets stay hidden."""
        doc = self.model_dump(mode="json")
        doc["pg_dsn"] = "**********" if self.pg_dsn is not None else None
        doc["kafka_config"] = {key: "**********" for key in self.kafka_config}
        if self.assign_endpoint is not None:
            doc["assign_endpoint"] = redact(self.assign_endpoint.get_secret_value())
        doc["assign_headers"] = {key: "**********" for key in self.assign_headers}
        return doc
