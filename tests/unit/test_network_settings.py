"""The socket settings allocguard chooses (docs/deployment.md, "Network timeouts"): TCP keepalives and a user timeout
on every PostgreSQL connection unless the DSN sets its own, keepalives on every Kafka connection unless
ALLOCGUARD_KAFKA_CONFIG says otherwise."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from consumer.config import PG_NETWORK_DEFAULTS, RuntimeSettings
from consumer.runtime.clients import consumer_config, producer_config

BASE = {"pg_dsn": "postgresql://allocguard_app@db.internal:5432/platform", "kafka_bootstrap": "kafka:9092"}


def settings(**overrides: object) -> RuntimeSettings:
    return RuntimeSettings.model_validate({**BASE, **overrides})


def effective(current: RuntimeSettings) -> dict[str, str]:
    """The conninfo libpq is given: the DSN with the keyword arguments psycopg adds."""
    kwargs = {k: v for k, v in current.pg_connect_kwargs().items() if k != "prepare_threshold"}
    return {k: str(v) for k, v in conninfo_to_dict(make_conninfo(current.resolved_dsn(), **kwargs)).items()}


def test_every_connection_gets_keepalives_and_a_user_timeout() -> None:
    given = effective(settings())
    for key, value in PG_NETWORK_DEFAULTS.items():
        assert given[key] == str(value), key
    assert int(given["keepalives_idle"]) + int(given["keepalives_interval"]) * int(given["keepalives_count"]) <= 30
    assert given["host"] == "db.internal"


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://allocguard_app@db.internal/platform?keepalives_idle=3&tcp_user_timeout=9000",
        "host=db.internal dbname=platform user=allocguard_app keepalives_idle=3 tcp_user_timeout=9000",
    ],
)
def test_what_the_dsn_sets_wins(dsn: str) -> None:
    given = effective(settings(pg_dsn=dsn))
    assert given["keepalives_idle"] == "3"
    assert given["tcp_user_timeout"] == "9000"
    assert given["keepalives_count"] == str(PG_NETWORK_DEFAULTS["keepalives_count"]), "the others still apply"


def test_kafka_connections_keep_alive_unless_configured_otherwise() -> None:
    def noop(error: object) -> None:
        return None

    assert consumer_config(settings(), noop)["socket.keepalive.enable"] is True
    assert producer_config(settings(), noop)["socket.keepalive.enable"] is True
    off = settings(kafka_config={"socket.keepalive.enable": "false"})
    assert consumer_config(off, noop)["socket.keepalive.enable"] == "false"
