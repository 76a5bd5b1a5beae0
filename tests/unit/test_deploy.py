"""Dockerfile, compose and Kubernetes manifests cannot run here (no Docker engine): check that they agree
with the code — configuration names, ports, probe paths, shutdown bounds, the connector config."""

from __future__ import annotations

import json
import re
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.cli import main
from consumer.config import RuntimeSettings
from consumer.local.settings import StackSettings
from consumer.runtime.health import Health, serve_health
from consumer.telemetry import Metrics
from tests.support.process import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "deploy/compose/docker-compose.yml").read_text())
K8S = {path.name: yaml.safe_load(path.read_text()) for path in (ROOT / "deploy/k8s").glob("*.yaml")}
DOCKERFILE = (ROOT / "Dockerfile").read_text()
CONNECTOR = json.loads((ROOT / "deploy/debezium/platform-connector.json").read_text())
CONFIGMAP: dict[str, str] = K8S["configmap.yaml"]["data"]
DEPLOYMENT: dict[str, Any] = K8S["deployment.yaml"]
CONTAINER: dict[str, Any] = DEPLOYMENT["spec"]["template"]["spec"]["containers"][0]


def known_env_names() -> set[str]:
    names = set()
    for model in (RuntimeSettings, StackSettings):
        for name, info in model.model_fields.items():
            alias = info.validation_alias
            names.add(alias if isinstance(alias, str) else f"ALLOCGUARD_{name.upper()}")
    # read by click options and by deploy_dir()
    names |= {"ALLOCGUARD_CONNECT_URL", "ALLOCGUARD_CDC_PASSWORD", "ALLOCGUARD_DEPLOY_DIR", "ALLOCGUARD_LOGIN_PASSWORD"}
    return names


def env_of_compose(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in COMPOSE["services"][service]["environment"].items()}


@pytest.mark.parametrize(
    ("where", "names"),
    [
        ("compose allocguard", set(env_of_compose("allocguard"))),
        ("compose init", set(env_of_compose("init"))),
        ("k8s configmap", set(CONFIGMAP)),
        ("k8s secret example", set(K8S["secret.example.yaml"]["stringData"])),
        ("Dockerfile", set(re.findall(r"(ALLOCGUARD_[A-Z_]+)=", DOCKERFILE))),
    ],
)
def test_every_allocguard_variable_is_one_the_code_reads(where: str, names: set[str]) -> None:
    unknown = {n for n in names if n.startswith("ALLOCGUARD_")} - known_env_names()
    assert not unknown, f"{where} sets variables nothing reads: {sorted(unknown)}"


def test_configmap_and_secret_validate_as_runtime_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**CONFIGMAP, **K8S["secret.example.yaml"]["stringData"]}.items():
        monkeypatch.setenv(name, value)
    settings = RuntimeSettings()
    assert settings.health_port == int(CONFIGMAP["ALLOCGUARD_HEALTH_PORT"])
    assert settings.librdkafka()["security.protocol"] == "SASL_SSL"
    assert "CHANGE-ME" not in json.dumps(settings.redacted()), "secrets stay out of logs"


def test_ports_agree() -> None:
    port = RuntimeSettings().health_port
    assert f"EXPOSE {port}" in DOCKERFILE
    assert f"ALLOCGUARD_HEALTH_PORT={port}" in DOCKERFILE
    assert CONTAINER["ports"][0]["containerPort"] == port
    assert int(CONFIGMAP["ALLOCGUARD_HEALTH_PORT"]) == port
    assert env_of_compose("allocguard")["ALLOCGUARD_HEALTH_PORT"] == str(port)
    assert DEPLOYMENT["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)


def test_probe_paths_are_served() -> None:
    health = Health()
    health.assigned.add(("t", 0))
    settings = RuntimeSettings(health_host="127.0.0.1", health_port=free_port())
    metrics = Metrics()
    server = serve_health(settings, health, metrics.exposition)
    try:
        paths = {
            CONTAINER["livenessProbe"]["httpGet"]["path"],
            CONTAINER["readinessProbe"]["httpGet"]["path"],
            CONTAINER["startupProbe"]["httpGet"]["path"],
            DEPLOYMENT["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"],
        }
        assert paths == {"/healthz", "/readyz", "/metrics"}
        for path in paths:
            with urllib.request.urlopen(f"http://127.0.0.1:{settings.health_port}{path}", timeout=2) as response:
                assert response.status == 200, path
        assert "/healthz" in DOCKERFILE
        assert "/readyz" in json.dumps(COMPOSE["services"]["allocguard"]["healthcheck"])
    finally:
        server.shutdown()
        server.server_close()


def test_termination_grace_covers_the_drain() -> None:
    grace = DEPLOYMENT["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(CONFIGMAP["ALLOCGUARD_SHUTDOWN_TIMEOUT_S"])
    assert grace > RuntimeSettings().shutdown_timeout_s
    stop = COMPOSE["services"]["allocguard"]["stop_grace_period"]
    assert int(stop.rstrip("s")) > RuntimeSettings().shutdown_timeout_s


def test_pdb_and_secret_reference_match_the_deployment() -> None:
    labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    assert K8S["pdb.yaml"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    refs = {next(iter(ref.values()))["name"] for ref in CONTAINER["envFrom"]}
    assert refs == {K8S["configmap.yaml"]["metadata"]["name"], K8S["secret.example.yaml"]["metadata"]["name"]}


def test_strimzi_connector_is_the_same_connector() -> None:
    connector = K8S["kafkaconnector.yaml"]
    assert connector["kind"] == "KafkaConnector"
    assert connector["spec"]["class"] == CONNECTOR["connector.class"]
    assert connector["spec"]["tasksMax"] == int(CONNECTOR["tasks.max"])
    config = connector["spec"]["config"]
    differs = {k for k in CONNECTOR if k not in ("connector.class", "tasks.max") and config.get(k) != CONNECTOR[k]}
    assert differs == {"database.hostname", "database.password"}
    assert config["database.password"].startswith("${secrets:")
    assert config["topic.prefix"] == CONFIGMAP["ALLOCGUARD_TOPIC_PREFIX"]


def test_compose_uses_commands_that_exist() -> None:
    command = " ".join(COMPOSE["services"]["init"]["command"])
    assert "allocguard db init --with-reference-schema --with-cdc" in command
    assert "allocguard connector register" in command
    assert "register" in main.commands["connector"].commands  # type: ignore[attr-defined]
    assert COMPOSE["services"]["allocguard"].get("command") is None  # the image's CMD: run
    assert 'CMD ["run"]' in DOCKERFILE


def test_the_image_carries_every_package_and_the_sql() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = [pattern.rstrip("*") for pattern in patterns["include"]]
    assert packages == ["consumer", "handlers", "schemas"]
    for package in packages:
        assert f"COPY {package} {package}" in DOCKERFILE
    assert "COPY deploy/sql" in DOCKERFILE
    assert "ALLOCGUARD_DEPLOY_DIR=/opt/allocguard/deploy" in DOCKERFILE


def test_trace_ui_link_is_the_same_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """compose and the ConfigMap give a trace UI link template; it validates, and only an http(s) URL with the
    {trace_id} placeholder is accepted."""
    for where, template in (
        ("compose", env_of_compose("allocguard")["ALLOCGUARD_TRACE_UI_URL"]),
        ("configmap", CONFIGMAP["ALLOCGUARD_TRACE_UI_URL"]),
    ):
        monkeypatch.setenv("ALLOCGUARD_TRACE_UI_URL", template)
        link = RuntimeSettings().trace_link("ab" * 16)
        assert link is not None, where
        assert link.endswith("/trace/" + "ab" * 16), f"{where}: {link}"
    assert RuntimeSettings(trace_ui_url=None).trace_link("ab" * 16) is None
    assert RuntimeSettings(trace_ui_url="http://ui/t/{trace_id}").trace_link(None) is None
    for bad in ("http://ui/trace/", "javascript:alert(1)//{trace_id}"):
        with pytest.raises(ValueError, match="TRACE_UI_URL"):
            RuntimeSettings(trace_ui_url=bad)


def test_compose_jaeger_fills_every_variable_of_the_shared_config() -> None:
    """compose runs the same Jaeger config as the local stack: every ${env:...} in it is set (or has a default)."""
    config = (ROOT / "deploy/local/jaeger/config.yaml").read_text()
    needed = set(re.findall(r"\$\{env:([A-Z_]+)\}", config))
    assert needed, "the config takes its ports from the environment"
    jaeger = COMPOSE["services"]["jaeger"]
    assert needed <= set(jaeger["environment"]), needed - set(jaeger["environment"])
    assert "../local/jaeger/config.yaml:/etc/jaeger/config.yaml:ro" in jaeger["volumes"]
    published = {p.split(":")[0] for p in jaeger["ports"]}
    assert {jaeger["environment"]["JAEGER_UI_PORT"], jaeger["environment"]["JAEGER_OTLP_HTTP_PORT"]} <= published
    endpoint = env_of_compose("allocguard")["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert endpoint == f"http://jaeger:{jaeger['environment']['JAEGER_OTLP_HTTP_PORT']}"


def test_kafka_cluster_ids_never_start_with_a_dash() -> None:
    """Kafka's storage tool reads an id starting with '-' as an option (one in 64 random ids; seen in CI)."""
    from consumer.local.stack import _kafka_cluster_id

    ids = [_kafka_cluster_id() for _ in range(5000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 22 for i in ids)
