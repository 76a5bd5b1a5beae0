"""The local stack moves off default ports that another process holds, never off a port the operator chose."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys

from consumer.local.ports import relocations
from consumer.local.settings import StackSettings


def test_a_taken_default_is_moved_to_a_free_port_and_an_explicit_choice_is_kept() -> None:
    kafka_default = StackSettings.model_fields["kafka_port"].default
    pg_default = StackSettings.model_fields["pg_port"].default
    picks = iter([kafka_default, 40001, 40002])  # the first pick collides with a default: skipped

    moved = relocations(
        {"ALLOCGUARD_PG_PORT": "45432"},
        is_free=lambda port: port not in {kafka_default, pg_default},
        pick=lambda: next(picks),
    )

    assert moved == {"ALLOCGUARD_KAFKA_PORT": 40001}


def test_the_module_prints_exports_for_a_port_really_held() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        with contextlib.suppress(OSError):  # already held by someone else: the module must move it all the same
            holder.bind(("127.0.0.1", StackSettings.model_fields["zipkin_port"].default))
        holder.listen()
        env = {"PATH": "/usr/bin:/bin", "ALLOCGUARD_KAFKA_PORT": "1"}
        out = subprocess.run(
            [sys.executable, "-m", "consumer.local.ports"], env=env, capture_output=True, text=True, check=True
        )
    lines = dict(line.removeprefix("export ").split("=") for line in out.stdout.splitlines())
    assert "ALLOCGUARD_KAFKA_PORT" not in lines
    assert int(lines["ALLOCGUARD_ZIPKIN_PORT"]) != StackSettings.model_fields["zipkin_port"].default
    assert "ALLOCGUARD_ZIPKIN_PORT: default port taken" in out.stderr
