"""A second, independent stack on other ports: ``up`` twice is safe, ``down`` leaves nothing running."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import pytest

from consumer.local.settings import StackSettings
from consumer.local.stack import LocalStack, _pid_alive, _port_open

pytestmark = [pytest.mark.e2e, pytest.mark.stack]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def test_up_twice_then_down(tmp_path: Path) -> None:
    pg_port, kafka_port, controller_port, connect_port, faults_port, faults_proxy_port = free_ports(6)
    settings = StackSettings(
        stack_dir=tmp_path / "stack",
        pg_port=pg_port,
        kafka_port=kafka_port,
        kafka_controller_port=controller_port,
        connect_port=connect_port,
        kafka_faults_port=faults_port,
        kafka_faults_proxy_port=faults_proxy_port,
        topic_prefix="lifecycle",
        kafka_bootstrap_override=None,
        pg_dsn_override=None,
        connect_url_override=None,
    )
    local = LocalStack(settings, log=lambda line: print(f"[lifecycle] {line}"))
    ports = [pg_port, kafka_port, controller_port, connect_port, faults_port]
    pids: dict[str, int | None] = {}
    try:
        cold = local.up()
        pids = {c.name: c.pid for c in local.status()}
        assert all(c.running for c in local.status()), local.status()
        assert all(pid is not None for pid in pids.values())

        started = time.monotonic()
        warm = local.up()
        warm_seconds = time.monotonic() - started
        assert warm["connector"] < 30, warm
        assert {c.name: c.pid for c in local.status()} == pids, "a second up must reuse the running processes"
        print(f"second stack: first up {cold['total']}s (jars cached), second up {warm_seconds:.2f}s")
    finally:
        stopped = local.down()
    assert sorted(stopped) == ["connect", "kafka", "postgres"]
    for name, pid in pids.items():
        assert pid is not None
        assert not _pid_alive(pid), f"{name} (pid {pid}) still running after down"
    assert not any(_port_open(port) for port in ports)
    assert local.down() == [], "a second down has nothing to stop"
    assert not any(c.running for c in local.status())
    shutil.rmtree(local.pg_root, ignore_errors=True)
