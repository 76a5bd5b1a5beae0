"""Every ``allocguard …`` and ``make …`` command the README and docs/ show is one that exists: click parses it
(with ``--help`` appended, so nothing runs) and the make target is in the Makefile."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from consumer.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: shell blocks hold commands; untagged blocks hold output
FENCE = re.compile(r"```(?:bash|sh|shell|console)\n(.*?)```", re.DOTALL)
INLINE = re.compile(r"`((?:allocguard|make) [^`]+)`")
TARGETS = set(re.findall(r"^([a-z][a-z0-9-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))


def commands() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for path in DOCS:
        text = path.read_text()
        for block in FENCE.findall(text):
            for line in block.splitlines():
                line = line.strip().removeprefix("$ ").removeprefix(".venv/bin/")
                if line.startswith(("allocguard ", "make ")) or line in ("make", "allocguard"):
                    found.append((path.name, line))
        found += [(path.name, command) for command in INLINE.findall(text)]
    return found


def words(command: str) -> list[str]:
    command = re.split(r"\s+#|&&|\|\||[|;>]", command)[0]
    command = re.sub(r"<[^>]*>", "x", command).replace("\\", " ")
    command = command.replace("[", " ").replace("]", " ")  # "[--mode auto]": optional, still checked
    command = re.sub(r"\$\([^)]*\)|\$\{[^}]*\}|\$[A-Z_]+", "x", command)
    try:
        parts = shlex.split(command)
    except ValueError:  # an unbalanced quote in prose
        parts = command.split()
    out: list[str] = []
    for part in parts:
        if part in ("…", "...") and (not out or not out[-1].startswith("-")):
            break  # "allocguard plans …" in prose: the command up to there
        out.append("x" if "…" in part or part == "..." else part)
    return out


def parse(args: list[str]) -> None:
    """Resolve the command path and parse its options as click does — without invoking anything (an unknown
    command or option fails; a missing or placeholder value does not)."""
    if not args:
        return
    ctx = main.make_context("allocguard", list(args))
    command: click.Command = main
    while isinstance(command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            return
        name, sub, rest = command.resolve_command(ctx, rest)
        assert name is not None
        assert sub is not None
        if isinstance(sub, click.Group) and not rest:
            return  # a group named in prose ("allocguard stack")
        try:
            ctx = sub.make_context(name, rest, parent=ctx)
        except (click.MissingParameter, click.BadParameter):
            return  # a placeholder ("x" for <n>) or an argument the prose leaves out: the path and names parsed
        command = sub


DOCUMENTED = commands()


def test_the_docs_show_commands() -> None:
    assert len(DOCUMENTED) > 30
    assert any(c.startswith("allocguard run") for _, c in DOCUMENTED)


def check(where: str, command: str) -> None:
    args = words(command)
    if args[0] == "make":
        for target in [a for a in args[1:] if not a.startswith("-") and "=" not in a]:
            assert target in TARGETS, f"{where}: make {target}: no such target"
        return
    try:
        parse(args[1:])
    except click.exceptions.Exit as done:  # an eager option (--version, --help) ends the parse
        if done.exit_code != 0:
            pytest.fail(f"{where}: {command!r} exits {done.exit_code}")
    except click.ClickException as exc:
        pytest.fail(f"{where}: {command!r} does not parse: {exc.format_message()}")


@pytest.mark.parametrize(
    "command", ["allocguard run --no-such-flag", "allocguard no-such-command", "allocguard plans x", "make no-such"]
)
def test_the_check_refuses_what_does_not_exist(command: str) -> None:
    with pytest.raises((pytest.fail.Exception, AssertionError)):
        check("test", command)


@pytest.mark.parametrize(("where", "command"), DOCUMENTED, ids=[f"{w}: {c[:60]}" for w, c in DOCUMENTED])
def test_a_documented_command_exists(where: str, command: str) -> None:
    check(where, command)
