"""Hostile networks between allocguard and Kafka (tests/support/tcpproxy.py through the local broker's FAULTS
listener: every connection the consumer and the DLQ producer open goes through the relay), each while a real
incident is handled by ``allocguard run``; each ends with the orphan archived once, the remediation recorded once
and the victim seated:

- 200 ms added each way to everything allocguard exchanges with the broker;
- every connection to the broker cut while the failure arrives, three times a second apart;
- every established connection stalled (nothing moves either way, the group's heartbeats included) while the
  failure arrives: no verdict during the stall, the victim seated within 10 s of the network healing. 10 s in CI
  (longer than the group's 6 s session: the member is fenced and must come back), 30 s in ``make chaos``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from consumer.local.settings import StackSettings
from tests.chaos.test_network import HEALED_S, STALL_S, handled_once, play
from tests.e2e.test_shutdown import status_of
from tests.support.platform import confirmed
from tests.support.process import RuntimeProcess, wait_for
from tests.support.tcpproxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]


@pytest.fixture
def relay(stack_settings: StackSettings) -> Iterator[TcpProxy]:
    instance = TcpProxy(stack_settings.kafka_faults_proxy_port, stack_settings.kafka_faults_port)
    yield instance
    instance.close()


def through(relay: TcpProxy) -> dict[str, str]:
    return {"ALLOCGUARD_KAFKA_BOOTSTRAP": f"127.0.0.1:{relay.port}"}


def ready(runtime: RuntimeProcess, relay: TcpProxy) -> None:
    runtime.wait_ready()
    assert relay.accepted > 0, "the runtime's Kafka connections come through the relay"


def test_200_ms_each_way_to_the_broker(
    relay: TcpProxy,
    platform_connect: Callable[[], Conn],
    connect: Callable[[], Conn],
    runtimes: Callable[..., RuntimeProcess],
    unique: str,
) -> None:
    runtime = runtimes("run", f"kafka-latency-{unique}", env=through(relay))
    ready(runtime, relay)
    relay.latency_s = 0.2
    started = time.monotonic()
    scenario = play(platform_connect)
    victim = scenario.victim_id
    assert victim is not None
    wait_for("the victim seated over a slow network", lambda: confirmed(connect, victim), timeout=120)
    print(
        f"200 ms each way to Kafka: the victim seated {time.monotonic() - started:.1f}s after the failure was written"
    )
    handled_once(connect, scenario)
    assert "Traceback" not in runtime.log()


def test_every_broker_connection_cut_while_the_failure_arrives(
    relay: TcpProxy,
    platform_connect: Callable[[], Conn],
    connect: Callable[[], Conn],
    runtimes: Callable[..., RuntimeProcess],
    unique: str,
) -> None:
    runtime = runtimes("run", f"kafka-cut-{unique}", env=through(relay))
    ready(runtime, relay)
    scenario = play(platform_connect)
    victim = scenario.victim_id
    assert victim is not None
    cut = 0
    for _ in range(3):
        cut += relay.cut()
        time.sleep(1)  # poll: the cuts are a second apart
    assert cut >= 3, "connections were open and cut"
    wait_for("the victim seated after the cuts", lambda: confirmed(connect, victim), timeout=60)
    handled_once(connect, scenario)
    assert runtime.process.poll() is None
    assert "Traceback" not in runtime.log()


def test_a_stall_of_every_broker_connection(
    relay: TcpProxy,
    platform_connect: Callable[[], Conn],
    connect: Callable[[], Conn],
    runtimes: Callable[..., RuntimeProcess],
    unique: str,
) -> None:
    runtime = runtimes("run", f"kafka-stall-{unique}", env=through(relay))
    ready(runtime, relay)
    relay.stall()
    stalled = time.monotonic()
    try:
        scenario = play(platform_connect)
        victim = scenario.victim_id
        assert victim is not None
        while time.monotonic() - stalled < STALL_S:  # poll: the stall itself lasts this long
            incident, seated = status_of(connect, victim)
            assert incident is None, "no verdict: the failure cannot have been read"
            assert not seated
            time.sleep(1)  # poll: look again while the stall lasts
    finally:
        relay.heal()
    healed = time.monotonic()
    wait_for("the victim seated after the stall", lambda: confirmed(connect, victim), timeout=90, interval=0.05)
    recovered = time.monotonic() - healed
    print(f"every Kafka connection stalled {STALL_S:.0f}s: the victim seated {recovered:.2f}s after the network healed")
    handled_once(connect, scenario)
    assert runtime.process.poll() is None
    log = runtime.log()
    print("\n".join(line for line in log.splitlines() if "WARNING" in line or "ERROR" in line or "booking" in line))
    assert "Traceback" not in log
    assert recovered <= HEALED_S, log[-4000:]
