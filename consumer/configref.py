"""The configuration reference, generated: every variable allocguard reads, the flags that set it, its default,
its meaning (the ``#:`` comment above the field) and whether it is a secret.

    python -m consumer.configref > docs/configuration.md

``tests/unit/test_configuration_reference.py`` fails when the file is stale, when a variable the code reads is
missing from it, or when the Kubernetes files name a variable it does not.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from consumer.config import REPO_ROOT, RuntimeSettings
from consumer.local.settings import StackSettings

#: option names that set a field of another name
_ALIASES = {"dsn": "pg_dsn", "from_beginning": "auto_offset_reset"}


@dataclass(frozen=True)
class Other:
    """A variable read outside the settings classes (by one command)."""

    variable: str
    default: str
    meaning: str
    secret: bool = False


OTHERS = (
    Other(
        "ALLOCGUARD_ADMIN_DSN", "—", "the database owner's login, for `db init` only (never allocguard's runtime)", True
    ),
    Other(
        "ALLOCGUARD_LOGIN_PASSWORD", "—", "`db init --login-role`: the password given to allocguard's login role", True
    ),
    Other(
        "ALLOCGUARD_CDC_PASSWORD",
        "the file's provider reference",
        "`connector register`: database.password, a Connect config-provider reference or the CDC role's password",
        True,
    ),
    Other(
        "ALLOCGUARD_UNDO_DSN",
        "—",
        "`undo`, `unpin`: an operator's login, a member of allocguard_undo (never allocguard's runtime login)",
        True,
    ),
    Other("ALLOCGUARD_OPERATOR", "the OS user", "who decides a plan or runs a reconcile (recorded with the decision)"),
    Other(
        "ALLOCGUARD_SERVE_HOST",
        "— (required)",
        "`serve`: the address the approval API listens on (0.0.0.0 in a pod, the loopback address on one machine)",
    ),
    Other("ALLOCGUARD_SERVE_PORT", "8090", "`serve`: the approval API's port"),
    Other(
        "ALLOCGUARD_SERVE_IDENTITY_HEADER",
        "—",
        "`serve` behind an authenticating proxy only: the header it sets to the operator's name (instead of tokens)",
    ),
    Other("ALLOCGUARD_LOG_FORMAT", "text", "`run`: text, or json (one object per line, with trace and span ids)"),
    Other(
        "ALLOCGUARD_LOG_LEVEL",
        "INFO",
        "`run`: DEBUG, INFO, WARNING, ERROR or CRITICAL. Not librdkafka's `debug` in ALLOCGUARD_KAFKA_CONFIG: its "
        "debug lines through the Python logger aborted the process inside `consume` (confluent-kafka 2.16)",
    ),
    Other("ALLOCGUARD_DEPLOY_DIR", "the checkout's deploy/", "where deploy/ is (the image sets it)"),
    Other("ALLOCGUARD_PLATFORM_DSN", "—", "`simulate` and the tests: the platform's own back-end role", True),
    Other("ALLOCGUARD_FAILPOINT", "—", "tests only: after_prune or after_assign kills the process there (kill -9)"),
)


def field_meanings(cls: type[BaseSettings]) -> dict[str, str]:
    """Each field's ``#:`` comment (the lines right above it), joined."""
    meanings: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        found = re.match(r"    (\w+): ", line)
        if found and found.group(1) in cls.model_fields:
            meanings[found.group(1)] = " ".join(pending)
        pending = [] if not stripped.startswith("#") else pending
    return meanings


def _variable(cls: type[BaseSettings], name: str) -> str:
    alias = cls.model_fields[name].validation_alias
    return alias if isinstance(alias, str) else f"ALLOCGUARD_{name.upper()}"


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            found += _commands(command, f"{path} ")
        else:
            found.append((path, command))
    return found


def flags_by_variable() -> dict[str, list[str]]:
    """``command --flag`` for every option that sets a variable (by its envvar, or by naming a runtime field)."""
    from consumer.cli import main

    fields = {name: _variable(RuntimeSettings, name) for name in RuntimeSettings.model_fields}
    flags: dict[str, set[str]] = {}
    for path, command in _commands(main):
        for param in command.params:
            if not isinstance(param, click.Option) or param.name is None:
                continue
            envvars = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
            variable = envvars[0] if envvars else fields.get(_ALIASES.get(param.name, param.name))
            if variable is not None:
                flags.setdefault(variable, set()).add(f"`{path} {param.opts[0]}`")
    return {variable: sorted(found) for variable, found in flags.items()}


def _default(cls: type[BaseSettings], name: str) -> str:
    field = cls.model_fields[name]
    value: Any = field.get_default(call_default_factory=True)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None or value == "":
        return "required" if name in ("pg_dsn", "kafka_bootstrap") else "—"
    if isinstance(value, list | dict) and not value:
        return "—"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    # the same on every machine: the checkout and the home folder by name
    return str(value).replace(str(REPO_ROOT), "<checkout>").replace(str(Path.home()), "~")


def _secret(cls: type[BaseSettings], name: str) -> bool:
    return "SecretStr" in str(cls.model_fields[name].annotation) or isinstance(
        cls.model_fields[name].default, SecretStr
    )


def _row(variable: str, flags: list[str], default: str, meaning: str, secret: bool) -> str:
    cells = [f"`{variable}`", ", ".join(flags) or "—", f"`{default}`" if default != "—" else "—", meaning]
    cells.append("**secret**" if secret else "")
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def render() -> str:
    flags = flags_by_variable()
    header = "| variable | flags | default | meaning | secret |\n|---|---|---|---|---|"
    lines = [
        "# Configuration reference",
        "",
        "Generated by `python -m consumer.configref > docs/configuration.md` from the settings classes and the CLI;",
        "a test fails when it is stale. A flag wins over the variable, which wins over a `.env` line. Commands that",
        "talk to production have **no defaults** for where PostgreSQL and Kafka are: an unset required setting is",
        "named (variable and flag) and the command exits 2 before connecting anywhere.",
        "",
        "## `allocguard run` and the commands that share its settings",
        "",
        header,
    ]
    meanings = field_meanings(RuntimeSettings)
    for name in RuntimeSettings.model_fields:
        variable = _variable(RuntimeSettings, name)
        row = _row(
            variable,
            flags.get(variable, []),
            _default(RuntimeSettings, name),
            meanings[name],
            _secret(RuntimeSettings, name),
        )
        lines.append(row)
    lines += ["", "## Read by one command", "", header]
    lines += [_row(o.variable, flags.get(o.variable, []), o.default, o.meaning, o.secret) for o in OTHERS]
    lines += [
        "",
        "## The local stack only (`allocguard stack …`, the demo, the tests and benches)",
        "",
        'Never read by a command that talks to production. `eval "$(allocguard stack env)"` exports where the local',
        "stack's services are.",
        "",
        header,
    ]
    local = field_meanings(StackSettings)
    for name in StackSettings.model_fields:
        variable = _variable(StackSettings, name)
        if variable in {_variable(RuntimeSettings, n) for n in RuntimeSettings.model_fields} | {
            o.variable for o in OTHERS
        }:
            continue
        default = _default(StackSettings, name)
        lines.append(
            _row(variable, flags.get(variable, []), default, local.get(name, ""), _secret(StackSettings, name))
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
