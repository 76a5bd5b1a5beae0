"""docs/configuration.md is generated from the settings classes and the CLI, and complete: a test fails when it is
stale, when the code reads a variable it does not list, or when the Kubernetes files name one it does not."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from consumer.config import RuntimeSettings
from consumer.configref import OTHERS, field_meanings, render

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs/configuration.md").read_text()
VARIABLE = re.compile(r"ALLOCGUARD_[A-Z0-9_]+")
#: names in the code that are not variables
NOT_VARIABLES = {"ALLOCGUARD_KEY_PREFIX"}


def documented() -> set[str]:
    return set(re.findall(r"^\| `(ALLOCGUARD_[A-Z0-9_]+)`", DOC, flags=re.MULTILINE))


def test_the_reference_is_current() -> None:
    assert render() == DOC, "stale: run `python -m consumer.configref > docs/configuration.md`"


def test_every_variable_the_code_reads_is_listed() -> None:
    read = set()
    for folder in ("consumer", "handlers", "schemas"):
        for path in (ROOT / folder).rglob("*.py"):
            read |= set(VARIABLE.findall(path.read_text()))
    assert read - NOT_VARIABLES - documented() == set()


def test_every_setting_says_what_it_means() -> None:
    meanings = field_meanings(RuntimeSettings)
    assert [name for name in RuntimeSettings.model_fields if not meanings.get(name)] == []
    assert [o.variable for o in OTHERS if not o.meaning] == []


def test_the_chart_names_documented_variables_and_every_setting_of_run() -> None:
    """The chart's values name every setting of ``allocguard run`` (by variable) and nothing undocumented; the
    ones the chart sets itself or takes from Secrets are named in the chart."""
    values = yaml.safe_load((ROOT / "deploy/helm/allocguard/values.yaml").read_text())
    chart_text = "\n".join(p.read_text() for p in (ROOT / "deploy/helm/allocguard").rglob("*.yaml"))
    settings = set(values["settings"])
    assert settings - documented() == set()
    run_settings = {f"ALLOCGUARD_{name.upper()}" for name in RuntimeSettings.model_fields}
    by_chart = {name for name in run_settings - settings if name in chart_text}
    assert run_settings - settings - by_chart == set(), "settings of run the chart cannot set"
    assert by_chart <= {
        "ALLOCGUARD_PG_DSN",
        "ALLOCGUARD_KAFKA_CONFIG",
        "ALLOCGUARD_ASSIGN_ENDPOINT",
        "ALLOCGUARD_ASSIGN_HEADERS",
        "ALLOCGUARD_DECISION_WEBHOOK_URL",
        "ALLOCGUARD_DECISION_SLACK_WEBHOOK_URL",
        "ALLOCGUARD_HEALTH_HOST",
        "ALLOCGUARD_HEALTH_PORT",
        "ALLOCGUARD_ARTIFACTS_DIR",
        "ALLOCGUARD_INSTANCE_ID",
    }
