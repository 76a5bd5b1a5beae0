"""The Helm chart checked by the tools its users run: ``helm lint --strict`` and ``helm template`` (helm v4 from
the Go module proxy), every rendered resource validated against a schema — Kubernetes' own (kubernetes-validate,
strict: an unknown field fails), the Prometheus Operator's published CRDs (from its Go module), Strimzi's v1
resources against a schema written from its CRD reference (no reachable registry publishes its CRDs) — and every
pod spec against Pod Security "restricted". A resource with no schema is an error, never silently passed.

``python -m tests.support.manifests`` prints the report; tests/deploy/test_chart.py asserts on it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from consumer.local.gotools import go_binary, go_tool
from consumer.local.settings import StackSettings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "allocguard"
PRODUCTION_VALUES = ROOT / "deploy" / "helm" / "values-production.yaml"
KUBERNETES_VERSION = "1.33.0"
#: the Prometheus Operator's CRDs, from its Go module (the newest version the proxy here serves)
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator@v0.88.0"
STRIMZI_SCHEMA = Path(__file__).resolve().parent / "schemas" / "strimzi-v1.yaml"
POD_KINDS = {"Deployment": ("spec", "template", "spec"), "Job": ("spec", "template", "spec"), "Pod": ("spec",)}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                      "secret"}  # fmt: skip


def helm() -> Path:
    return go_tool(ROOT / "deploy" / "tools" / "helm", "helm.sh/helm/v4/cmd/helm", "helm",
                   StackSettings().tool_cache_dir, lambda line: print(line, file=sys.stderr))  # fmt: skip


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm()), *args], capture_output=True, text=True, check=False, timeout=300)


def render(*values: Path, extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    args = ["template", "allocguard", str(CHART), "--namespace", "platform", "--kube-version", KUBERNETES_VERSION]
    for path in values:
        args += ["-f", str(path)]
    result = run_helm(*args, *extra)
    if result.returncode != 0:
        raise AssertionError(f"helm template failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) → the openAPIV3Schema of each served version, from the Prometheus Operator's module;
    objects get ``additionalProperties: false`` unless they preserve unknown fields (strict, as kubectl is)."""
    found = subprocess.run(
        [go_binary(), "mod", "download", "-json", PROMETHEUS_OPERATOR],
        capture_output=True, text=True, check=False, timeout=600, cwd="/",
    )  # fmt: skip
    if found.returncode != 0:
        raise AssertionError(f"go mod download {PROMETHEUS_OPERATOR} failed:\n{found.stdout}{found.stderr}")
    folder = Path(json.loads(found.stdout)["Dir"]) / "example" / "prometheus-operator-crd"
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for name in ("servicemonitors", "prometheusrules"):
        crd = yaml.safe_load((folder / f"monitoring.coreos.com_{name}.yaml").read_text())
        for version in crd["spec"]["versions"]:
            api = f"{crd['spec']['group']}/{version['name']}"
            schemas[(api, crd["spec"]["names"]["kind"])] = _strict(version["schema"]["openAPIV3Schema"])
    strimzi = yaml.safe_load(STRIMZI_SCHEMA.read_text())
    for kind, schema in strimzi.items():
        schemas[("kafka.strimzi.io/v1", kind)] = schema
    return schemas


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    out = dict(schema)
    pattern = out.get("pattern")
    if isinstance(pattern, str) and "(?i)" in pattern[1:]:  # Go's RE2 takes inline flags anywhere; Python first
        out["pattern"] = "(?i)" + pattern.replace("(?i)", "")
    if "properties" in out:
        out["properties"] = {k: _strict(v) for k, v in out["properties"].items()}
        if out.get("type") == "object" and not out.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _strict(out[key])
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


@dataclass
class Report:
    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def line(self, doc: dict[str, Any]) -> str:
        return f"{doc.get('apiVersion')} {doc.get('kind')} {doc.get('metadata', {}).get('name')}"


def validate(docs: list[dict[str, Any]]) -> Report:
    report = Report()
    for doc in docs:
        name = report.line(doc)
        key = (str(doc.get("apiVersion")), str(doc.get("kind")))
        schema = crd_schemas().get(key)
        try:
            if schema is not None:
                jsonschema.validate(doc, schema)
                report.checked.append(f"{name}: custom resource schema")
            else:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
                report.checked.append(f"{name}: Kubernetes {KUBERNETES_VERSION} schema")
        except kubernetes_validate.SchemaNotFoundError:
            report.problems.append(f"{name}: no schema to validate it against")
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            report.problems.append(f"{name}: {getattr(exc, 'message', exc)}")
        report.problems += [f"{name}: {problem}" for problem in restricted_problems(doc)]
    return report


def pod_specs(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    path = POD_KINDS.get(str(doc.get("kind")))
    if path is None:
        return
    spec: Any = doc
    for step in path:
        spec = spec[step]
    yield spec


def restricted_problems(doc: dict[str, Any]) -> list[str]:
    """Pod Security Standards, "restricted" (which includes "baseline"), for each pod spec in the resource."""
    problems: list[str] = []
    for spec in pod_specs(doc):
        pod = spec.get("securityContext") or {}
        for host in ("hostNetwork", "hostPID", "hostIPC", "hostUsers"):
            if spec.get(host) and host != "hostUsers":
                problems.append(f"{host} is set")
        for volume in spec.get("volumes") or []:
            kinds = set(volume) - {"name"}
            if not kinds <= RESTRICTED_VOLUMES:
                problems.append(f"volume {volume['name']} is {sorted(kinds)}: not allowed")
        if pod.get("runAsUser") == 0:
            problems.append("pod runAsUser 0")
        for container in [*spec.get("containers", []), *spec.get("initContainers", [])]:
            sc = container.get("securityContext") or {}
            where = f"container {container['name']}"
            if sc.get("privileged"):
                problems.append(f"{where}: privileged")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation must be false")
            if sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
                problems.append(f"{where}: runAsNonRoot must be true")
            if sc.get("runAsUser", pod.get("runAsUser")) == 0:
                problems.append(f"{where}: runAsUser 0")
            seccomp = (sc.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                problems.append(f"{where}: seccompProfile must be RuntimeDefault or Localhost, is {seccomp}")
            caps = sc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                problems.append(f"{where}: capabilities must drop ALL")
            if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
                problems.append(f"{where}: adds capabilities {caps['add']}")
            for port in container.get("ports") or []:
                if port.get("hostPort"):
                    problems.append(f"{where}: hostPort {port['hostPort']}")
    return problems


def lint() -> list[str]:
    """helm lint --strict with the default values and with the production example; the failures."""
    failures = []
    for values in ((), ("-f", str(PRODUCTION_VALUES))):
        result = run_helm("lint", "--strict", str(CHART), *values)
        if result.returncode != 0:
            failures.append(f"helm lint --strict {' '.join(values)}:\n{result.stdout}{result.stderr}")
    return failures


def main() -> int:
    failures = lint()
    for label, values in (("default values", ()), ("production values", (PRODUCTION_VALUES,))):
        report = validate(render(*values))
        print(f"{label}:")
        for line in report.checked:
            print(f"  ok    {line}")
        for line in report.problems:
            print(f"  FAIL  {line}")
        failures += report.problems
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
