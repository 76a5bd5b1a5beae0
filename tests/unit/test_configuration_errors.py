"""``allocguard run``'s configuration errors: one line naming the setting, exit 2, no traceback — found before any
dependency is needed (these runs point at closed ports). And the health server does not print a traceback when a
probe hangs up before its answer."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest

from consumer.config import ConfigurationError, RuntimeSettings
from consumer.runtime.health import Health, serve_health
from tests.support.process import free_port, run_cli

CLOSED = {
    "ALLOCGUARD_KAFKA_BOOTSTRAP": "127.0.0.1:1",
    "ALLOCGUARD_PG_DSN": "postgresql://allocguard_app@127.0.0.1:1/platform",
    "ALLOCGUARD_CONNECT_URL": "http://127.0.0.1:1",
}


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "run", *args, env={**os.environ, **CLOSED, "ALLOCGUARD_HEALTH_PORT": str(free_port()), **(env or {})}
    )


def one_line_exit_2(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in lines if "error" in line.lower()]
    assert len(errors) == 1, lines
    for text in expected:
        assert text in errors[0], errors[0]


def test_an_unknown_librdkafka_property() -> None:
    result = run(env={"ALLOCGUARD_KAFKA_CONFIG": '{"bogus.property": "1"}'})
    one_line_exit_2(result, "ALLOCGUARD_KAFKA_CONFIG", "bogus.property")


def test_a_classic_group_setting_under_the_consumer_protocol_says_how_to_switch() -> None:
    """KIP-848's protocol takes the session timeout from the broker; a classic-only setting says how to keep it."""
    result = run(env={"ALLOCGUARD_KAFKA_CONFIG": '{"session.timeout.ms": "10000"}'})
    one_line_exit_2(result, "session.timeout.ms", '"group.protocol": "classic"')


def test_the_classic_protocol_gets_its_own_settings() -> None:
    from consumer.runtime.clients import group_protocol

    assert group_protocol({}) == {"group.protocol": "consumer"}
    classic = group_protocol({"group.protocol": "classic"})
    assert classic["partition.assignment.strategy"] == "cooperative-sticky"
    assert classic["session.timeout.ms"] == 6000


def test_kafka_config_that_is_not_json_says_where() -> None:
    result = run(env={"ALLOCGUARD_KAFKA_CONFIG": '{"security.protocol": SSL}'})
    one_line_exit_2(result, "ALLOCGUARD_KAFKA_CONFIG is not valid JSON", "char 22")


def test_a_bad_log_level() -> None:
    result = run("--log-level", "LOUD")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--log-level" in result.stderr


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_health_port_in_use(taken_port: int) -> None:
    result = run(env={"ALLOCGUARD_HEALTH_PORT": str(taken_port), "ALLOCGUARD_HEALTH_HOST": "127.0.0.1"})
    one_line_exit_2(result, f"127.0.0.1:{taken_port}", "ALLOCGUARD_HEALTH_PORT")


def test_the_health_server_on_a_port_in_use_is_a_configuration_error(taken_port: int) -> None:
    settings = RuntimeSettings(health_host="127.0.0.1", health_port=taken_port, artifacts_dir=None)
    with pytest.raises(ConfigurationError, match="--health-port"):
        serve_health(settings, Health(), lambda: b"")


def test_a_probe_that_hangs_up_leaves_no_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    settings = RuntimeSettings(health_host="127.0.0.1", health_port=port, artifacts_dir=None)
    body = b"# metrics\n" * 200_000  # larger than the socket buffers: the write meets the closed socket
    server = serve_health(settings, Health(), lambda: body)
    try:
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", port)) as probe:
                probe.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                probe.recv(1)  # the answer has started
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the server is still answering after the hang-ups
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status in (200, 503):
                    break
    finally:
        server.shutdown()
        server.server_close()
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert "BrokenPipeError" not in err
    assert "ConnectionResetError" not in err
