"""The Helm chart through the tools its users run: helm lint --strict, helm template with the default and the
production values, every resource against its schema (Kubernetes 1.33, the Prometheus Operator's CRDs, Strimzi
v1), every pod spec against Pod Security "restricted" — and the checks themselves can fail."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from consumer.operations.connector import production_config
from tests.support.manifests import CHART, PRODUCTION_VALUES, lint, render, run_helm, validate

DEFAULT = render()
PRODUCTION = render(PRODUCTION_VALUES)


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, (kind, [d["kind"] for d in docs])
    return found[0]


def test_helm_lint_strict_passes_with_the_default_and_the_production_values() -> None:
    assert lint() == []


@pytest.mark.parametrize("docs", [DEFAULT, PRODUCTION], ids=["default", "production"])
def test_every_rendered_resource_validates_against_its_schema_and_pod_security_restricted(
    docs: list[dict[str, Any]],
) -> None:
    report = validate(docs)
    assert report.problems == []
    assert len(report.checked) == len(docs)


def test_the_production_values_render_every_kind() -> None:
    kinds = sorted(doc["kind"] for doc in PRODUCTION)
    assert kinds == sorted(
        ["ConfigMap", "ConfigMap", "Deployment", "Job", "KafkaConnector", "KafkaTopic", "KafkaUser", "NetworkPolicy",
         "PodDisruptionBudget", "PrometheusRule", "Service", "ServiceAccount", "ServiceMonitor",
         # the approval API (serve.enabled)
         "Deployment", "Service", "NetworkPolicy"]
    )  # fmt: skip


def test_the_checks_fail_on_what_they_must_refuse() -> None:
    deployment = one(DEFAULT, "Deployment")
    unknown_field = copy.deepcopy(deployment)
    unknown_field["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    privileged = copy.deepcopy(deployment)
    privileged["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    no_seccomp = copy.deepcopy(deployment)
    del no_seccomp["spec"]["template"]["spec"]["securityContext"]["seccompProfile"]
    del no_seccomp["spec"]["template"]["spec"]["containers"][0]["securityContext"]["seccompProfile"]
    host_path = copy.deepcopy(deployment)
    host_path["spec"]["template"]["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}})
    bad_user = copy.deepcopy(one(PRODUCTION, "KafkaUser"))
    bad_user["spec"]["authorization"]["acls"][0]["operations"] = ["Everything"]
    unknown_kind = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}}
    problems = validate([unknown_field, privileged, no_seccomp, host_path, bad_user, unknown_kind]).problems
    text = "\n".join(problems)
    for expected in ("imagePullPolice", "privileged", "seccompProfile", "hostPath", "Everything", "no schema"):
        assert expected in text, (expected, problems)


def test_the_kafkaconnector_is_what_connector_register_posts() -> None:
    connector = one(PRODUCTION, "KafkaConnector")
    site = {"db_host": "platform-db.db.svc", "db_password": "${secrets:kafka/platform-db-cdc:password}"}
    posted = production_config(**site, topic_prefix="platform")
    assert connector["apiVersion"] == "kafka.strimzi.io/v1"
    assert connector["spec"]["class"] == posted.pop("connector.class")
    assert connector["spec"]["tasksMax"] == int(posted.pop("tasks.max"))
    assert connector["spec"]["config"] == posted
    assert connector["spec"]["autoRestart"]["enabled"] is True


def test_the_kafkauser_grants_only_what_allocguard_does() -> None:
    acls = one(PRODUCTION, "KafkaUser")["spec"]["authorization"]["acls"]
    granted = {(a["resource"]["type"], a["resource"]["name"], op) for a in acls for op in a["operations"]}
    assert {(kind, name) for kind, name, _ in granted} == {
        ("topic", "platform.public."),
        ("topic", "__debezium-heartbeat.platform"),
        ("topic", "platform.allocguard.dlq"),
        ("group", "allocguard"),
    }
    assert {op for *_, op in granted} <= {"Describe", "Read", "Write"}
    assert [op for kind, name, op in granted if op == "Write"] == ["Write"]  # the DLQ only
    assert one(PRODUCTION, "KafkaTopic")["spec"]["topicName"] == "platform.allocguard.dlq"


def test_drains_are_not_blocked_and_membership_is_dynamic() -> None:
    pdb = one(DEFAULT, "PodDisruptionBudget")
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    container = one(DEFAULT, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "ALLOCGUARD_INSTANCE_ID" not in {e["name"] for e in container.get("env", [])}
    assert one(DEFAULT, "ServiceAccount")["automountServiceAccountToken"] is False
    job = one(DEFAULT, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["db", "init"]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("terminationGracePeriodSeconds=10", "terminationGracePeriodSeconds must exceed"),
        ("settings.ALLOCGUARD_KAFKA_BOOTSTRAP=", "ALLOCGUARD_KAFKA_BOOTSTRAP is required"),
        ("secrets.pgDsn.name=", "secrets.pgDsn.name is required"),
        ("settings.KAFKA_BOOTSTRAP=x", "only ALLOCGUARD_* settings"),
    ],
)
def test_the_chart_refuses_values_that_cannot_work(setting: str, message: str) -> None:
    result = run_helm("template", "allocguard", str(CHART), "--set", setting)
    assert result.returncode != 0, result.stdout
    assert message in result.stderr, result.stderr


def test_the_approval_api_is_its_own_pods() -> None:
    """serve's pods carry labels disjoint from the consumer's: neither Deployment, Service, PDB nor NetworkPolicy of
    one selects the other's pods; its ingress is the API port only, its egress DNS and PostgreSQL only."""
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in PRODUCTION}
    serve = by_name[("Deployment", "allocguard-serve")]
    consumer = by_name[("Deployment", "allocguard")]
    serve_labels = serve["spec"]["template"]["metadata"]["labels"]
    for kind, name in (("Deployment", "allocguard"), ("Service", "allocguard"), ("NetworkPolicy", "allocguard"),
                       ("PodDisruptionBudget", "allocguard")):  # fmt: skip
        spec = by_name[(kind, name)]["spec"]
        selector = (
            spec.get("selector", {}).get("matchLabels") or spec.get("selector") or spec["podSelector"]["matchLabels"]
        )
        assert not set(selector.items()) <= set(serve_labels.items()), f"{kind} {name} selects serve's pods"
    assert serve["spec"]["template"]["spec"]["containers"][0]["args"][0] == "serve"
    assert consumer["spec"]["template"]["spec"]["containers"][0]["args"] == ["run"]
    policy = by_name[("NetworkPolicy", "allocguard-serve")]["spec"]
    assert [p["port"] for rule in policy["ingress"] for p in rule["ports"]] == [8090]
    assert sorted({p["port"] for rule in policy["egress"] for p in rule["ports"]}) == [53, 5432]
