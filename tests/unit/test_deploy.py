"""The Dockerfile and the Helm chart agree with the code — configuration names, ports, probe paths, shutdown
bounds, the connector config. (The image is built and run in tests/deploy/test_image.py; the chart is linted,
rendered and validated against schemas in tests/deploy/test_chart.py.)"""

from __future__ import annotations

import json
import re
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from consumer.config import RuntimeSettings
from consumer.local.settings import StackSettings
from consumer.runtime.health import Health, serve_health
from consumer.telemetry import Metrics
from tests.support.manifests import PRODUCTION_VALUES, render
from tests.support.process import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
RENDERED = {(doc["kind"], doc["metadata"]["name"]): doc for doc in render(PRODUCTION_VALUES)}
CONFIGMAP: dict[str, str] = RENDERED[("ConfigMap", "allocguard")]["data"]
DEPLOYMENT: dict[str, Any] = RENDERED[("Deployment", "allocguard")]
CONTAINER: dict[str, Any] = DEPLOYMENT["spec"]["template"]["spec"]["containers"][0]
JOB: dict[str, Any] = RENDERED[("Job", "allocguard-migrations")]


def known_env_names() -> set[str]:
    names = set()
    for model in (RuntimeSettings, StackSettings):
        for name, info in model.model_fields.items():
            alias = info.validation_alias
            names.add(alias if isinstance(alias, str) else f"ALLOCGUARD_{name.upper()}")
    # read by click options and by deploy_dir()
    names |= {"ALLOCGUARD_CONNECT_URL", "ALLOCGUARD_CDC_PASSWORD", "ALLOCGUARD_DEPLOY_DIR", "ALLOCGUARD_LOGIN_PASSWORD",
              "ALLOCGUARD_ADMIN_DSN", "ALLOCGUARD_LOG_FORMAT"}  # fmt: skip
    return names


def env_names(container: dict[str, Any]) -> set[str]:
    return {item["name"] for item in container.get("env", [])}


@pytest.mark.parametrize(
    ("where", "names"),
    [
        ("chart configmap", set(CONFIGMAP)),
        ("chart deployment env", env_names(CONTAINER)),
        ("chart migrations job env", env_names(JOB["spec"]["template"]["spec"]["containers"][0])),
        ("Dockerfile", set(re.findall(r"(ALLOCGUARD_[A-Z_]+)=", DOCKERFILE))),
    ],
)
def test_every_allocguard_variable_is_one_the_code_reads(where: str, names: set[str]) -> None:
    unknown = {n for n in names if n.startswith("ALLOCGUARD_")} - known_env_names()
    assert not unknown, f"{where} sets variables nothing reads: {sorted(unknown)}"


def test_the_rendered_configmap_validates_as_runtime_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CONFIGMAP.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ALLOCGUARD_PG_DSN", "postgresql://allocguard_app:secret@db/platform")
    monkeypatch.setenv("ALLOCGUARD_KAFKA_CONFIG", '{"security.protocol": "SASL_SSL"}')
    settings = RuntimeSettings()
    assert settings.health_port == int(CONFIGMAP["ALLOCGUARD_HEALTH_PORT"])
    assert settings.mode == "approve"
    assert settings.prevention is True
    assert "secret" not in json.dumps(settings.redacted()), "secrets stay out of logs"


def test_ports_agree() -> None:
    port = RuntimeSettings().health_port
    assert f"EXPOSE {port}" in DOCKERFILE
    assert f"ALLOCGUARD_HEALTH_PORT={port}" in DOCKERFILE
    assert CONTAINER["ports"][0]["containerPort"] == port
    assert int(CONFIGMAP["ALLOCGUARD_HEALTH_PORT"]) == port
    service = RENDERED[("Service", "allocguard")]
    assert service["spec"]["ports"][0]["port"] == port
    monitor = RENDERED[("ServiceMonitor", "allocguard")]
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


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
            RENDERED[("ServiceMonitor", "allocguard")]["spec"]["endpoints"][0]["path"],
        }
        assert paths == {"/healthz", "/readyz", "/metrics"}
        for path in paths:
            with urllib.request.urlopen(f"http://127.0.0.1:{settings.health_port}{path}", timeout=2) as response:
                assert response.status == 200, path
    finally:
        server.shutdown()
        server.server_close()


def test_termination_grace_covers_the_drain() -> None:
    grace = DEPLOYMENT["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(CONFIGMAP["ALLOCGUARD_SHUTDOWN_TIMEOUT_S"])
    assert grace > RuntimeSettings().shutdown_timeout_s


def test_the_image_carries_every_package_and_the_sql() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = [pattern.rstrip("*") for pattern in patterns["include"]]
    assert packages == ["consumer", "handlers", "schemas"]
    for package in packages:
        assert f"COPY {package} {package}" in DOCKERFILE
    assert "COPY deploy/sql" in DOCKERFILE
    assert "COPY deploy/debezium" in DOCKERFILE
    assert 'CMD ["run"]' in DOCKERFILE
    assert "ALLOCGUARD_DEPLOY_DIR=/opt/allocguard/deploy" in DOCKERFILE


def test_trace_ui_link_is_the_same_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """The production values give a trace UI link template; it validates, and only an http(s) URL with the
    {trace_id} placeholder is accepted."""
    for where, template in (("production configmap", CONFIGMAP["ALLOCGUARD_TRACE_UI_URL"]),):
        monkeypatch.setenv("ALLOCGUARD_TRACE_UI_URL", template)
        link = RuntimeSettings().trace_link("ab" * 16)
        assert link is not None, where
        assert link.endswith("/trace/" + "ab" * 16), f"{where}: {link}"
    assert RuntimeSettings(trace_ui_url=None).trace_link("ab" * 16) is None
    assert RuntimeSettings(trace_ui_url="http://ui/t/{trace_id}").trace_link(None) is None
    for bad in ("http://ui/trace/", "javascript:alert(1)//{trace_id}"):
        with pytest.raises(ValueError, match="TRACE_UI_URL"):
            RuntimeSettings(trace_ui_url=bad)


def test_kafka_cluster_ids_never_start_with_a_dash() -> None:
    """Kafka's storage tool reads an id starting with '-' as an option (one in 64 random ids; seen in CI)."""
    from consumer.local.stack import _kafka_cluster_id

    ids = [_kafka_cluster_id() for _ in range(5000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 22 for i in ids)
